"""Tornado's HTTPServer plus what production needs: early 413s and a graceful drain."""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable
from typing import Any, cast

from tornado import httputil, iostream
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.log import gen_log

from . import compat, http1policy, rules
from .engine.limits import ConnectionCap, reset_on_close, sweep_period
from .http1policy import Deadlines
from .refusals import Refusal, RefusalHandler

log = logging.getLogger("server.http")


class _TrackedRequest(httputil.HTTPMessageDelegate):
    """Marks its connection busy once a request head arrives; refuses oversized bodies early."""

    __slots__ = ("server", "server_conn", "request_conn", "inner")

    def __init__(self, server: DrainingHTTPServer, server_conn: HTTP1ServerConnection,
                 request_conn: HTTP1Connection, inner: httputil.HTTPMessageDelegate) -> None:
        self.server = server
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.inner = inner

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        server = self.server
        server.busy[self.server_conn] = self.request_conn
        if server.draining:
            compat.close_after_response(self.request_conn)
        timer = server.head_timer
        if timer.due:
            timer.disarm(self.server_conn)  # the head arrived in time
        try:
            length = rules.request_content_length(headers.get_list("Content-Length"))
            rules.request_transfer_encoding(headers.get_list("Transfer-Encoding"),
                                            start_line.version, length is not None)
            if start_line.path[:1] != "/" and start_line.path != "*":
                host: dict[str, list[str]] = {}
                path = rules.origin_form(start_line.path, host)
                headers["Host"] = host["Host"][0]
                start_line = start_line._replace(path=path)
            if start_line.version not in ("HTTP/1.1", "HTTP/1.0"):
                start_line = start_line._replace(
                    version=rules.http_version(start_line.version.partition("/")[2]))
        except rules.Violation as violation:
            self.refuse(start_line, headers, violation)
            return None
        result = self.inner.headers_received(start_line, headers)
        if length is None or length <= server.max_body_size:
            return result
        # over the server's limit: a @stream_request_body handler's prepare() may have raised it
        if result is None:
            self.refuse_if_too_large(length, start_line, headers)
            return None
        return self.settle(result, length, start_line, headers)

    async def settle(self, result: Any, length: int, start_line: Any,
                     headers: httputil.HTTPHeaders) -> None:
        await result
        self.refuse_if_too_large(length, start_line, headers)

    def refuse_if_too_large(self, length: int, start_line: Any,
                            headers: httputil.HTTPHeaders) -> None:
        """413 from the head unless this request's own limit (set_max_body_size) admits it."""
        violation = http1policy.refusal_from_head(length, compat.http1_max_body_size(self.request_conn))
        if violation is not None:
            self.refuse(start_line, headers, violation)
            self.inner.on_connection_close()  # it saw the head; it will see no body

    def refuse(self, start_line: Any, headers: httputil.HTTPHeaders,
               violation: rules.Violation) -> None:
        """Answer the violation ourselves (Tornado's words in the log), then linger and close."""
        gen_log.info("Malformed HTTP message from %s: %s", self.request_conn.context,
                     violation.detail)
        self.server.reject(self.request_conn, start_line, headers, violation)

    def data_received(self, chunk: bytes) -> Any:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()


