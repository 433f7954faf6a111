"""Requests an HTTP server answers itself: what was refused, the response it gets, who hears of it.

Both engines refuse some requests before (or instead of) the application: a malformed head, a
body over the limit, a body that does not arrive in time. The engine describes each one as a
``Refusal``; a ``RefusalHandler`` turns it into a complete closing response and may record it (the
access log, metrics). The engine knows nothing of the application's URL space or log format: the
launcher supplies a handler that does (JSON under /api for this project's application).
"""
from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import responses  # the reason phrases Tornado uses
from typing import Any

from tornado import httputil

REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Payload Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           505: "HTTP Version Not Supported"}


@dataclass(slots=True)
class Refusal:
    """A request the server answered itself, and why; fields it could not read are "-"."""

    status: int
    detail: str
    method: str = "-"
    target: str = "-"
    version: str = "HTTP/1.1"
    headers: httputil.HTTPHeaders | None = None
    remote_ip: str = "-"
    started: float = field(default_factory=time.time)
    request_id: str = "-"  # set by a renderer that gives responses ids

    @property
    def reason(self) -> str:
        """The reason phrase of the status."""
        return REASONS.get(self.status) or responses.get(self.status, "Error")

    @property
    def path(self) -> str:
        """The target without its query ("" when unknown)."""
        return "" if self.target == "-" else self.target.partition("?")[0]

    def header(self, name: str) -> str | None:
        """A request header's value, None when absent or when the head was not readable."""
        return None if self.headers is None else self.headers.get(name)


# (content type, body, extra header lines) of a refusal's response
Rendered = tuple[str, bytes, list[tuple[str, str]]]


def html_page(refusal: Refusal) -> Rendered:
    """A small HTML page naming the status and the reason (the default for any application)."""
    title = f"{refusal.status} {refusal.reason}"
    body = (f"<!doctype html><title>{title}</title><h1>{title}</h1>"
            f"<p>{html.escape(refusal.detail)}</p>").encode()
    return "text/html; charset=UTF-8", body, []


class RefusalHandler:
    """Renders a refusal as a complete ``Connection: close`` response and records it.

    ``render(refusal)`` gives the content type, body and extra headers (default: ``html_page``);
    ``record(refusal, body_bytes)`` is told of every refusal after it is rendered (default:
    nothing), so refused requests can reach the access log like any other response.
    """

    def __init__(self, render: Callable[[Refusal], Rendered] | None = None,
                 record: Callable[[Refusal, int], Any] | None = None) -> None:
        self.render = render or html_page
        self.record = record

    def respond(self, refusal: Refusal) -> bytes:
        """The whole response (status line, headers, body) for this refusal."""
        content_type, body, extra = self.render(refusal)
        lines = [f"HTTP/1.1 {refusal.status} {refusal.reason}\r\n",
                 f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n",
                 f"Date: {httputil.format_timestamp(refusal.started)}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in extra]
        lines.append("Connection: close\r\n\r\n")
        if self.record is not None:
            self.record(refusal, len(body))
        return "".join(lines).encode("latin-1") + body
