"""What the server needs from library internals, in one place, each use explained and tested.

Public APIs are used everywhere else; what is here has no public equivalent in the versions
setup.cfg allows (Tornado 6.5.7 to 6.6.x), and each function says why it needs it.
tests/test_compat.py exercises every one, and runs itself again on the lowest Tornado that
setup.cfg allows. What a timeout or a limit depends on is checked when this module is imported:
a Tornado that moved it fails loudly here instead of silently switching the timeout off.
"""
from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import tornado.web
from tornado import httputil, iostream
from tornado.concurrent import Future
from tornado.http1connection import HTTP1Connection
from tornado.httpserver import HTTPServer

from . import rules


def _require(function: Any, *attributes: str) -> None:
    """Fail at import unless ``function`` (a Tornado __init__) still sets these attributes."""
    missing = [name for name in attributes if name not in function.__code__.co_names]
    if missing:
        raise ImportError(f"Tornado {tornado.version} no longer sets {', '.join(missing)} in "
                          f"{function.__qualname__}: server.compat needs updating (the tornado "
                          f"engine's header and send timeouts and connection count read them)")


_require(iostream.BaseIOStream.__init__, "_read_buffer_size", "_total_write_done_index")
_require(HTTPServer.initialize, "_connections")
_require(tornado.web.RequestHandler.clear, "_headers", "_write_buffer", "_status_code",
         "_reason")
_require(HTTP1Connection.__init__, "_max_body_size", "_disconnect_on_finish",
         "_response_start_line")


# --- the tornado engine (server/httpserver.py): Tornado's HTTPServer and IOStream ---

def open_connections(server: HTTPServer) -> Any:
    """The HTTP1ServerConnections an HTTPServer is serving (Tornado keeps them in a set).

    The tornado engine counts them for --max-connections and sweeps them for its timeouts;
    HTTPServer has no public accessor.
    """
    return server._connections


def buffered_read_bytes(stream: iostream.BaseIOStream) -> int:
    """Bytes the IOStream has read from the socket and not yet given out.

    The tornado engine's header timeout starts when the first byte of a head arrives: that is
    when this becomes non-zero on an idle keep-alive connection.
    """
    return stream._read_buffer_size


def bytes_written(stream: iostream.BaseIOStream) -> int:
    """Bytes the IOStream has handed to the kernel so far (its send timeout watches progress)."""
    return stream._total_write_done_index


def release_transport(transport: Any) -> None:
    """Break the reference cycle a closed asyncio selector transport keeps (CPython < 3.12).

    ``_SelectorSocketTransport`` keeps its own bound ``_read_ready__data_received`` method as
    ``_read_ready_cb``, a cycle that only the garbage collector frees: one per closed connection
    (Tornado's circlerefs_test flags it). CPython 3.12 drops it in close() (gh-100348); this does
    the same once the transport has reported connection_lost. uvloop's transports have no cycle.
    """
    if getattr(transport, "_read_ready_cb", None) is not None:
        transport._read_ready_cb = None


def close_after_response(request_conn: HTTP1Connection) -> None:
    """Make Tornado close this request's connection after its response, which says so.

    Used while draining. Tornado decides per request whether the connection closes after the
    response (and then sends ``Connection: close``) in ``_disconnect_on_finish``, and keeps the
    response's start line once its head is written; neither has a public accessor. Only for a
    response not begun: one whose head went out promised keep-alive.
    """
    if request_conn._response_start_line is None:
        request_conn._disconnect_on_finish = True


def http1_max_body_size(connection: HTTP1Connection) -> int:
    """The body limit of a request on Tornado's HTTP1Connection (its set_max_body_size included).

    Tornado keeps it in ``_max_body_size`` and offers no getter; the tornado engine needs it to
    answer 413 from the head only when a handler's prepare() did not raise the limit.
    """
    return connection._max_body_size


# what Tornado's HTTP1Connection writes for a request it finds malformed (_read_message), and all
# it writes: no Content-Type, no body, nothing for a log to see
TORNADO_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\n"