class DrainingHTTPServer(HTTPServer):
    """An HTTPServer that knows which connections are mid-request, so it can drain gracefully.

    A connection is busy from the moment a request head arrives until the next request starts
    (the response has been written) or the connection closes. Draining closes idle keep-alive
    connections at once, closes busy ones as soon as their response is out, and waits.
    """

    def initialize(self, *args: Any, header_timeout: float | None = None,
                   send_timeout: float | None = None, max_connections: int | None = None,
                   refusals: RefusalHandler | None = None, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        compat.cache_date_formatting()  # as the fast engine does: the Date once a second
        self.refusals = refusals or RefusalHandler()
        self._stream_classes: dict[type, type] = {}  # IOStream classes answering bad requests
        self.max_body_size = kwargs.get("max_body_size") or 100 * 1024**2
        # connections with a request in flight -> its HTTP1Connection
        self.busy: dict[HTTP1ServerConnection, HTTP1Connection] = {}
        self.idle_since: dict[HTTP1ServerConnection, float] = {}
        self.draining = False
        self._lingering: set[asyncio.Task[None]] = set()
        # Slow clients. Tornado's own head timer (idle_connection_timeout) runs from the moment
        # a connection waits for a request; header_timeout bounds the head from its first byte
        # (from accept for the first request), and send_timeout cuts a response that makes no
        # progress. Both are checked by one sweep, every tenth of the shorter timeout.
        self.header_timeout = header_timeout or None
        self.send_timeout = send_timeout or None
        self.cap = ConnectionCap(max_connections)
        self.head_timer: Deadlines[HTTP1ServerConnection] = Deadlines(self.header_timeout)
        # marked with the bytes written: more of them is progress
        self.send_timer: Deadlines[HTTP1ServerConnection] = Deadlines(self.send_timeout,
                                                                      ordered=False)
        self._tick = sweep_period(self.header_timeout, self.send_timeout)
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def connection_count(self) -> int:
        """Open HTTP connections."""
        return len(compat.open_connections(self))

    @property
    def refused_connections(self) -> int:
        """Connections closed right after accept because --max-connections were open."""
        return self.cap.refused

    def handle_stream(self, stream: iostream.IOStream, address: tuple[Any, ...]) -> None:
        """Serve a new connection, or close it at once when --max-connections are open."""
        if self.cap.full(len(compat.open_connections(self))):
            self.cap.refuse()
            stream.close()
            return
        compat.answer_bad_requests(stream, self._bad_request, self._stream_classes)
        super().handle_stream(stream, address)
        if self._sweeper is None and (self.header_timeout or self.send_timeout):
            self._sweeper = asyncio.get_running_loop().call_later(self._tick, self._sweep)

    def _bad_request(self, stream: iostream.IOStream, status: int) -> bytes:
        """Tornado refused a request (its log line says why): our response, recorded."""
        try:
            remote_ip = stream.socket.getpeername()[0]
        except (OSError, AttributeError, IndexError):
            remote_ip = "-"
        detail = (rules.head_too_large(self.conn_params.max_header_size).detail if status == 431
                  else "Malformed HTTP request (refused by Tornado's HTTP1Connection)")
        return self.refusals.respond(Refusal(status, detail, remote_ip=remote_ip))

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> Any:
        """The delegate of a connection's next request: the connection is idle from now on."""
        # HTTPServer is only ever handed Tornado's HTTP/1 connections (its own handle_stream)
        conn = cast(HTTP1ServerConnection, server_conn)
        self.busy.pop(conn, None)
        if self.header_timeout and conn not in self.idle_since:
            # a new connection: its first head is due header_timeout after accept
            self.head_timer.arm(conn, time.monotonic())
        self.idle_since[conn] = time.monotonic()
        compat.validate_response_framing(request_conn)
        inner = super().start_request(server_conn, request_conn)
        return _TrackedRequest(self, conn, cast(HTTP1Connection, request_conn), inner)

    def on_close(self, server_conn: object) -> None:
        """A connection closed: it is neither busy nor timed any more."""
        conn = cast(HTTP1ServerConnection, server_conn)
        self.busy.pop(conn, None)
        self.idle_since.pop(conn, None)
        self.head_timer.disarm(conn)
        self.send_timer.disarm(conn)
        super().on_close(server_conn)

    def _sweep(self) -> None:
        """Close connections whose head is late (header_timeout) or whose output is stuck (send_timeout)."""
        self._sweeper = None
        now = time.monotonic()
        late: list[tuple[HTTP1ServerConnection, int | None]] = []
        if self.header_timeout:
            timer, busy = self.head_timer, self.busy
            for conn in compat.open_connections(self):
                # bytes buffered while waiting for a head: a head has begun, its timer starts
                if (conn not in busy and conn not in timer
                        and compat.buffered_read_bytes(conn.stream)):
                    timer.arm(conn, now)
            late = timer.expired(now)
        stuck: list[tuple[HTTP1ServerConnection, int | None]] = []
        if self.send_timeout:
            # a response being written keeps its connection busy until it is out
            sending = self.send_timer
            for conn in [conn for conn in sending.due if conn not in self.busy]:
                sending.disarm(conn)  # its response is out
            for conn in self.busy:
                stream = conn.stream
                if not stream.writing():
                    sending.disarm(conn)
                elif conn in sending:
                    sending.progress(conn, compat.bytes_written(stream), now)
                else:
                    sending.arm(conn, now, compat.bytes_written(stream))
            stuck = sending.expired(now)
        for conn, _ in late:
            log.debug("request head not complete within %gs: closing", self.header_timeout)
            conn.stream.close()
        for conn, _ in stuck:
            log.debug("response made no progress for %gs: closing", self.send_timeout)
            reset_on_close(conn.stream.socket)
            conn.stream.close()
        if compat.open_connections(self):
            self._sweeper = asyncio.get_running_loop().call_later(self._tick, self._sweep)

    def reject(self, request_conn: HTTP1Connection, start_line: Any,
               headers: httputil.HTTPHeaders, violation: rules.Violation) -> None:
        """Answer an error before reading the body, then close without resetting the client."""
        # the context is HTTPServer's _HTTPRequestContext (typed object by HTTP1Connection)
        remote_ip = getattr(request_conn.context, "remote_ip", "-")
        stream = request_conn.detach()
        refusal = Refusal(violation.status, violation.detail, start_line.method, start_line.path,
                          start_line.version, headers, remote_ip)
        task = asyncio.ensure_future(self._write_and_linger(stream, self.refusals.respond(refusal)))
        self._lingering.add(task)
        task.add_done_callback(self._lingering.discard)

    @staticmethod
    async def _write_and_linger(stream: iostream.IOStream, response: bytes) -> None:
        # Closing a socket with unread input makes the kernel send RST, and the client may then
        # lose our answer: stop writing and drain input briefly (http1policy's lingering close).
        def read(timeout: float) -> Awaitable[bytes]:
            return asyncio.wait_for(stream.read_bytes(http1policy.LINGER_READ_SIZE, partial=True),
                                    timeout)

        try:
            await stream.write(response)
            stream.socket.shutdown(socket.SHUT_WR)
            await http1policy.discard_input(read)
        except (TimeoutError, iostream.StreamClosedError, OSError):
            pass
        finally:
            stream.close()

    async def drain(self, timeout: float, idle_grace: float = 1.0) -> bool:
        """Stop accepting, let requests in flight finish (up to timeout), then close everything.

        The procedure is http1policy.drain's: while draining every response says
        `Connection: close`; a keep-alive connection idle for `idle_grace` is closed, one that
        just finished a response gets that long for the client's next request (answered, with
        `Connection: close`). Returns False if requests were cut off.
        """
        finished = await http1policy.drain(self, timeout, idle_grace)
        for task in list(self._lingering):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        return finished

    def close_after_responses(self) -> None:
        """Draining: every response from now on says `Connection: close` and then closes.

        Tornado's HTTP1Connection keeps a connection open whatever the response's headers say,
        so an application that does not close it itself (any but this project's) would keep
        its keep-alive clients until the shutdown timeout cut their requests off.
        """
        self.draining = True
        for request_conn in self.busy.values():
            compat.close_after_response(request_conn)  # headers_received marks the ones to come

    def close_idle(self, idle_grace: float, now: float) -> None:
        """Close the keep-alive connections idle for idle_grace or longer."""
        for conn in list(compat.open_connections(self)):
            if conn not in self.busy and now - self.idle_since.get(conn, 0.0) >= idle_grace:
                conn.stream.close()
