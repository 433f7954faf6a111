"""BaseHandler, PageHandler and ApiHandler: the one place for errors, JSON and shared state."""
from __future__ import annotations

import http.client
import json
import math
import random
import re
import time
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

import pydantic
import tornado.web
import tornado.websocket
from tornado import httputil

from server import __version__, compat
from server.accesslog import client_address
from server.compat import make_headers, normalized
from server.config import Settings
from server.responses import SECURITY_HEADERS, STRICT_TRANSPORT_SECURITY
from server.rules import whole_number
from server.services import Invalid, NotFound, RateLimited, ServiceError, Services, Unavailable
from server.state import ServerState

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

JSON_TYPES = ("application/json",)
# a number JSON cannot carry (NaN, Infinity, or one a float overflows on: 1e999, 400 digits)
# can only be in a body where one of these occurs; such a body is parsed once more to tell
MAYBE_NOT_FINITE = re.compile(rb"NaN|Infinity|\d[eE]|\d{309}")
# an incoming X-Request-ID is echoed only when it is this tame (it ends up in logs)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# the default headers as HTTPHeaders stores them (names normalised, values checked once here)
_SECURITY_HEADERS = tuple((normalized(name), value) for name, value in SECURITY_HEADERS)
_REQUEST_ID_HEADER = normalized("X-Request-ID")
for _name, _value in (*_SECURITY_HEADERS, ("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY)):
    compat.check_header_value(_value)  # raises on a bad value


def request_id(given: str | None) -> str:
    """The id of a request: the client's X-Request-ID when it is tame, a fresh one otherwise."""
    if given and REQUEST_ID.fullmatch(given):
        return given
    # 64 random bits from Python's generator (reseeded in forked workers): an id needs to be
    # unique, not secret, and os.urandom costs a system call per request
    return f"{random.getrandbits(64):016x}"


class PublicError(tornado.web.HTTPError):
    """An HTTP error whose message is safe to show the client (and names the field at fault)."""

    def __init__(self, status_code: int, message: str, field: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status_code, "%s", message)
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


# what each error a service raises means to a client: the one place a service's error becomes
# an HTTP status, for every handler (API or page); a class's nearest listed base decides
SERVICE_ERROR_STATUS: dict[type[ServiceError], int] = {
    Invalid: 422,      # the input breaks a rule; the field at fault is named
    NotFound: 404,
    RateLimited: 429,  # with Retry-After
    Unavailable: 503,  # with Retry-After
}


def service_status(exc: ServiceError) -> int | None:
    """The status SERVICE_ERROR_STATUS gives an error (None when no class of it is listed)."""
    return next((SERVICE_ERROR_STATUS[cls] for cls in type(exc).__mro__
                 if cls in SERVICE_ERROR_STATUS), None)


def public_error(exc: ServiceError, message: str | None = None) -> PublicError:
    """The HTTP error a service's error is to a client: status from SERVICE_ERROR_STATUS,
    the service's message (or the page's own words), its field and Retry-After.

    An error whose class is not in the table is a server fault: a 500 with no detail.
    """
    status = service_status(exc)
    if status is None:
        return PublicError(500, http.client.responses[500])
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return PublicError(status, exc.message if message is None else message, field=exc.field,
                       headers=headers)


def client_message(status_code: int, exc: BaseException | None) -> str:
    """The message a client may see for an error: never exception text of a server fault."""
    if isinstance(exc, PublicError):
        return exc.message
    if isinstance(exc, tornado.web.HTTPError) and status_code < 500:
        # Tornado's own 4xx messages ("Missing argument x", "'_xsrf' argument missing") are for clients
        message = exc.get_message()
        if message:
            return message
    return http.client.responses.get(status_code, "Unknown error")


class BaseHandler(tornado.web.RequestHandler):
    """Typed access to the server's settings, services and state; common headers, request id."""

    route_name = ""  # the name of the route that matched (metrics label); make_app passes it
    bytes_sent = 0   # body bytes written, for the access log

    def __init__(self, application: tornado.web.Application, request: httputil.HTTPServerRequest,
                 route_name: str | None = None, **kwargs: Any) -> None:
        if route_name:
            self.route_name = route_name
        trusted = application.settings["trusted_networks"]
        peer = request.remote_ip
        if trusted and peer is not None:  # no peer address (None): nothing to judge, kept as it is
            request.remote_ip = client_address(peer, request.headers, trusted)
            proto = request.headers.get("X-Forwarded-Proto", "").lower()
            if proto in ("http", "https") and request.remote_ip != peer:
                request.protocol = proto
        self.request_id = request_id(request.headers.get("X-Request-ID"))
        super().__init__(application, request, **kwargs)

    @property
    def config(self) -> Settings:
        """The validated server settings."""
        config: Settings = self.application.settings["config"]
        return config

    @property
    def services(self) -> Services:
        """The opened services (greeting, compute, outbound, ...)."""
        services: Services = self.application.settings["services"]
        return services

    @property
    def server_state(self) -> ServerState:
        """Mutable runtime state of this server process (draining, requests in flight)."""
        state: ServerState = self.application.settings["state"]
        return state

    def query_value(self, name: str) -> str | None:
        """The one value of query parameter ``name`` exactly as sent (percent-decoded), or None.

        Tornado's ``get_query_argument`` strips whitespace, turns control characters into
        spaces and takes the last of repeated values, so ``?ms=%0050`` and ``?limit=1&limit=99``
        would pass as something the client did not send. Here a repeated parameter is a 422,
        and the text is given to the caller's validation unchanged.
        """
        values = self.request.query_arguments.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise PublicError(422, f"{name}: give it once (it was given {len(values)} times)",
                              field=name)
        return self.decode_argument(values[0], name=name)

    def query_number(self, name: str) -> int | str | None:
        """Query parameter ``name`` as an int when it is a whole number, else its text; None if absent.

        A whole number is what server/rules.py's whole_number takes; other text is returned as
        sent, for the caller to refuse in its own words. Present but empty (``?before=``) is text.
        """
        raw = self.query_value(name)
        if raw is None:
            return None
        number = whole_number(raw)
        return raw if number is None else number

    def clear(self) -> None:
        """Reset the response (what RequestHandler.clear does), on the per-request hot path.

        Tornado's clear() validates every default header on each request; here the default
        headers (the constant ones checked once at import) go straight into the HTTPHeaders' own
        dict, before the set_default_headers() hook runs. The Date is Tornado's, which both
        engines format once a second (compat.cache_date_formatting). No Server header: a
        version only helps someone matching it against advisories.
        """
        as_list = {"Content-Type": ["text/html; charset=UTF-8"],
                   "Date": [httputil.format_timestamp(time.time())]}
        for name, value in _SECURITY_HEADERS:
            as_list[name] = [value]
        if self.request.protocol == "https":
            as_list["Strict-Transport-Security"] = [STRICT_TRANSPORT_SECURITY]
        as_list[_REQUEST_ID_HEADER] = [self.request_id]  # validated: REQUEST_ID or hex
        compat.reset_response(self, make_headers(as_list))  # runs set_default_headers()

    def finish(self, chunk: Any = None) -> Any:
        if self.server_state.draining and not compat.headers_written(self):
            # this process is going away: the client should not reuse the connection
            self.set_header("Connection", "close")
        return super().finish(chunk)

    def flush(self, include_footers: bool = False) -> Any:
        if self.request.method != "HEAD":
            self.bytes_sent += compat.buffered_body_bytes(self)
        return super().flush(include_footers)

    def prepare(self) -> None:
        if self.server_state.draining:
            # tell keep-alive clients to reconnect elsewhere: this process is going away
            self.set_header("Connection", "close")

    def log_exception(self, typ: type[BaseException] | None, value: BaseException | None,
                      tb: TracebackType | None) -> None:
        # a service's error is logged as the HTTP error it becomes (one line, no traceback)
        if isinstance(value, ServiceError) and service_status(value) is not None:
            value = public_error(value)
            typ = type(value)
        super().log_exception(typ, value, tb)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        # a service's error that escaped the handler gets its status from SERVICE_ERROR_STATUS,
        # and write_error sees the PublicError it becomes: handlers just call the service
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], ServiceError) and service_status(exc_info[1]):
            error = public_error(exc_info[1])
            kwargs["exc_info"] = (type(error), error, exc_info[2])
            status_code = error.status_code
        super().send_error(status_code, **kwargs)

    def check_xsrf_cookie(self) -> None:
        # a method the handler does not implement is a 405, whatever the cookie says
        if self.request.method.lower() in (m.lower() for m in self.allowed_methods()):
            super().check_xsrf_cookie()

    def allowed_methods(self) -> list[str]:
        """The HTTP methods this handler class implements."""
        return [m for m in self.SUPPORTED_METHODS
                if getattr(type(self), m.lower()) is not getattr(tornado.web.RequestHandler, m.lower())]