def answer_bad_requests(stream: Any, answer: Callable[[Any, int], bytes],
                        classes: dict[type, type]) -> None:
    """Make Tornado's own refusals on this IOStream ``answer(stream, status)`` instead.

    The tornado engine's own refusals go through its RefusalHandler; the requests Tornado's
    HTTP1Connection refuses itself are only visible as a bare 400 (a malformed request line or
    header, a bad Host) or as a silent close (a head over max_header_size: the IOStream's
    UnsatisfiableReadError on the head's regex). Both become rendered, recorded responses (400,
    431). The stream's class becomes a subclass doing that (one per IOStream class, kept in the
    caller's ``classes``): no per-connection memory, one bytes comparison per write.
    """
    base = type(stream)
    cls = classes.get(base)
    if cls is None:
        def write(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
            if data == TORNADO_BAD_REQUEST:
                data = answer(self, 400)
            return base.write(self, data, *args, **kwargs)

        def close(self: Any, exc_info: Any = False) -> None:
            error = sys.exc_info()[1] if exc_info is True else exc_info
            if (isinstance(error, iostream.UnsatisfiableReadError) and not self.closed()
                    and self._read_regex is not None and not self.writing()):
                # the head (read by regex; a chunk-size line is read by delimiter) is too large
                try:
                    self.socket.send(answer(self, 431))  # small, and nothing else is queued
                except OSError:
                    pass
            base.close(self, exc_info)
        cls = classes[base] = type(base.__name__, (base,), {"write": write, "close": close})
    stream.__class__ = cls


class _FramedHTTP1Connection(HTTP1Connection):
    """Tornado's HTTP1Connection refusing a response that rules.response_framing_problem rejects."""

    def write_headers(self, start_line: Any, headers: Any, chunk: Any = None) -> Any:
        if "Content-Length" in headers or "Transfer-Encoding" in headers:
            reason = rules.response_framing_problem(
                {name: headers.get_list(name) for name in ("Content-Length", "Transfer-Encoding")
                 if name in headers})
            if reason:
                self.stream.close()
                raise httputil.HTTPOutputError(reason)
        return super().write_headers(start_line, headers, chunk)


def validate_response_framing(request_conn: Any) -> None:
    """Make this HTTP1Connection refuse a response with framing headers the rules reject.

    Tornado's write_headers checks Content-Length (since 6.5) but sends Content-Length together
    with Transfer-Encoding (RFC 9112 6.2: a sender MUST NOT). The refused response is not sent;
    the connection closes, as on the fast engine. Tornado makes an HTTP1Connection per request;
    its class becomes the subclass with the check (nothing allocated per request).
    """
    if type(request_conn) is HTTP1Connection:
        request_conn.__class__ = _FramedHTTP1Connection


# --- RequestHandler: the per-request reset BaseHandler.clear() does faster ---

def check_header_value(value: str) -> None:
    """Raise ValueError for a header value RequestHandler.set_header would refuse (once, at import)."""
    tornado.web.RequestHandler._convert_header_value(None, value)  # type: ignore[arg-type]


def reset_response(handler: tornado.web.RequestHandler, headers: httputil.HTTPHeaders) -> None:
    """What RequestHandler.clear() does, with these default headers: they become the response's,
    the set_default_headers() hook runs, then the body is emptied and the status is 200 OK, in
    Tornado's order. BaseHandler.clear() builds its headers from values checked once (Tornado's
    formats the date and validates each default header on every request)."""
    handler._headers = headers
    handler.set_default_headers()
    handler._write_buffer = []
    handler._status_code = 200
    handler._reason = "OK"


def headers_written(handler: tornado.web.RequestHandler) -> bool:
    """Whether the response's status line and headers have been flushed already."""
    return handler._headers_written


def buffered_body_bytes(handler: tornado.web.RequestHandler) -> int:
    """Body bytes written and not yet flushed (BaseHandler counts the bytes it sends)."""
    return sum(map(len, handler._write_buffer))


# --- starting a handler: tornado.web._HandlerDelegate with one create_task ---

# Handler tasks in flight: asyncio keeps only weak references to tasks (as IOLoop._pending_tasks)
_RUNNING: set[asyncio.Task[Any]] = set()


def _handler_done(task: asyncio.Task[Any]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled():
        task.result()  # _execute catches everything; anything else is logged by the loop


class HandlerDelegate(tornado.web._HandlerDelegate):
    """Tornado's per-request delegate, starting the handler's task with less bookkeeping.

    Tornado wraps ``handler._execute()`` with ``gen.convert_yielded``: ``asyncio.ensure_future``
    and ``IOLoop.current()`` (each asks for the running loop, a ``getpid`` system call each),
    a task registry and two done-callbacks. Here: one ``create_task`` on the running loop, one
    strong reference, one callback that drops it and surfaces what the task raised, as Tornado's
    does. The handler still runs as an asyncio Task (``asyncio.current_task()``,
    ``asyncio.timeout()`` work inside it). Tornado has no public hook to start a handler.
    """

    def execute(self) -> Any:
        settings = self.application.settings
        if not (settings.get("compiled_template_cache", True)
                and settings.get("static_hash_cache", True)):
            return super().execute()  # debug mode: Tornado's own reloading path
        self.handler = handler = self.handler_class(self.application, self.request,
                                                    **self.handler_kwargs)
        transforms = [t(self.request) for t in self.application.transforms]
        if self.stream_request_body:
            # Tornado's __init__ sets this attribute to None, so its inferred type is None only; Tornado's
            # own _HandlerDelegate.execute sets the same Future here
            handler._prepared_future = Future()  # type: ignore[assignment]
        task = asyncio.get_running_loop().create_task(
            handler._execute(transforms, *self.path_args, **self.path_kwargs))
        _RUNNING.add(task)
        task.add_done_callback(_handler_done)
        return handler._prepared_future


# --- HTTPHeaders built straight from {name: [values]} dicts, on the per-request paths ---
# Tornado 6.6's HTTPHeaders keeps {name: [values]} in ``_as_list`` plus a lazily filled
# ``_combined_cache``. The fast engine's parser (llhttp has validated and the engine normalised
# every header) and BaseHandler.clear() (constant defaults, checked once) build that dict
# directly instead of paying a normalisation and a regex check per header. With any other layout
# of HTTPHeaders, ``make_headers`` falls back to the public ``add()``.

def normalized(name: str) -> str:
    """A header name as HTTPHeaders stores it ("X-Request-ID" -> "X-Request-Id")."""
    probe = httputil.HTTPHeaders()
    probe[name] = ""
    stored: str = next(iter(probe))  # HTTPHeaders declares its keys as Any
    return stored


# Tornado's lru-cached normalisation (private: the public probe above when it is gone)
_normalize = getattr(httputil, "_normalize_header", normalized)


def _headers_layout_known() -> bool:
    probe = httputil.HTTPHeaders()
    probe.add("A", "1")
    return (set(vars(probe)) == {"_as_list", "_combined_cache"} and probe._as_list == {"A": ["1"]}
            and _normalize("x-rEQUEST-id") == "X-Request-Id")


FAST_HEADERS = _headers_layout_known()
_MISSING = object()


class Headers(httputil.HTTPHeaders):
    """HTTPHeaders whose get() answers for an absent name without an exception.

    ``HTTPHeaders.get`` is ``Mapping.get``: ``self[name]`` raising KeyError, caught. Tornado asks
    for absent headers on every request (Content-Type of a GET in ``_parse_body``,
    If-None-Match in ``check_etag_header``) and the application does too (X-Request-ID); each
    miss raised and caught an exception. Same answers, same caching of combined values.
    """

    def get(self, name: str, default: Any = None) -> Any:
        header = _normalize(name)
        combined = self._combined_cache
        value = combined.get(header, _MISSING)
        if value is _MISSING:
            values = self._as_list.get(header)
            if values is None:
                return default
            value = combined[header] = ",".join(values)
        return value


_new_headers = Headers.__new__


def make_headers(as_list: dict[str, list[str]]) -> httputil.HTTPHeaders:
    """An HTTPHeaders holding these (already validated, normalised) header lines; takes the dict."""
    if FAST_HEADERS:
        fast = _new_headers(Headers)
        fast._as_list = as_list
        fast._combined_cache = {}
        return fast
    headers = httputil.HTTPHeaders()
    for name, values in as_list.items():
        for value in values:
            headers.add(name, value)
    return headers


def header_lists(headers: httputil.HTTPHeaders) -> dict[str, list[str]]:
    """{name: [values]} of these headers: Tornado's own dict when the layout is known (read, not
    copied: the caller must not change it), else a copy made through the public API."""
    if FAST_HEADERS:
        return headers._as_list
    return {name: headers.get_list(name) for name in headers}


def start_handlers_directly(app: Any) -> None:
    """Have this Application start its handlers through HandlerDelegate (above).

    Tornado's ``_HandlerDelegate.execute`` starts ``handler._execute()`` through
    ``gen.convert_yielded`` (``ensure_future``, ``IOLoop.current()``: about a tenth of a small
    request on the fast engine); HandlerDelegate does the same with one ``create_task``.
    Applied only where the application's class keeps Tornado's own ``get_handler_delegate`` (one
    that overrides it chose its delegate itself): set on the instance, which
    ``_ApplicationRouter.get_target_delegate`` calls for every RequestHandler.
    """
    if (isinstance(app, tornado.web.Application)
            and type(app).get_handler_delegate is tornado.web.Application.get_handler_delegate
            and "get_handler_delegate" not in vars(app)):
        def get_handler_delegate(request: Any, target_class: Any, target_kwargs: Any = None,
                                 path_args: Any = None, path_kwargs: Any = None) -> Any:
            return HandlerDelegate(app, request, target_class, target_kwargs, path_args,
                                   path_kwargs)
        vars(app)["get_handler_delegate"] = get_handler_delegate  # an instance attribute over the method


_format_timestamp = httputil.format_timestamp


def cache_date_formatting() -> None:
    """Format ``RequestHandler.clear()``'s Date once a second instead of once a request.

    ``clear()`` calls ``httputil.format_timestamp(time.time())`` for every request (about 6% of a
    small one on the fast engine). The replacement gives the same string for every argument:
    a float timestamp whose whole second was just formatted (and that is not within a
    microsecond of the next, which ``datetime`` would round up) gets the cached string; anything
    else goes to Tornado's function. Idempotent; process-wide, like Tornado's own module.
    """
    if httputil.format_timestamp is not _format_timestamp:
        return
    cache: list[Any] = [None, ""]

    def format_timestamp(ts: Any) -> str:
        if type(ts) is float and ts >= 0:
            second = int(ts)
            if second == cache[0] and ts - second < 0.999999:
                return cache[1]  # type: ignore[no-any-return]
            value = _format_timestamp(ts)
            if ts - second < 0.999999:
                cache[0], cache[1] = second, value
            return value
        return _format_timestamp(ts)

    format_timestamp.__doc__ = _format_timestamp.__doc__
    httputil.format_timestamp = format_timestamp
