"""What the server needs from library internals, in one place, each use explained and tested.

Public APIs are used everywhere else; what is here has no public equivalent in the versions
setup.cfg allows, and each function says which versions need it.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from tornado import httputil, iostream
from tornado.http1connection import HTTP1Connection

from . import rules


def release_transport(transport: Any) -> None:
    """Break the reference cycle a closed asyncio selector transport keeps (CPython < 3.12).

    ``_SelectorSocketTransport`` keeps its own bound ``_read_ready__data_received`` method as
    ``_read_ready_cb``, a cycle that only the garbage collector frees: one per closed connection
    (Tornado's circlerefs_test flags it). CPython 3.12 drops it in close() (gh-100348); this does
    the same once the transport has reported connection_lost. uvloop's transports have no cycle.
    """
    if getattr(transport, "_read_ready_cb", None) is not None:
        transport._read_ready_cb = None


def http1_max_body_size(connection: Any) -> int:
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


def start_handlers_directly(app: Any, delegate_class: type) -> None:
    """Have this Application start its handlers through ``delegate_class`` (a _HandlerDelegate).

    Tornado's ``_HandlerDelegate.execute`` starts ``handler._execute()`` through
    ``gen.convert_yielded`` (``ensure_future``, ``IOLoop.current()``: about a tenth of a small
    request on the fast engine); server.routing.HandlerDelegate does the same with one
    ``create_task``. Applied only where the application's class keeps Tornado's own
    ``get_handler_delegate`` (one that overrides it chose its delegate itself): set on the
    instance, which ``_ApplicationRouter.get_target_delegate`` calls for every RequestHandler.
    """
    import tornado.web
    if (isinstance(app, tornado.web.Application)
            and type(app).get_handler_delegate is tornado.web.Application.get_handler_delegate
            and "get_handler_delegate" not in vars(app)):
        def get_handler_delegate(request: Any, target_class: Any, target_kwargs: Any = None,
                                 path_args: Any = None, path_kwargs: Any = None) -> Any:
            return delegate_class(app, request, target_class, target_kwargs, path_args,
                                  path_kwargs)
        app.get_handler_delegate = get_handler_delegate


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
