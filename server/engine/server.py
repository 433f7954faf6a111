"""FastHTTPServer: listeners, timeouts, limits and graceful drain for the fast engine's connections."""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from time import monotonic
from typing import Any, Callable

from tornado import httputil

from .connection import Connection, ParserSink
from .limits import ConnectionCap, reset_on_close, sweep_period
from .listeners import Listeners

log = logging.getLogger("server.http")

TORNADO_IDLE_TIMEOUT = 3600.0  # what Tornado's HTTPServer uses when idle_connection_timeout is unset
DEFAULT_MAX_BODY_SIZE = 100 * 1024**2  # Tornado's default (its max_buffer_size)
CLOSE_WAIT_SECONDS = 5.0  # close_all_connections waits this long for transports to report closed


def _callable_starter(callback: Callable[[httputil.HTTPServerRequest], None]) -> Callable[..., Any]:
    from tornado.httpserver import _CallableAdapter

    def start(server_conn: object,
              request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        """A delegate that calls the plain callable with the whole request."""
        return _CallableAdapter(callback, request_conn)
    return start


class FastHTTPServer:
    """An HTTP/1.1 server for a Tornado Application on asyncio protocols and the llhttp parser.

    It offers what the rest of the server uses of DrainingHTTPServer: add_sockets, stop,
    drain, close_all_connections, connection_count, busy, draining and request_callback.
    A connection is busy from the moment its request head is complete until its response is
    finished (or it closes). Idle and head timeouts share one timer (idle_connection_timeout),
    like Tornado's; body_timeout bounds how long a request body may take to arrive. Against slow
    clients, header_timeout bounds a request head from its first byte (from accept for the first
    request), send_timeout cuts a connection whose buffered output makes no progress, and
    max_connections closes new connections at once while that many are open.
    """

    def __init__(self, request_callback: Any, *, idle_connection_timeout: float | None = None,
                 body_timeout: float | None = None, max_header_size: int | None = None,
                 max_body_size: int | None = None, decompress_request: bool = False,
                 protocol: str | None = None, ssl_options: ssl.SSLContext | None = None,
                 header_timeout: float | None = None, send_timeout: float | None = None,
                 max_connections: int | None = None) -> None:
        self.request_callback = request_callback
        self.ssl_context = ssl_options  # HTTPS: asyncio's TLS transport under each connection
        self.idle_timeout = idle_connection_timeout or TORNADO_IDLE_TIMEOUT
        self.body_timeout = body_timeout or None
        self.header_timeout = header_timeout or None
        # without one, a close with unsent output still ends after idle_timeout without progress
        self.send_timeout = send_timeout or self.idle_timeout
        self.cap = ConnectionCap(max_connections)
        self.max_header_size = max_header_size or 65536
        self.max_body_size = max_body_size or DEFAULT_MAX_BODY_SIZE
        self.protocol = protocol or ("https" if ssl_options is not None else "http")
        self.decompress = decompress_request
        if isinstance(request_callback, httputil.HTTPServerConnectionDelegate):
            self._start = request_callback.start_request
        else:
            self._start = _callable_starter(request_callback)
        if not decompress_request:
            self.start_request = self._start  # type: ignore[method-assign]  # skip a call per request
        self.busy: set[Connection] = set()
        self.draining = False
        self.loop: asyncio.AbstractEventLoop | None = None
        # the already-resolved future every uncongested write returns
        self.done: asyncio.Future[None] | None = None
        self._connections: set[Connection] = set()
        self._detached: set[Connection] = set()
        # connections waiting for a request head -> deadline; insertion order is deadline order
        # (one timeout for all), so the sweep stops at the first one still in time
        self.waiting_head: dict[Connection, float] = {}
        self.reading_body: dict[Connection, float] = {}
        # connections whose request head has begun -> (deadline, conn.heads then); insertion
        # order is deadline order; an entry whose head has since completed is dropped when due
        self.head_deadline: dict[Connection, tuple[float, int]] = {}
        # connections with output stuck in the transport -> (bytes buffered, deadline)
        self.sending: dict[Connection, tuple[int, float]] = {}
        self.sink = ParserSink(self)
        self._tick = sweep_period(self.idle_timeout, self.body_timeout, self.header_timeout,
                                  self.send_timeout)
        self._sweeper: asyncio.TimerHandle | None = None
        self.listeners = Listeners()

    # --- what the rest of the server uses ---

    @property
    def connection_count(self) -> int:
        """Open HTTP connections (not counting ones taken over by WebSockets)."""
        return len(self._connections)

    @property
    def refused_connections(self) -> int:
        """Connections closed right after accept because --max-connections were open."""
        return self.cap.refused

    def add_sockets(self, sockets: list[socket.socket]) -> None:
        """Serve on already-bound listening sockets (their listen backlog is kept)."""
        loop = asyncio.get_running_loop()
        self._bind(loop)
        self.listeners.add(sockets, self._serve)

    def stop(self) -> None:
        """Stop accepting: close the listening sockets, so new connections are refused."""
        self.listeners.stop()

    async def drain(self, timeout: float, idle_grace: float = 1.0) -> bool:
        """Stop accepting, let requests in flight finish (up to timeout), then close everything.

        While draining every response says `Connection: close` and its connection closes once it
        is sent. A keep-alive connection that has been idle for idle_grace is closed; one that
        went idle more recently gets the rest of that time (a client may be sending into it right
        now). Returns True when every request finished in time, False when some were cut off.
        """
        self.draining = True
        self.stop()
        end = monotonic() + timeout
        while self._connections and monotonic() < end:
            # waiting_head holds idle connections with deadline = idle since + idle_timeout
            cutoff = monotonic() - idle_grace + self.idle_timeout
            idle = []
            for conn, deadline in self.waiting_head.items():
                if deadline > cutoff:
                    break
                idle.append(conn)
            for conn in idle:
                conn.close_transport()
            await asyncio.sleep(0.02)
        finished = not self.busy
        if not finished:
            log.warning("shutdown timeout: cutting off %d request(s) still in flight", len(self.busy))
        await self.close_all_connections()
        return finished

    async def close_all_connections(self) -> None:
        """Close every connection now (requests in flight and WebSockets included) and wait."""
        for conn in [*self._connections, *self._detached]:
            transport = conn.transport
            if transport is None:
                continue
            if transport.get_write_buffer_size():
                conn.abort()
            else:
                conn.close_transport()
        deadline = monotonic() + CLOSE_WAIT_SECONDS
        while (self._connections or self._detached) and monotonic() < deadline:
            await asyncio.sleep(0.005)
        if self.listeners.stopped and self._sweeper is not None and not self._connections:
            self._sweeper.cancel()
            self._sweeper = None

    # --- listening ---

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is loop:
            return
        self.loop = loop
        self.done = loop.create_future()
        self.done.set_result(None)
        self._schedule_sweep()

    async def _serve(self, sock: socket.socket, backlog: int) -> asyncio.AbstractServer:
        tls: dict[str, Any] = {}
        if self.ssl_context is not None:
            # a client that never finishes its handshake is held no longer than an idle one
            tls = dict(ssl=self.ssl_context, ssl_handshake_timeout=min(self.idle_timeout, 60.0))
        return await self.loop.create_server(self._new_connection, sock=sock, backlog=backlog,
                                             start_serving=False, **tls)

    def _new_connection(self) -> Connection:
        return Connection(self)

    # --- bookkeeping the connections report ---

    def start_request(self, conn: Connection, exchange: Any) -> httputil.HTTPMessageDelegate:
        """A new message delegate of the application for one request (gunzipping if asked)."""
        delegate = self._start(conn, exchange)
        if self.decompress:
            from tornado.http1connection import _GzipMessageDelegate
            delegate = _GzipMessageDelegate(delegate, 65536, exchange.body_limit())
        return delegate

    def connection_made(self, conn: Connection) -> None:
        """A client connected: it has idle_timeout (and header_timeout) to send a request head.

        Over --max-connections it is closed at once instead, before anything is read from it.
        """
        if self.cap.full(len(self._connections)):
            self.cap.refuse()
            conn.abort()
            return
        self._connections.add(conn)
        self.idle(conn)
        if self.header_timeout:
            self.head_deadline[conn] = (monotonic() + self.header_timeout, conn.heads)
        if self._sweeper is None:
            self._schedule_sweep()

    def connection_lost(self, conn: Connection) -> None:
        """A connection is gone."""
        self._connections.discard(conn)
        self._detached.discard(conn)
        self.busy.discard(conn)
        self.waiting_head.pop(conn, None)
        self.reading_body.pop(conn, None)
        self.head_deadline.pop(conn, None)
        self.sending.pop(conn, None)

    def head_started(self, conn: Connection) -> None:
        """Part of a request head arrived: unless its timer runs already, header_timeout starts."""
        if not self.header_timeout:
            return
        deadlines = self.head_deadline
        entry = deadlines.get(conn)
        if entry is None or entry[1] != conn.heads:
            deadlines.pop(conn, None)  # re-inserting moves it to the end, keeping deadline order
            deadlines[conn] = (monotonic() + self.header_timeout, conn.heads)

    def write_stalled(self, conn: Connection) -> None:
        """Output is piling up in the transport: it must make progress within send_timeout."""
        if conn not in self.sending and conn.transport is not None:
            self.sending[conn] = (conn.transport.get_write_buffer_size(),
                                  monotonic() + self.send_timeout)

    def write_flowing(self, conn: Connection) -> None:
        """The transport drained below its low-water mark."""
        if self.sending:
            self.sending.pop(conn, None)

    def idle(self, conn: Connection) -> None:
        """The connection now waits for a request head (the idle/head timer starts)."""
        waiting = self.waiting_head
        waiting.pop(conn, None)  # re-inserting moves it to the end, keeping deadline order
        waiting[conn] = monotonic() + self.idle_timeout

    def head_arrived(self, conn: Connection) -> None:
        """A complete request head arrived: the idle/head timer stops."""
        self.waiting_head.pop(conn, None)

    def body_started(self, conn: Connection, timeout: float) -> None:
        """The body timer starts."""
        self.reading_body[conn] = monotonic() + timeout

    def body_ended(self, conn: Connection) -> None:
        """The body is complete: the body timer stops."""
        if self.reading_body:
            self.reading_body.pop(conn, None)

    def closing(self, conn: Connection) -> None:
        """The connection is closing: no timers, not busy."""
        self.busy.discard(conn)
        self.waiting_head.pop(conn, None)
        self.reading_body.pop(conn, None)
        self.head_deadline.pop(conn, None)

    def detached(self, conn: Connection) -> None:
        """The connection was taken over (WebSocket): it is no HTTP connection any more."""
        self.closing(conn)
        self._connections.discard(conn)
        self._detached.add(conn)

    # --- timeouts ---

    def _schedule_sweep(self) -> None:
        if self.listeners.stopped and not self._connections:
            self._sweeper = None
            return
        self._sweeper = self.loop.call_later(self._tick, self._sweep)

    def _sweep(self) -> None:
        now = monotonic()
        expired = []
        for conn, deadline in self.waiting_head.items():
            if deadline > now:
                break
            expired.append(conn)
        for conn in expired:
            self.waiting_head.pop(conn, None)
            conn.timed_out(reading_body=False)
        if self.reading_body:
            late = [conn for conn, deadline in self.reading_body.items() if deadline <= now]
            for conn in late:
                self.reading_body.pop(conn, None)
                conn.timed_out(reading_body=True)
        if self.head_deadline:
            self._sweep_heads(now)
        if self.sending:
            self._sweep_sending(now)
        self._schedule_sweep()

    def _sweep_heads(self, now: float) -> None:
        """Close connections whose request head has not arrived within header_timeout."""
        deadlines = self.head_deadline
        due = []
        for conn, (deadline, heads) in deadlines.items():
            if deadline > now:
                break
            due.append((conn, heads))
        for conn, heads in due:
            del deadlines[conn]
            if conn.heads != heads or conn.closing:
                continue  # that head arrived in time
            if conn in self.busy:
                # a pipelined head waits (unread) while the request before it is served
                deadlines[conn] = (now + self.header_timeout, heads)
                continue
            log.debug("request head from %s not complete within %gs: closing", conn,
                      self.header_timeout)
            conn.timed_out(reading_body=False)

    def _sweep_sending(self, now: float) -> None:
        """Abort connections whose buffered output has not moved for send_timeout."""
        sending = self.sending
        stuck = []
        for conn, (size, deadline) in list(sending.items()):
            transport = conn.transport
            if transport is None:
                del sending[conn]
                continue
            buffered = transport.get_write_buffer_size()
            if buffered == 0 and not conn.write_paused:
                del sending[conn]  # all out
            elif buffered < size:
                sending[conn] = (buffered, now + self.send_timeout)  # progress
            elif deadline <= now:
                stuck.append(conn)
            elif buffered > size:
                sending[conn] = (buffered, deadline)  # more output, none of it sent
        for conn in stuck:
            del sending[conn]
            log.debug("response to %s made no progress for %gs: closing", conn, self.send_timeout)
            reset_on_close(conn.transport.get_extra_info("socket"))
            conn.abort()
