"""make_app: the single place that assembles routes, templates, static files and settings."""
from __future__ import annotations

import secrets

import tornado.web

from handlers import api, files, guestbook, health, pages
from handlers.pages import PageNotFoundHandler, StaticHandler

from . import STATIC_PATH, TEMPLATE_PATH
from .config import Settings
from .services import Services
from .state import ServerState


def make_app(settings: Settings, services: Services, state: ServerState) -> tornado.web.Application:
    """Build the Tornado Application for these settings, opened services and runtime state."""
    routes = [*pages.default_handlers, *health.default_handlers, *api.default_handlers,
              *guestbook.default_handlers]
    if settings.files is not None:
        routes += files.default_handlers(str(settings.files))
    routes += api.not_found_handlers
    return tornado.web.Application(
        routes,
        default_handler_class=PageNotFoundHandler,
        template_path=str(TEMPLATE_PATH),
        static_path=str(STATIC_PATH),
        static_handler_class=StaticHandler,
        xsrf_cookies=True,
        cookie_secret=settings.cookie_secret or secrets.token_urlsafe(32),
        # debug's autoreload would re-exec the process behind the launcher's back: take its parts
        serve_traceback=settings.debug,
        compiled_template_cache=not settings.debug,
        static_hash_cache=not settings.debug,
        websocket_ping_interval=25,
        websocket_ping_timeout=30,
        config=settings,
        services=services,
        state=state,
    )
