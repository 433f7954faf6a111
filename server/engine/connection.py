"""One HTTP/1.1 connection: an asyncio Protocol that parses with llhttp and serves Tornado delegates.

Every request on a connection is an Exchange (exchange.py), the `tornado.httputil.HTTPConnection`
the Application's delegate (and so every RequestHandler) writes its response to. The parser (a
Reader, reader.py) runs ahead of the application (pipelining, bodies arriving while a handler is
busy); what it has parsed waits in the exchanges, and the connection stops reading from the
socket until the application catches up (FlowControl, flow.py), so a client can never make us
buffer more than about one read's worth. Writes go through Output (output.py), which holds the
answers to pipelined requests to send them together; deadlines are the server's, armed through
Timers (timers.py); a connection that parses no more input lingers (Linger, linger.py). What is
left here is the part that needs all of them: routing input, moving the current request through
its stages, the order of pipelined requests (Pipeline, pipeline.py), refusals and closing.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tornado import gen, httputil
from tornado.iostream import StreamClosedError
from tornado.log import app_log, gen_log

from .. import rules
from ..compat import release_transport
from ..http1policy import refusal_from_head
from ..refusals import Refusal
from .delegates import ProxyContext
from .exchange import BODY, HANDLER, HEAD, Exchange, Stage
from .flow import FlowControl
from .linger import Linger
from .output import HOLD_BYTES, HOLD_MAX, Output
from .parsing import BODY_PAUSE_BYTES
from .pipeline import MAX_PIPELINED, Pipeline
from .reader import Reader
from .stream import DetachedStream

if TYPE_CHECKING:
    from .server import FastHTTPServer

__all__ = ["Connection", "Exchange", "Stage", "TLSSocket", "FEED_SLICE", "MAX_PIPELINED", "HOLD_MAX",
           "HOLD_BYTES"]

# Reads longer than this are parsed a slice at a time; once MAX_PIPELINED requests wait, the
# rest of the read stays unparsed until they are answered (pipeline.py).
FEED_SLICE = 16 * 1024

CONTINUE = b"HTTP/1.1 100 (Continue)\r\n\r\n"


class Connection(asyncio.Protocol):
    """The asyncio protocol of one client connection; also the request context handlers see."""

    __slots__ = ("server", "timers", "flow", "reader", "transport", "remote_ip", "protocol",
                 "address", "pipeline", "stream", "closing", "linger", "output")

    def __init__(self, server: FastHTTPServer) -> None:
        self.server = server
        self.timers = server.timers
        loop, done = server.loop, server.done
        assert loop is not None and done is not None  # a server serves once bound to its loop
        self.flow = FlowControl(loop, done)
        self.output = Output()
        self.reader = Reader(server.sink)
        self.transport: asyncio.Transport | None = None
        self.remote_ip = "0.0.0.0"  # a Unix socket's peer has no IP (as in Tornado)
        self.protocol = server.protocol
        self.address: Any = None
        self.pipeline = Pipeline()  # the requests in order, and input held back from the parser
        self.stream: DetachedStream | None = None
        self.closing = False  # a bool, not a state: once set, nothing more is parsed or answered
        self.linger: Linger | None = None  # set once no more input is parsed (see linger.py)

    def __str__(self) -> str:
        return self.remote_ip

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A client connected: note its address, start a parser, start the idle timer."""
        self.transport = self.flow.transport = self.output.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.address = peer
        if isinstance(peer, tuple) and peer:
            self.remote_ip = peer[0]
        self.reader.start()
        self.server.connection_made(self)

    def data_received(self, data: bytes | memoryview) -> None:
        """Input from the client: parse it, or hand it to whoever owns the connection now."""
        if self.stream is not None:
            self.stream.feed(data)
            return
        linger = self.linger
        if linger is not None:
            if linger.discard(len(data)):
                self.abort()
            return
        if self.closing:
            return
        pipeline = self.pipeline
        # attribute reads, not holds_input(): this runs on every read
        if pipeline.tail is not None or pipeline.backlog is not None:
            pipeline.hold(data)
            return
        self.feed(data)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse input and let the application act on what is complete."""
        if len(data) <= FEED_SLICE:
            self.reader.parse(self, data)
        else:
            # A read can hold thousands of tiny pipelined requests, each far bigger once parsed:
            # parse a slice at a time and keep the rest raw once enough requests are waiting.
            pipeline = self.pipeline
            view = memoryview(data)
            size = len(view)
            pos = 0
            while pos < size:
                if pipeline.tail is not None:
                    pipeline.hold(view[pos:])
                    break
                if self.linger is not None or self.closing:
                    break
                if pipeline.full():
                    pipeline.hold_backlog(view[pos:])
                    self.flow.pause_reading()
                    break
                self.reader.parse(self, view[pos:pos + FEED_SLICE])
                pos += FEED_SLICE
        self.advance()

    def eof_received(self) -> bool | None:
        """The client closed its side."""
        # like Tornado: a client that stops sending is gone (the transport closes itself)
        return None

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark: writes now wait."""
        self.flow.pause_writing()
        self.timers.write_stalled(self)  # send_timeout: it must drain, or the connection goes

    def resume_writing(self) -> None:
        """The transport drained: wake the writers, serve a request held back."""
        self.flow.resume_writing()
        self.timers.write_flowing(self)
        ex = self.pipeline.current
        if ex is not None and ex.stage is HEAD:
            self.advance()

    @property
    def heads(self) -> int:
        """Request heads parsed so far (the header_timeout sweep reads it)."""
        return self.reader.heads

    @property
    def write_paused(self) -> bool:
        """True while the transport holds more than its high-water mark (the send sweep reads it)."""
        return self.flow.writing_paused

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: tell whoever was using it, drop references."""
        server = self.server
        server.connection_lost(self)
        self.closing = True
        release_transport(self.transport)
        self.transport = self.output.transport = None
        self.reader.stop(self)
        if self.linger is not None:
            self.linger.cancel()
        ex = self.pipeline.current
        self.pipeline.clear()
        if ex is not None and ex.delegate is not None and not ex.detached:
            delegate = ex.delegate
            ex.delegate = None
            if ex.stage is not HANDLER:
                # the delegate was still receiving the request: it hears it will not complete
                try:
                    delegate.on_connection_close()
                except Exception:
                    app_log.error("Uncaught exception", exc_info=True)
            elif not ex.finished and ex.close_callback is not None:
                # the handler is producing the response for a client that has gone
                callback = ex.close_callback
                ex.close_callback = None
                try:
                    callback()
                except Exception:
                    app_log.error("Uncaught exception", exc_info=True)
        self.flow.lost(exc)
        if self.stream is not None:
            self.stream.connection_lost(exc)

    # --- driving the current request ---

    def advance(self) -> None:
        """Take the current request as far as the data and the application allow."""
        pipeline = self.pipeline
        ex = pipeline.current  # plain reads of current here and below: once per step of a request
        while ex is not None and ex.waiting is None and not self.closing:
            stage = ex.stage
            if stage is HEAD:
                if ex.error is not None:
                    self.fail(ex)
                    return
                if not ex.head_done:
                    return
                if self.flow.writing_paused:
                    self.timers.head_arrived(self)  # the idle timer stops; send_timeout runs
                    return
                self.dispatch(ex)
            elif stage is BODY:
                if ex.body is not None:
                    self.deliver(ex)
                elif ex.error is not None:
                    self.fail(ex)
                    return
                elif ex.complete:
                    self.read_done(ex)
                else:
                    return
            else:
                return
            if pipeline.current is not ex:
                return

    def dispatch(self, ex: Exchange) -> None:
        """The head is complete: hand it to a new delegate of the Application."""
        server = self.server
        ex.stage = BODY
        server.request_started(self)  # busy; the idle/head timer stops
        if server.xheaders:
            ex.proxy = ProxyContext(self, ex.headers, server.trusted_hosts)
        if server.no_keep_alive:
            ex.keep_alive = False
        start_line = ex.start_line
        assert start_line is not None  # set with head_done
        try:
            delegate = ex.delegate = server.start_request(self, ex)
            result = delegate.headers_received(start_line, ex.headers)
        except httputil.HTTPInputError as exc:
            ex.error = (400, str(exc))
            self.fail(ex)
            return
        except Exception:
            app_log.error("Uncaught exception", exc_info=True)
            self.abort()
            return
        if ex.detached:
            return
        if result is not None:
            future = gen.convert_yielded(result)
            if not future.done():
                ex.waiting = future
                future.add_done_callback(self._headers_settled)
                return
            if not self._settled_ok(future):
                return
        if ex.length is not None or not ex.complete:
            self.body_starts(ex)

    def _headers_settled(self, future: asyncio.Future[Any]) -> None:
        ex = self.pipeline.current
        if ex is None or ex.waiting is not future or self.closing:
            return
        ex.waiting = None
        if self._settled_ok(future):
            self.body_starts(ex)
            self.advance()

    def _settled_ok(self, future: asyncio.Future[Any]) -> bool:
        exc = None if future.cancelled() else future.exception()
        if exc is None:
            return True
        if isinstance(exc, httputil.HTTPInputError):
            ex = self.pipeline.current
            assert ex is not None  # a settled future of the current request
            ex.error = (400, str(exc))
            self.fail(ex)
        else:
            app_log.error("Uncaught exception", exc_info=(type(exc), exc, exc.__traceback__))
            self.abort()
        return False

    def body_starts(self, ex: Exchange) -> None:
        """The delegate is ready for the body: check its size, send 100 Continue, start the timer."""
        if ex.detached or self.closing or self.pipeline.current is not ex:
            return
        if ex.length is not None and refusal_from_head(ex.length, ex.body_limit()) is not None:
            # after headers_received: a @stream_request_body handler's prepare() may have raised
            # the limit (request.connection.set_max_body_size); refused before the body is read
            self.reject_too_large(ex)
            return
        if not ex.complete:
            if (not ex.finished and ex.body is None
                    and ex.headers.get("Expect", "").lower() == "100-continue"):
                self.output.send(CONTINUE)
            timeout = ex.body_timeout
            if timeout is None:
                timeout = self.server.body_timeout
            if timeout:
                ex.body_timer = True
                self.timers.body_started(self, timeout)

    def deliver(self, ex: Exchange) -> None:
        """Pass the body parsed so far to the delegate: coalesced, in pieces of at most chunk_size.

        A piece that the delegate takes asynchronously (its data_received returns a pending
        future) holds back the next until it is done, as Tornado's flow control does.
        """
        chunks = ex.body
        assert chunks is not None  # advance() delivers only a body it holds
        size = ex.body_bytes
        if ex.received + size > ex.body_limit():
            ex.body = None
            ex.error = (400, "chunked body too large" if ex.chunked else "body too large")
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        piece = self.server.chunk_size
        if size > piece:
            view = data if isinstance(data, memoryview) else memoryview(data)
            ex.body = [view[piece:]]
            ex.body_bytes = size - piece
            data = bytes(view[:piece])
        else:
            ex.body = None
            ex.body_bytes = 0
            if type(data) is not bytes:
                data = bytes(data)
        ex.received += len(data)
        if self.flow.reading_paused:
            self.maybe_resume()
        if ex.finished:
            ex.body = None
            ex.body_bytes = 0
            return  # the response went out early; the rest of the body is not wanted
        delegate = ex.delegate
        assert delegate is not None  # set by dispatch(), dropped once the response is done
        try:
            result = delegate.data_received(data)
        except httputil.HTTPInputError as exc:
            ex.body = None
            ex.error = (400, str(exc))
            return
        except Exception:
            app_log.error("Uncaught exception", exc_info=True)
            self.abort()
            return
        if result is not None:
            future = gen.convert_yielded(result)
            if not future.done():
                ex.waiting = future
                future.add_done_callback(self._body_settled)
            elif not self._settled_ok(future):
                ex.body = None

    def _body_settled(self, future: asyncio.Future[Any]) -> None:
        ex = self.pipeline.current
        if ex is None or ex.waiting is not future or self.closing:
            return
        ex.waiting = None
        if self._settled_ok(future):
            self.advance()

    def read_done(self, ex: Exchange) -> None:
        """The whole request is in: let the delegate run the handler."""
        ex.stage = HANDLER
        if ex.body_timer:
            self.timers.body_ended(self)
        if ex.finished:
            return
        delegate = ex.delegate
        assert delegate is not None
        try:
            delegate.finish()
        except httputil.HTTPInputError as exc:
            ex.error = (400, str(exc))
            ex.stage = BODY  # so that the delegate also hears the connection close
            self.fail(ex)
        except Exception:
            app_log.error("Uncaught exception", exc_info=True)
            self.abort()

    def response_done(self, ex: Exchange) -> None:
        """The application finished its response; close or go on with the next request."""
        server = self.server
        stage = ex.stage
        pipeline = self.pipeline
        if (pipeline.queue is None and stage is HANDLER and ex.keep_alive and not ex.upgrade
                and not server.draining):
            # the common case first: the connection waits for its next request (attributes
            # read and written directly: a call to next() here would cost every request)
            ex.delegate = None
            ex.close_callback = None
            pipeline.current = None
            server.request_done(self, True)  # not busy; the idle timer starts
            if pipeline.backlog is not None:
                self.flow.loop.call_soon(self.next_request)
            elif self.flow.reading_paused:
                self.maybe_resume()
            return
        server.request_done(self)
        if stage is not HANDLER:
            # answered before the request was fully read: the rest of it is in the way
            self.close_transport(linger=True)
            return
        ex.delegate = None
        ex.close_callback = None
        if ex.upgrade:
            pipeline.drop(ex)
            # detach() may follow right after finish() (WebSocket): decide on the next tick
            self.flow.loop.call_soon(self.after_upgrade, ex.keep_alive)
            return
        queued = pipeline.queue is not None
        if not ex.keep_alive or server.draining or not queued:
            pipeline.drop(ex)
            self.close_transport(linger=queued or self.reader.parsing is not None)
            return
        pipeline.next()
        self.flow.loop.call_soon(self.next_request)

    def next_request(self) -> None:
        """Serve a pipelined request once the previous response is out."""
        if self.closing:
            return
        pipeline = self.pipeline
        ex = pipeline.current
        if ex is not None and not ex.head_done:
            self.timers.idle(self)
        # runs for every pipelined request: the backlog is read before room() is asked
        if pipeline.backlog is not None and pipeline.room():
            backlog = pipeline.take_backlog()
            assert backlog is not None
            self.feed(backlog)  # advances too
        else:
            self.advance()
        ex = pipeline.current
        if self.output.held is not None and ex is not None:
            # runs after the first step of the handler just started: still unanswered by then
            # (it waits on something), the responses before it go out now
            self.flow.loop.call_soon(self.release_held, ex)
        if self.flow.reading_paused:
            self.maybe_resume()

    def release_held(self, ex: Exchange) -> None:
        """The handler of ``ex`` is still at work: what is held goes out without waiting for it."""
        if self.pipeline.current is ex and not ex.finished:
            self.output.flush()

    def after_upgrade(self, keep_alive: bool) -> None:
        """An upgrade request was answered without taking over the connection: back to HTTP."""
        if self.stream is not None or self.closing:
            return
        if not keep_alive or self.server.draining:
            self.close_transport(linger=True)
            return
        tail = self.pipeline.take_tail()
        self.timers.idle(self)
        self.maybe_resume()
        if tail:
            self.feed(tail)

    # --- refusing requests ---

    def discard_input(self) -> None:
        """Parse nothing more on this connection (it closes after the error response)."""
        if self.linger is None:
            self.linger = Linger()
        self.flow.pause_reading()

    def fail(self, ex: Exchange) -> None:
        """Answer the current request with its error status (unless a response started) and close.

        The refusal is logged as Tornado logs a malformed message (its words where it has them,
        see parsing.describe), rendered and recorded by the server's RefusalHandler.
        """
        assert ex.error is not None
        status, detail = ex.error
        self.server.request_done(self)
        if status == 408:
            gen_log.info("Timeout reading body from %s", self)
        elif status == 431:
            gen_log.info("Unsatisfiable read, closing connection: %s", detail)  # Tornado's words
        elif status != 500:
            gen_log.info("Malformed HTTP message from %s: %s", self, detail)
        if not ex.started and self.transport is not None:
            ex.started = True
            self.output.send(self.server.refuse(self.refusal(ex, status, detail)))
        self.close_transport(linger=True)

    def refusal(self, ex: Exchange, status: int, detail: str) -> Refusal:
        """What the RefusalHandler is told of a refused request (what of its head is known)."""
        start_line = ex.start_line
        if start_line is None:
            return Refusal(status, detail, remote_ip=self.remote_ip)
        return Refusal(status, detail, start_line[0], start_line[1], start_line[2], ex.headers,
                       ex.context.remote_ip)

    def reject_too_large(self, ex: Exchange) -> None:
        """413 from the head, before reading the body (the client may be waiting for 100 Continue)."""
        assert ex.length is not None  # refused for its Content-Length
        violation = rules.too_large(ex.length, ex.body_limit())
        ex.error = (violation.status, violation.detail)
        ex.finished = True
        self.fail(ex)

    def timed_out(self, reading_body: bool) -> None:
        """The idle/head timer or the body timer ran out."""
        if self.closing:
            return
        ex = self.pipeline.current
        if reading_body and ex is not None:
            ex.error = (408, "the request body did not arrive in time")
            self.fail(ex)
            return
        self.close_transport()

    # --- flow control ---

    def maybe_resume(self) -> None:
        """Read again once nothing we hold is waiting on the application."""
        pipeline = self.pipeline
        if not self.flow.reading_paused or pipeline.holds_input():
            return
        if self.linger is None:
            if pipeline.queue is not None:
                return
            ex = pipeline.current
            if ex is not None and ex.body_bytes > BODY_PAUSE_BYTES:
                return
        self.flow.resume_reading()

    # --- closing ---

    def detach(self, ex: Exchange) -> DetachedStream:
        """Hand the connection over to a stream; HTTP processing stops here."""
        self.output.flush()
        self.server.detached(self)
        self.pipeline.clear()
        self.reader.stop(self)
        transport = self.transport
        assert transport is not None  # detach() is called from a handler of an open connection
        stream = self.stream = DetachedStream(self, self.flow, transport)
        tail = self.pipeline.take_tail()
        if tail:
            stream.feed(tail)
        self.flow.resume_reading()
        return stream

    def close_transport(self, linger: bool = False) -> None:
        """Close after the buffered output is sent; with linger, drain input briefly first."""
        if self.closing or self.transport is None:
            return
        self.output.flush()
        self.closing = True
        self.timers.closing(self)
        transport = self.transport
        if linger and transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:  # reset by the peer while reading was paused (nothing noticed it)
                transport.abort()
                return
            if self.linger is None:
                self.linger = Linger()
            self.linger.start(self.flow.loop, self.abort)
            self.pipeline.take_tail()  # thrown away: nobody takes the connection over now
            self.flow.resume_reading()
            return
        transport.close()
        if transport.get_write_buffer_size():
            # a client that never reads must not hold the socket forever (send_timeout)
            self.timers.write_stalled(self)

    def abort(self) -> None:
        """Close now, dropping anything unsent."""
        transport = self.transport
        if transport is not None:
            self.output.flush()  # the answers before this one were complete
            self.closing = True
            self.timers.closing(self)
            transport.abort()

    # --- the stream-ish view handlers get as request.connection.stream ---

    def close(self) -> None:
        """Close the connection (request.connection.stream.close())."""
        self.close_transport()

    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return self.closing or self.transport is None

    @property
    def socket(self) -> Any:
        """The transport's socket (with getpeercert() over TLS, as an SSLSocket has)."""
        transport = self.transport
        if transport is None:
            return None
        sock = transport.get_extra_info("socket")
        ssl_object = transport.get_extra_info("ssl_object")
        return sock if ssl_object is None else TLSSocket(sock, ssl_object)

    def write(self, data: bytes | memoryview) -> asyncio.Future[None]:
        """Write raw bytes (``request.connection.stream.write``): no HTTP framing is added.

        The application then answers by itself; the future resolves as any write's does.
        """
        if self.closing or self.transport is None:
            raise StreamClosedError()
        ex = self.pipeline.current
        if ex is not None:
            ex.started = True  # no refusal may be written over it
        self.output.send(data)
        return self.flow.write_future()

    def set_nodelay(self, value: bool) -> None:
        """asyncio and uvloop set TCP_NODELAY already; kept for interface compatibility."""


class TLSSocket:
    """A TLS connection's socket as Tornado code uses it: the socket, plus getpeercert()."""

    __slots__ = ("_sock", "_ssl")

    def __init__(self, sock: Any, ssl_object: Any) -> None:
        self._sock = sock
        self._ssl = ssl_object

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The client's certificate (None without one), as ssl.SSLSocket.getpeercert."""
        return self._ssl.getpeercert(binary_form)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
