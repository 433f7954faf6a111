"""HTML pages: home, the greeting page, styled errors, and static files with error pages."""
from __future__ import annotations

from typing import Any

import tornado.web
from tornado.web import url

from server.services import Invalid

from .base import PageHandler


class HomeHandler(PageHandler):
    """GET /: what the server is, a greeting form, links to the API and pages."""

    async def get(self) -> None:
        self.render("home.html", error=None, name_value="")


class HelloPageHandler(PageHandler):
    """GET /hello?name=… and /hello/<name>: 'Hello, <name>', HTML-escaped by the template."""

    async def get(self, name: str | None = None) -> None:
        if name is None:
            name = self.query_value("name") or ""
        try:
            greeting = self.services.greeting.clean_name(name)
        except Invalid as exc:
            self.set_error_status(exc)
            self.render("home.html", error=exc.message, name_value=name)
            return
        self.render("hello.html", name=greeting)


class PageNotFoundHandler(PageHandler):
    """Every path no route matched: a styled 404 page (HTML for browsers)."""

    SUPPORTED_METHODS = PageHandler.SUPPORTED_METHODS
    route_name = "not-found"

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404, "There is no page at %s", self.request.path)

    def check_xsrf_cookie(self) -> None:
        # a POST to an unknown path is a 404, not an XSRF complaint
        return None


class StaticHandler(tornado.web.StaticFileHandler, PageHandler):
    """Static assets (versioned by static_url, cached for a year) with styled error pages."""

    route_name = "static"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        PageHandler.write_error(self, status_code, **kwargs)

    def parse_url_path(self, url_path: str) -> str:
        if "\x00" in url_path:
            # a NUL byte (%00) made the file system calls raise ValueError: a 500 instead of a 404
            raise tornado.web.HTTPError(404, "No such file")
        return super().parse_url_path(url_path)

    def compute_etag(self) -> str | None:
        if getattr(self, "absolute_path", None) is None:
            # a rendered page (listing, error) rather than a file: hash the body
            return tornado.web.RequestHandler.compute_etag(self)
        return super().compute_etag()


default_handlers = [
    url(r"/", HomeHandler, name="home"),
    url(r"/hello", HelloPageHandler, name="hello"),
    url(r"/hello/([^/]+)", HelloPageHandler, name="hello-name"),
]
