"""HTTP/1.1 message rules both engines apply, written once (the fast engine's parser and the
Tornado engine's delegate call the same functions).

Each function names the RFC section it follows; each raises ``Violation`` (status and message) or
returns the answer, and knows nothing of either engine.
"""
from __future__ import annotations


class Violation(Exception):
    """A request that breaks a rule: refused with this status and message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def is_digits(text: str) -> bool:
    """True for a non-empty run of ASCII digits (int() also takes "+1", "1_0", "²" and "٣")."""
    return text.isascii() and text.isdigit()


MAX_WHOLE_NUMBER_DIGITS = 18  # every such number fits a signed 64-bit column (an id, a count)
MAX_WHOLE_NUMBER = 10 ** MAX_WHOLE_NUMBER_DIGITS - 1  # the largest one (what the API documents)


def whole_number(text: str) -> int | None:
    """The value of a request parameter written in ASCII digits, or None for anything else.

    The one parser of integer parameters (query and path): str.isdigit() also takes "²" (which
    int() then refuses: a 500) and "٣" or "５" (which int() takes), int() takes "+1", " 1" and
    "1_0"; none of them is a number in a URL. At most 18 digits, so the value fits a 64-bit column.
    """
    if len(text) > MAX_WHOLE_NUMBER_DIGITS or not is_digits(text):
        return None
    return int(text)


def request_content_length(values: list[str]) -> int | None:
    """The body length a request's Content-Length field(s) give (RFC 9112 6.3).

    One value of ASCII digits; a list, even of equal values ("5, 5"), is refused as nginx refuses
    it (RFC 9110 8.6 lets a recipient refuse or merge it; refusing leaves no room for a proxy in
    front to frame the message differently).
    """
    if not values:
        return None
    if len(values) > 1 or "," in values[0]:
        shown = ",".join(values)
        pieces = [piece.strip(" \t") for piece in shown.split(",")]
        if any(piece != pieces[0] for piece in pieces):
            raise Violation(400, f"Multiple unequal Content-Lengths: {shown!r}")
        raise Violation(400, f"Multiple Content-Lengths are refused: {shown!r}")
    if not is_digits(values[0]):
        raise Violation(400, f"Only integer Content-Length is allowed: {values[0]}")
    return int(values[0])


def request_transfer_encoding(values: list[str], version: str, has_length: bool) -> bool:
    """True for a chunked request body; Violation for any other Transfer-Encoding (RFC 9112 6.1).

    As strict as Tornado: exactly "chunked" (anything else could frame differently in a proxy in
    front: request smuggling), never with Content-Length, never in an HTTP/1.0 request.
    """
    if not values:
        return False
    if has_length:
        raise Violation(400, "Message with both Transfer-Encoding and Content-Length")
    if len(values) != 1 or values[0].strip().lower() != "chunked":
        raise Violation(400, f"Unsupported Transfer-Encoding {','.join(values)}")
    if version != "HTTP/1.1":
        raise Violation(400, "Transfer-Encoding in an HTTP/1.0 request")
    return True


def origin_form(target: str, headers: dict[str, list[str]]) -> str:
    """An absolute-form target (http://host/path?q) as origin-form; its authority becomes Host.

    RFC 9112 3.2.2: a server must accept the absolute form, and the target's authority replaces
    any Host header (``headers`` is {name: [values]} and is changed). Userinfo in the authority
    is refused (RFC 9110 4.2.4).
    """
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise Violation(400, "Malformed HTTP request line")
    end = len(rest)
    for delimiter in "/?":
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    authority, path = rest[:end], rest[end:]
    if not authority or "@" in authority:
        raise Violation(400, "Invalid Host in the request target")
    headers["Host"] = [authority]
    return path if path.startswith("/") else "/" + path


def response_framing_problem(headers: dict[str, list[str]]) -> str | None:
    """Why a response's Content-Length / Transfer-Encoding cannot be sent (None: they can).

    As strict as for requests: one Content-Length of ASCII digits (not "+10", "1_0" or "²",
    which int() would take), not both headers, and no transfer coding but chunked (which the
    server applies itself).
    """
    length = headers.get("Content-Length")
    encoding = headers.get("Transfer-Encoding")
    if length is not None:
        if encoding is not None:
            return "a response with both Content-Length and Transfer-Encoding"
        if len(length) != 1 or not is_digits(length[0]):
            return f"Only integer Content-Length is allowed in a response: {','.join(length)!r}"
    elif encoding is not None and [e.strip().lower() for e in encoding] != ["chunked"]:
        return f"Unsupported Transfer-Encoding in a response: {','.join(encoding)!r}"
    return None


def head_too_large(limit: int) -> Violation:
    """431 for a request head over max_header_size (both engines)."""
    return Violation(431, f"request head larger than {limit} bytes")


def too_large(length: int, limit: int) -> Violation:
    """413 for a Content-Length over the body limit (Tornado's words first, then the numbers)."""
    return Violation(413, f"Content-Length too long: a body of {length} bytes is larger than the "
                          f"limit of {limit} bytes")


def http_version(version: str) -> str:
    """The start line's version for "major.minor": 1.0, or 1.1 for any 1.x (RFC 9112 2.3).

    Any other version is a malformed HTTP/1.x request line here (400, as Tornado answers it;
    an HTTP/2 client would not speak this way to an HTTP/1.1 port).
    """
    if version == "1.0":
        return "HTTP/1.0"
    major, _, minor = version.partition(".")
    if major == "1" and is_digits(minor):
        return "HTTP/1.1"
    raise Violation(400, f"Malformed HTTP request line: HTTP/{version} is not spoken here "
                         "(HTTP/1.0 and 1.1 are)")
