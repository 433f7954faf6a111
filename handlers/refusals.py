"""How this project's application answers the requests the HTTP server refuses itself.

The engines describe a refused request (malformed, too large, too slow) as a Refusal; this renders
it the way the application renders its own errors: JSON under /api, a page elsewhere, the security
headers and an X-Request-ID on every response.
"""
from __future__ import annotations

import json

from server.refusals import Refusal, Rendered, html_page
from server.responses import SECURITY_HEADERS

from .base import request_id


def is_api(path: str) -> bool:
    """True for the JSON API's URL space."""
    return path.startswith("/api/") or path == "/api"


def render(refusal: Refusal) -> Rendered:
    """The response to a refused request, as ApiHandler / PageHandler would answer it."""
    refusal.request_id = request_id(refusal.header("X-Request-ID"))
    extra = [*SECURITY_HEADERS, ("X-Request-ID", refusal.request_id)]
    if is_api(refusal.path):
        body = json.dumps({"error": {"status": refusal.status, "message": refusal.detail}}).encode()
        return "application/json; charset=UTF-8", body, extra
    content_type, body, _ = html_page(refusal)
    return content_type, body, extra
