"""make_app: the single place that assembles routes, templates, static files and settings."""
from __future__ import annotations

import ipaddress

from handlers import api, files, guestbook, health, observe, openapi, pages
from handlers.base import BaseHandler
from handlers.pages import PageNotFoundHandler, StaticHandler

from . import STATIC_PATH, TEMPLATE_PATH
from .accesslog import RequestObserver
from .config import Settings
from .metrics import Metrics
from .routing import Application
from .services import Services
from .state import ServerState


def make_app(settings: Settings, services: Services, state: ServerState,
             metrics: Metrics | None = None, cluster: object | None = None) -> Application:
    """Build the Tornado Application for these settings, opened services and runtime state."""
    metrics = metrics or Metrics(enabled=settings.metrics)
    routes = [*pages.default_handlers, *health.default_handlers, *api.default_handlers,
              *guestbook.default_handlers, *observe.default_handlers, *openapi.default_handlers]
    if settings.files is not None:
        routes += files.default_handlers(str(settings.files))
    routes += api.not_found_handlers
    for spec in routes:
        # the route's name travels to the handler, which labels its metrics with it
        if spec.name and issubclass(spec.handler_class, BaseHandler):
            spec.target_kwargs = spec.kwargs = {**(spec.target_kwargs or {}), "route_name": spec.name}
    return Application(
        routes,
        default_handler_class=PageNotFoundHandler,
        template_path=str(TEMPLATE_PATH),
        static_path=str(STATIC_PATH),
        static_handler_class=StaticHandler,
        xsrf_cookies=True,
        cookie_secret=services.cookie_secret,
        # debug's autoreload would re-exec the process behind the launcher's back: take its parts
        serve_traceback=settings.debug,
        compiled_template_cache=not settings.debug,
        static_hash_cache=not settings.debug,
        websocket_ping_interval=25,
        websocket_ping_timeout=30,
        log_function=RequestObserver(metrics, settings.access_log, settings.access_log_flush),
        trusted_networks=tuple(ipaddress.ip_network(n) for n in settings.trusted_proxies),
        config=settings,
        services=services,
        state=state,
        metrics=metrics,
        cluster=cluster,  # a ClusterView under --processes N: /metrics and /api/stats of all workers
    )
