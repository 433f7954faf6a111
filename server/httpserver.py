"""Tornado's HTTPServer plus what production needs: early 413s and a graceful drain."""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

from tornado import httputil, iostream
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.log import gen_log

from . import compat, rules
from .engine.limits import ConnectionCap, reset_on_close, sweep_period
from .refusals import Refusal, RefusalHandler

log = logging.getLogger("server.http")

LINGER_SECONDS = 2.0          # how long a rejected upload may keep sending before we close
LINGER_MAX_BYTES = 4 * 1024**2  # and how much of it we read and discard


class _TrackedRequest(httputil.HTTPMessageDelegate):
    """Marks its connection busy once a request head arrives; refuses oversized bodies early."""

    __slots__ = ("server", "server_conn", "request_conn", "inner")

    def __init__(self, server: "DrainingHTTPServer", server_conn: HTTP1ServerConnection,
                 request_conn: HTTP1Connection, inner: httputil.HTTPMessageDelegate) -> None:
        self.server = server
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.inner = inner

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        server = self.server
        server.busy.add(self.server_conn)
        if server.head_deadline:
            server.head_deadline.pop(self.server_conn, None)  # the head arrived in time
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
        limit = compat.http1_max_body_size(self.request_conn)
        if length > limit:
            self.refuse(start_line, headers, rules.too_large(length, limit))
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

    def initialize(self, *args: Any, header_timeout: float | None = None,  # type: ignore[override]
                   send_timeout: float | None = None, max_connections: int | None = None,
                   refusals: RefusalHandler | None = None, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.refusals = refusals or RefusalHandler()
        self._stream_classes: dict[type, type] = {}  # IOStream classes answering bad requests
        self.max_body_size = kwargs.get("max_body_size") or 100 * 1024**2
        self.busy: set[HTTP1ServerConnection] = set()
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
        self.head_deadline: dict[HTTP1ServerConnection, float] = {}
        self.send_progress: dict[HTTP1ServerConnection, tuple[int, float]] = {}
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

    def handle_stream(self, stream: iostream.IOStream, address: tuple) -> None:
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
        # called when a connection is ready for its next request: it is idle from now on
        self.busy.discard(server_conn)  # type: ignore[arg-type]
        if self.header_timeout and server_conn not in self.idle_since:
            # a new connection: its first head is due header_timeout after accept
            self.head_deadline[server_conn] = time.monotonic() + self.header_timeout  # type: ignore[index]
        self.idle_since[server_conn] = time.monotonic()  # type: ignore[index]
        compat.validate_response_framing(request_conn)
        inner = super().start_request(server_conn, request_conn)
        return _TrackedRequest(self, server_conn, request_conn, inner)  # type: ignore[arg-type]

    def on_close(self, server_conn: object) -> None:
        self.busy.discard(server_conn)  # type: ignore[arg-type]
        self.idle_since.pop(server_conn, None)  # type: ignore[call-overload]
        self.head_deadline.pop(server_conn, None)  # type: ignore[call-overload]
        self.send_progress.pop(server_conn, None)  # type: ignore[call-overload]
        super().on_close(server_conn)

    def _sweep(self) -> None:
        """Close connections whose head is late (header_timeout) or whose output is stuck (send_timeout)."""
        self._sweeper = None
        now = time.monotonic()
        late: list[HTTP1ServerConnection] = []
        if self.header_timeout:
            deadlines, busy = self.head_deadline, self.busy
            for conn in compat.open_connections(self):
                if conn in busy:
                    continue
                deadline = deadlines.get(conn)
                if deadline is None:
                    # bytes buffered while waiting for a head: a head has begun, its timer starts
                    if compat.buffered_read_bytes(conn.stream):
                        deadlines[conn] = now + self.header_timeout
                elif deadline <= now:
                    late.append(conn)
        stuck: list[HTTP1ServerConnection] = []
        if self.send_timeout:
            # a response being written keeps its connection busy until it is out
            progress = self.send_progress
            for conn in self.busy:
                stream = conn.stream
                if not stream.writing():
                    progress.pop(conn, None)
                    continue
                sent = compat.bytes_written(stream)
                seen = progress.get(conn)
                if seen is None or seen[0] != sent:
                    progress[conn] = (sent, now + self.send_timeout)
                elif seen[1] <= now:
                    stuck.append(conn)
        for conn in late:
            log.debug("request head not complete within %gs: closing", self.header_timeout)
            self.head_deadline.pop(conn, None)
            conn.stream.close()
        for conn in stuck:
            log.debug("response made no progress for %gs: closing", self.send_timeout)
            self.send_progress.pop(conn, None)
            reset_on_close(conn.stream.socket)
            conn.stream.close()
        if compat.open_connections(self):
            self._sweeper = asyncio.get_running_loop().call_later(self._tick, self._sweep)

    def reject(self, request_conn: HTTP1Connection, start_line: Any,
               headers: httputil.HTTPHeaders, violation: rules.Violation) -> None:
        """Answer an error before reading the body, then close without resetting the client."""
        context = request_conn.context  # type: ignore[attr-defined]
        stream = request_conn.detach()
        refusal = Refusal(violation.status, violation.detail, start_line.method, start_line.path,
                          start_line.version, headers, context.remote_ip)
        task = asyncio.ensure_future(self._write_and_linger(stream, self.refusals.respond(refusal)))
        self._lingering.add(task)
        task.add_done_callback(self._lingering.discard)

    @staticmethod
    async def _write_and_linger(stream: iostream.IOStream, response: bytes) -> None:
        # Closing a socket with unread input makes the kernel send RST, and the client may then
        # lose our answer; like nginx's lingering_close, stop writing and drain input briefly.
        try:
            await stream.write(response)
            stream.socket.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            discarded = 0
            while discarded < LINGER_MAX_BYTES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                chunk = await asyncio.wait_for(stream.read_bytes(65536, partial=True), remaining)
                discarded += len(chunk)
        except (iostream.StreamClosedError, asyncio.TimeoutError, OSError):
            pass
        finally:
            stream.close()

    async def drain(self, timeout: float, idle_grace: float = 1.0) -> bool:
        """Stop accepting, let requests in flight finish (up to timeout), then close everything.

        While draining every response says `Connection: close`. A keep-alive connection that has
        been idle for `idle_grace` is closed; one that just finished a response gets that long
        for the client's next request (answered, with `Connection: close`) so a busy client
        never sends into a connection we are closing. Returns False if requests were cut off.
        """
        self.draining = True
        self.stop()  # stop accepting: with no other holder of the socket, new connections are refused
        deadline = time.monotonic() + timeout
        while compat.open_connections(self) and time.monotonic() < deadline:
            now = time.monotonic()
            for conn in list(compat.open_connections(self)):
                if conn not in self.busy and now - self.idle_since.get(conn, 0.0) >= idle_grace:
                    conn.stream.close()
            await asyncio.sleep(0.02)
        finished = not self.busy
        if not finished:
            log.warning("shutdown timeout: cutting off %d request(s) still in flight", len(self.busy))
        await self.close_all_connections()
        for task in list(self._lingering):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        return finished
