"""FastHTTPServer: a drop-in tornado.httpserver.HTTPServer on asyncio protocols and llhttp."""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any, cast

from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.netutil import ssl_options_to_context
from tornado.tcpserver import TCPServer

from .. import compat, http1policy
from ..http1policy import Deadlines
from ..refusals import Refusal, RefusalHandler
from .connection import Connection, Exchange
from .delegates import CallableDelegate, GzipDelegate
from .limits import ConnectionCap, RateLimitedLog, reset_on_close, sweep_period
from .listeners import Listeners
from .parsing import ParserSink
from .timers import Timers

log = logging.getLogger("server.http")

# start_request(server_conn, request_conn): the message delegate for one request
StartRequest = Callable[[object, httputil.HTTPConnection], httputil.HTTPMessageDelegate]

class EarlyInput(asyncio.Protocol):
    """The protocol of a TLS connection from its handshake until its Connection takes over.

    start_tls hands over application data as soon as the handshake is done, possibly before it
    returns: what arrives meanwhile is kept here and given to the Connection.
    """

    __slots__ = ("data", "lost")

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class TLSHandshake(asyncio.Protocol):
    """The protocol of an accepted TLS connection until loop.start_tls takes it over.

    The client's first bytes (its ClientHello) may be read before start_tls installs its TLS
    protocol (uvloop reads as soon as it accepts, pause_reading or not): they are kept here and
    handed to that protocol right after its connection_made, before any later read.
    """

    __slots__ = ("server", "transport", "hello")

    def __init__(self, server: FastHTTPServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.hello: bytearray | None = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        stream = cast(asyncio.Transport, transport)  # a stream server's connections are streams
        if server.cap.full(len(server._connections) + len(server._handshakes)):
            server.cap.refuse()
            stream.abort()
            return
        self.transport = stream
        stream.pause_reading()
        loop = server.loop
        assert loop is not None
        task = loop.create_task(server.handshake(stream, stream.get_extra_info("peername")))
        server._handshakes.add(task)
        task.add_done_callback(server._handshakes.discard)
        # the task's first step runs start_tls, which schedules its protocol's connection_made;
        # a callback scheduled from a callback queued after that step runs right after it
        loop.call_soon(loop.call_soon, self.hand_over)

    def data_received(self, data: bytes) -> None:
        if self.hello is not None:
            self.hello += data

    def hand_over(self) -> None:
        """Give what was read before start_tls to the TLS protocol now reading the connection."""
        hello, self.hello = self.hello, None
        transport = self.transport
        if not hello or transport is None or transport.is_closing():
            return
        protocol = transport.get_protocol()
        if protocol is self:
            return
        if hasattr(protocol, "buffer_updated"):  # asyncio's and uvloop's SSLProtocol
            buffered = cast(asyncio.BufferedProtocol, protocol)
            view = memoryview(bytes(hello))
            while view:
                buffer = memoryview(buffered.get_buffer(len(view)))
                size = min(len(buffer), len(view))
                buffer[:size] = view[:size]
                buffered.buffer_updated(size)
                view = view[size:]
        else:
            cast(asyncio.Protocol, protocol).data_received(bytes(hello))


# Tornado's defaults for what HTTPServer(...) leaves unset
TORNADO_IDLE_TIMEOUT = 3600.0  # idle_connection_timeout
DEFAULT_MAX_BODY_SIZE = 100 * 1024**2  # max_body_size (IOStream's max_buffer_size)
DEFAULT_CHUNK_SIZE = 64 * 1024  # chunk_size: the largest piece data_received gets
DEFAULT_MAX_HEADER_SIZE = 64 * 1024
CLOSE_WAIT_SECONDS = 5.0  # close_all_connections waits this long for transports to report closed
TLS_HANDSHAKE_TIMEOUT = 60.0  # at most; never longer than idle_connection_timeout


class FastHTTPServer(HTTPServer):
    """tornado.httpserver.HTTPServer served by asyncio protocols and the llhttp parser.

    ``FastHTTPServer(app, **options)`` takes every option of Tornado's HTTPServer (no_keep_alive,
    xheaders, ssl_options as an SSLContext or a dict, protocol, decompress_request, chunk_size,
    max_header_size, idle_connection_timeout, body_timeout, max_body_size, max_buffer_size,
    trusted_downstream) and is a Tornado ``HTTPServer`` (``listen``, ``bind``/``start``,
    ``add_sockets``, ``stop``, ``close_all_connections``), so ``python -m tornado.test.runtests
    --httpserver=server.engine.FastHTTPServer`` runs Tornado's own suite on it. Beyond Tornado:

    - header_timeout bounds a request head from its first byte (from accept for the first
      request), send_timeout cuts a connection whose buffered output makes no progress, and
      max_connections closes new connections at once while that many are open;
    - ``drain(timeout, idle_grace)`` stops accepting and lets requests in flight finish;
      ``connection_count``, ``busy`` (connections from a complete request head until the
      response is out) and ``draining`` tell the launcher where it stands;
    - refusals (requests the server answers itself: malformed, too large, too slow) go through
      ``refusals`` (a RefusalHandler: renders the response, may log it).
    """

    def initialize(self, request_callback: Any, no_keep_alive: bool = False,
                   xheaders: bool = False, ssl_options: dict[str, Any] | ssl.SSLContext | None = None,
                   protocol: str | None = None, decompress_request: bool = False,
                   chunk_size: int | None = None, max_header_size: int | None = None,
                   idle_connection_timeout: float | None = None, body_timeout: float | None = None,
                   max_body_size: int | None = None, max_buffer_size: int | None = None,
                   trusted_downstream: list[str] | None = None, *,
                   header_timeout: float | None = None, send_timeout: float | None = None,
                   max_connections: int | None = None,
                   refusals: RefusalHandler | None = None) -> None:
        # TCPServer's own checks of ssl_options (a dict must name an existing certfile, ...)
        TCPServer.__init__(self, ssl_options=ssl_options, max_buffer_size=max_buffer_size,
                           read_chunk_size=chunk_size)
        self.request_callback = request_callback
        self.ssl_context = (None if ssl_options is None
                            else ssl_options_to_context(ssl_options, server_side=True))
        self.idle_timeout = idle_connection_timeout or TORNADO_IDLE_TIMEOUT
        self.body_timeout = body_timeout or None
        self.header_timeout = header_timeout or None
        # without one, a close with unsent output still ends after idle_timeout without progress
        self.send_timeout = send_timeout or self.idle_timeout
        self.cap = ConnectionCap(max_connections)
        self.max_header_size = max_header_size or DEFAULT_MAX_HEADER_SIZE
        self.max_body_size = max_body_size or max_buffer_size or DEFAULT_MAX_BODY_SIZE
        self.chunk_size = chunk_size or DEFAULT_CHUNK_SIZE
        self.protocol = protocol or ("https" if ssl_options is not None else "http")
        self.no_keep_alive = no_keep_alive
        self.xheaders = xheaders
        self.trusted_downstream = trusted_downstream  # as HTTPServer keeps it
        self.trusted_hosts = set(trusted_downstream or ())  # what xheaders look up, per request
        self.decompress = decompress_request
        self.refusals = refusals or RefusalHandler()
        self._start: StartRequest
        if isinstance(request_callback, httputil.HTTPServerConnectionDelegate):
            compat.start_handlers_directly(request_callback)
            compat.cache_date_formatting()
            self._start = request_callback.start_request
        else:
            self._start = CallableDelegate.starter(request_callback)
        if not decompress_request:
            # the application's own, skipping a call per request (mypy forbids assigning to a
            # method; this instance attribute is what Connection calls)
            self.start_request = self._start  # type: ignore[method-assign]
        self.busy: set[Connection] = set()
        self.draining = False
        self.loop: asyncio.AbstractEventLoop | None = None
        # the already-resolved future every uncongested write returns
        self.done: asyncio.Future[None] | None = None
        # open HTTP connections, under HTTPServer's name for them (typed there for its
        # HTTP1ServerConnections; tests read it): this engine's Connections
        self._connections: set[Connection] = set()  # type: ignore[assignment]
        self._detached: set[Connection] = set()
        self._handshakes: set[asyncio.Task[None]] = set()
        # failed TLS handshakes, logged where and as Tornado's SSLIOStream logs them
        self.tls_errors = RateLimitedLog(logging.getLogger("tornado.general"))
        # connections waiting for a request head (idle_timeout)
        self.idle_timer: Deadlines[Connection] = Deadlines(self.idle_timeout)
        # bodies being read (body_timeout, or a request's own): timers of different lengths
        self.body_timer: Deadlines[Connection] = Deadlines(None, ordered=False)
        # connections whose request head has begun (header_timeout), marked with conn.heads
        # then: a timer whose head has since completed is dropped when due
        self.head_timer: Deadlines[Connection] = Deadlines(self.header_timeout)
        # connections with output stuck in the transport (send_timeout), marked with minus the
        # bytes buffered: less left to send is progress
        self.send_timer: Deadlines[Connection] = Deadlines(self.send_timeout, ordered=False)
        self.sink = ParserSink(self, Exchange)
        self.timers = Timers(self)  # what a connection may tell the sweep below
        self._tick = sweep_period(self.idle_timeout, self.body_timeout, self.header_timeout,
                                  self.send_timeout)
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed: asyncio.Future[None] | None = None
        self._lifetime: asyncio.Task[None] | None = None
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

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Serve on already-bound listening sockets (their listen backlog is kept).

        Like Tornado's, this may be called before the event loop runs (the current IOLoop's
        loop then serves them once it does).
        """
        from tornado.ioloop import IOLoop
        from tornado.platform.asyncio import BaseAsyncIOLoop
        loop = cast(BaseAsyncIOLoop, IOLoop.current()).asyncio_loop  # every IOLoop is one
        self._bind(loop)
        self.listeners.add(list(sockets), self._serve, loop)

    def stop(self) -> None:
        """Stop accepting: close the listening sockets, so new connections are refused."""
        self.listeners.stop()

    def handle_stream(self, stream: Any, address: Any) -> None:
        """Not used: connections arrive as asyncio protocols, not IOStreams."""
        raise NotImplementedError("FastHTTPServer serves asyncio protocols, not IOStreams")

    async def drain(self, timeout: float, idle_grace: float = 1.0) -> bool:
        """Stop accepting, let requests in flight finish (up to timeout), then close everything.

        The procedure is http1policy.drain's: while draining every response says
        `Connection: close` and its connection closes once it is sent; keep-alive connections
        idle for idle_grace are closed. Returns True when every request finished in time, False
        when some were cut off.
        """
        return await http1policy.drain(self, timeout, idle_grace)

    def close_after_responses(self) -> None:
        """Draining: every response from now on says `Connection: close` and then closes."""
        self.draining = True  # what Exchange.write_headers and Connection.response_done read

    def close_idle(self, idle_grace: float, now: float) -> None:
        """Close the connections that have waited idle_grace or longer for a request head."""
        for conn in self.idle_timer.armed_by(now - idle_grace):
            conn.close_transport()

    async def close_all_connections(self) -> None:
        """Close every connection now (requests in flight and WebSockets included) and wait."""
        for task in list(self._handshakes):
            task.cancel()
        for conn in [*self._connections, *self._detached]:
            transport = conn.transport
            if transport is None:
                continue
            if transport.is_closing() or transport.get_write_buffer_size():
                conn.abort()
            else:
                conn.close_transport()
        deadline = monotonic() + CLOSE_WAIT_SECONDS
        while ((self._connections or self._detached or self._handshakes)
               and monotonic() < deadline):
            await asyncio.sleep(0.005)
        if self.listeners.stopped and not self._connections:
            if self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None
            if self._closed is not None and not self._closed.done():
                self._closed.set_result(None)  # the lifetime task ends: nothing is left open

    # --- listening ---

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is loop:
            return
        self.loop = loop
        self.done = loop.create_future()
        self.done.set_result(None)
        self._closed = loop.create_future()
        self._lifetime = loop.create_task(self._live(self._closed))
        self._schedule_sweep()

    async def _live(self, closed: asyncio.Future[None]) -> None:
        """A task that lasts while the server may have sockets open.

        A server that is never stopped still must not outlive its event loop with open sockets
        (uvloop's close() hangs on a handle left open when warnings are errors, and asyncio warns
        about each): when the loop's remaining tasks are cancelled at the end (asyncio.run, a
        test's teardown), this one closes the listeners and aborts every connection.
        """
        try:
            await closed
        except asyncio.CancelledError:
            self.listeners.stop()
            for task in list(self._handshakes):
                task.cancel()
            for conn in [*self._connections, *self._detached]:
                conn.abort()
            if self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None
            raise

    async def _serve(self, sock: socket.socket, backlog: int) -> asyncio.AbstractServer:
        loop = self.loop
        assert loop is not None  # _bind ran
        factory: Callable[[], asyncio.Protocol] = (
            self._new_connection if self.ssl_context is None else self._new_tls_connection)
        return await loop.create_server(factory, sock=sock, backlog=backlog, start_serving=False)

    def _new_connection(self) -> asyncio.Protocol:
        return Connection(self)

    def _new_tls_connection(self) -> asyncio.Protocol:
        return TLSHandshake(self)

    async def handshake(self, raw: asyncio.Transport, address: Any) -> None:
        """TLS for an accepted connection (loop.start_tls), then serve it as any other.

        A failed handshake is logged like Tornado's ("SSL Error on ..."), at most once a second
        with a count; asyncio's own TLS server would drop it without a word. A client that never
        finishes its handshake is held no longer than an idle one (at most 60 s).
        """
        early = EarlyInput()
        loop, context = self.loop, self.ssl_context
        assert loop is not None and context is not None  # serving TLS
        try:
            transport = await loop.start_tls(
                raw, early, context, server_side=True,
                ssl_handshake_timeout=min(self.idle_timeout, TLS_HANDSHAKE_TIMEOUT))
        except (TimeoutError, OSError) as exc:  # ssl.SSLError is an OSError
            sock = raw.get_extra_info("socket")
            self.tls_errors.log("SSL Error on %s %s: %s", sock.fileno() if sock else -1, address,
                                exc or "handshake timed out")
            raw.abort()
            return
        if early.lost or transport is None:
            return
        conn = Connection(self)
        transport.set_protocol(conn)
        conn.connection_made(transport)
        if early.data:
            conn.data_received(bytes(early.data))  # what arrived before start_tls returned

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        """A new message delegate of the application for one request (gunzipping if asked)."""
        exchange = cast(Exchange, request_conn)  # this engine's requests are Exchanges
        return GzipDelegate(self._start(server_conn, exchange), exchange)

    def refuse(self, refusal: Refusal) -> bytes:
        """The complete response for a request the server refuses itself (and log it)."""
        return self.refusals.respond(refusal)

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
            self.head_timer.arm(conn, monotonic(), conn.heads)
        if self._sweeper is None:
            self._schedule_sweep()

    def connection_lost(self, conn: Connection) -> None:
        """A connection is gone."""
        self._connections.discard(conn)
        self._detached.discard(conn)
        self.busy.discard(conn)
        self.idle_timer.disarm(conn)
        self.body_timer.disarm(conn)
        self.head_timer.disarm(conn)
        self.send_timer.disarm(conn)

    def request_started(self, conn: Connection) -> None:
        """A complete request head goes to the application: busy, and the idle/head timer stops."""
        self.busy.add(conn)
        self.idle_timer.disarm(conn)

    def request_done(self, conn: Connection, idle: bool = False) -> None:
        """Its response is out (or it was refused): not busy; with idle, the idle timer starts."""
        self.busy.discard(conn)
        if idle:
            self.idle(conn)

    def head_started(self, conn: Connection) -> None:
        """Part of a request head arrived: unless its timer runs already, header_timeout starts."""
        if not self.header_timeout:
            return
        timer = self.head_timer
        if timer.mark(conn) != conn.heads:
            timer.arm(conn, monotonic(), conn.heads)

    def write_stalled(self, conn: Connection) -> None:
        """Output is piling up in the transport: it must make progress within send_timeout."""
        timer = self.send_timer
        if conn not in timer and conn.transport is not None:
            timer.arm(conn, monotonic(), -conn.transport.get_write_buffer_size())

    def write_flowing(self, conn: Connection) -> None:
        """The transport drained below its low-water mark."""
        timer = self.send_timer
        if timer.due:
            timer.disarm(conn)

    def idle(self, conn: Connection) -> None:
        """The connection now waits for a request head (the idle/head timer starts)."""
        self.idle_timer.arm(conn, monotonic())

    def head_arrived(self, conn: Connection) -> None:
        """A complete request head arrived: the idle/head timer stops."""
        self.idle_timer.disarm(conn)

    def body_started(self, conn: Connection, timeout: float) -> None:
        """The body timer starts."""
        self.body_timer.arm(conn, monotonic(), timeout=timeout)

    def body_ended(self, conn: Connection) -> None:
        """The body is complete: the body timer stops."""
        self.body_timer.disarm(conn)

    def closing(self, conn: Connection) -> None:
        """The connection is closing: no timers, not busy."""
        self.busy.discard(conn)
        self.idle_timer.disarm(conn)
        self.body_timer.disarm(conn)
        self.head_timer.disarm(conn)

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
        loop = self.loop
        assert loop is not None  # _bind ran
        self._sweeper = loop.call_later(self._tick, self._sweep)

    def _sweep(self) -> None:
        """Act on every timer that ran out (one sweep for them all, every _tick)."""
        now = monotonic()
        for conn, _ in self.idle_timer.expired(now):
            conn.timed_out(reading_body=False)
        if self.body_timer.due:
            for conn, _ in self.body_timer.expired(now):
                conn.timed_out(reading_body=True)
        if self.head_timer.due:
            self._sweep_heads(now)
        if self.send_timer.due:
            self._sweep_sending(now)
        self._schedule_sweep()

    def _sweep_heads(self, now: float) -> None:
        """Close connections whose request head has not arrived within header_timeout."""
        timer = self.head_timer
        for conn, heads in timer.expired(now):
            if conn.heads != heads or conn.closing:
                continue  # that head arrived in time
            if conn in self.busy:
                # a pipelined head waits (unread) while the request before it is served
                timer.arm(conn, now, heads)
                continue
            log.debug("request head from %s not complete within %gs: closing", conn,
                      self.header_timeout)
            conn.timed_out(reading_body=False)

    def _sweep_sending(self, now: float) -> None:
        """Abort connections whose buffered output has not moved for send_timeout."""
        timer = self.send_timer
        for conn in list(timer.due):
            transport = conn.transport
            if transport is None:
                timer.disarm(conn)
                continue
            buffered = transport.get_write_buffer_size()
            if buffered == 0 and not conn.write_paused:
                timer.disarm(conn)  # all out
            else:
                timer.progress(conn, -buffered, now)
        for conn, _ in timer.expired(now):
            log.debug("response to %s made no progress for %gs: closing", conn, self.send_timeout)
            transport = conn.transport
            if transport is not None:
                reset_on_close(transport.get_extra_info("socket"))
            conn.abort()