class PageHandler(BaseHandler):
    """A handler that renders HTML pages; errors become a styled page."""

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace["version"] = __version__
        namespace["tornado_version"] = tornado.version
        namespace["files_enabled"] = self.config.files is not None
        return namespace

    def set_error_status(self, exc: ServiceError) -> None:
        """Status and Retry-After for a service's error (SERVICE_ERROR_STATUS), for a page that
        shows the problem in its own form rather than on the error page."""
        error = public_error(exc)
        self.set_status(error.status_code)
        for name, value in error.headers.items():
            self.set_header(name, value)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, PublicError):
            for name, value in exc.headers.items():
                self.set_header(name, value)
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        details = None
        if self.settings.get("serve_traceback") and exc_info:
            details = "".join(traceback.format_exception(*exc_info))
        self.render("error.html", status_code=status_code,
                    reason=http.client.responses.get(status_code, "Error"),
                    message=client_message(status_code, exc), details=details)


class ApiHandler(BaseHandler):
    """A JSON API handler: JSON bodies in, JSON out, JSON errors, a cap on requests in flight."""

    _holds_slot = False

    def check_xsrf_cookie(self) -> None:
        # API bodies must be application/json, which a cross-site HTML form cannot send
        return None

    def prepare(self) -> None:
        super().prepare()
        state = self.server_state
        if state.api_in_flight >= self.config.max_concurrency:
            raise PublicError(503, f"server busy: {state.api_in_flight} API requests in flight; "
                           "retry shortly", headers={"Retry-After": "1"})
        state.api_in_flight += 1
        self._holds_slot = True

    def on_finish(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self.server_state.api_in_flight -= 1

    def write_json(self, document: Any, status: int = 200) -> None:
        """Finish with any JSON document (lists and scalars included, unlike write())."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        try:
            body = text.encode()
        except UnicodeEncodeError:  # a lone surrogate from the client ("\ud800"): keep it escaped
            body = json.dumps(document, separators=(",", ":")).encode()
        self.finish(body)

    def write_model(self, model: pydantic.BaseModel, status: int = 200) -> None:
        """Finish with a response model serialised as JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(model.__pydantic_serializer__.to_json(model))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        error: dict[str, Any] = {"status": status_code, "message": client_message(status_code, exc)}
        if isinstance(exc, PublicError):
            for name, value in exc.headers.items():
                self.set_header(name, value)
            if exc.field:
                error["field"] = exc.field
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        self.write_json({"error": error}, status_code)

    def require_json_body(self) -> bytes:
        """The raw body, after checking it is declared as JSON (415 otherwise)."""
        content_type = self.request.headers.get("Content-Type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type not in JSON_TYPES and not media_type.endswith("+json"):
            raise PublicError(415, "send the body as JSON with 'Content-Type: application/json'")
        return self.request.body

    def json_body(self) -> Any:
        """The body parsed as any JSON document (400 when it is not valid JSON)."""
        body = self.require_json_body()
        try:
            return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
        except (ValueError, RecursionError) as exc:
            raise PublicError(400, f"malformed JSON: {_json_problem(exc)}") from None

    def parse_model(self, model: type[ModelT]) -> ModelT:
        """The body validated against a request model: 400 for bad JSON, 422 naming the field."""
        body = self.require_json_body()
        if MAYBE_NOT_FINITE.search(body):
            refuse_not_finite(body)
        try:
            return model.model_validate_json(body)
        except pydantic.ValidationError as exc:
            raise validation_error(exc) from None


def validation_error(exc: pydantic.ValidationError) -> PublicError:
    """Map the first problem pydantic found to a 400 (not JSON) or a 422 (wrong field)."""
    first = exc.errors(include_url=False, include_context=False)[0]
    if first["type"] == "json_invalid":
        return PublicError(400, f"malformed JSON: {first['msg'].removeprefix('Invalid JSON: ')}")
    field = ".".join(str(part) for part in first["loc"])
    if not field:
        return PublicError(422, "the body must be a JSON object", field="body")
    message = first["msg"]
    if first["type"] == "missing":
        message = "required"
    elif first["type"] == "extra_forbidden":
        message = "unknown field"
    return PublicError(422, f"{field}: {message}", field=field)


class NotFinite(ValueError):
    """A JSON number that is NaN, Infinity or too large for a float (JSON has no such value)."""


def _refuse_constant(name: str) -> Any:
    raise NotFinite(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 40 else text[:20] + "…"
        raise NotFinite(f"the number {shown} is out of range (larger than a float can hold)")
    return value


def refuse_not_finite(body: bytes) -> None:
    """400 when a JSON body holds NaN, Infinity or a number that overflows (pydantic takes them)."""
    try:
        json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float,
                   parse_int=len)  # integers are the model's business (and may be long)
    except NotFinite as exc:
        raise PublicError(400, f"malformed JSON: {exc}") from None
    except (ValueError, RecursionError):
        pass  # any other problem is reported by the model's own parser


def _json_problem(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


class WebSocketHandler(tornado.websocket.WebSocketHandler, BaseHandler):
    """A WebSocket of this server: a client's message is never buffered beyond a named limit."""

    @property
    def max_message_size(self) -> int:
        """--live-max-message-size: a bigger message closes the connection with 1009."""
        return self.config.live_max_message_size
