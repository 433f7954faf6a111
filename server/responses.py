"""Responses the HTTP engines write themselves, before any handler runs (JSON under /api)."""
from __future__ import annotations

import html
import json

from tornado import httputil

# Every response carries these, the engines' own answers included (handlers/base.py adds them to
# the application's). The pages load only their own scripts, styles and images; 'self' in
# connect-src covers the same-origin WebSocket (ws/wss) and the event stream.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; connect-src 'self'; font-src 'self'; "
                           "object-src 'none'; base-uri 'self'; form-action 'self'; "
                           "frame-ancestors 'none'")
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("X-Frame-Options", "DENY"),
)
# sent only on responses that arrive over TLS: a browser then refuses plain HTTP for a year
STRICT_TRANSPORT_SECURITY = "max-age=31536000"
_SECURITY_LINES = "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS)

REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Payload Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error"}


def too_large_message(length: int, limit: int) -> str:
    """Why a request body announced in the head is refused."""
    return f"request body of {length} bytes is larger than the limit of {limit} bytes"


def error_response(status: int, detail: str, path: str = "", reason: str | None = None) -> bytes:
    """A complete closing response for a request the server refuses itself (JSON under /api)."""
    reason = reason or REASONS.get(status) or httputil.responses.get(status, "Error")
    if path.startswith("/api/") or path == "/api":
        body = json.dumps({"error": {"status": status, "message": detail}}).encode()
        content_type = "application/json; charset=UTF-8"
    else:
        body = (f"<!doctype html><title>{status} {reason}</title><h1>{status} {reason}</h1>"
                f"<p>{html.escape(detail)}</p>").encode()
        content_type = "text/html; charset=UTF-8"
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{_SECURITY_LINES}Connection: close\r\n\r\n").encode()
    return head + body
