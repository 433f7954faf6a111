"""Responses the HTTP engines write themselves, before any handler runs (JSON under /api)."""
from __future__ import annotations

import html
import json

from tornado import httputil

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
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body
