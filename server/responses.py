"""The security headers every response of this project's application carries (its refusals too)."""
from __future__ import annotations

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
