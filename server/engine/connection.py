"""One HTTP/1.1 connection: an asyncio Protocol that parses with llhttp and serves Tornado delegates.

Every request on a connection is an Exchange, which is the `tornado.httputil.HTTPConnection` the
Application's delegate (and so every RequestHandler) writes its response to. The parser runs ahead
of the application (pipelining, bodies arriving while a handler is busy); what it has parsed waits
in the exchanges, and the connection stops reading from the socket until the application catches
up, so a client can never make us buffer more than about one read's worth.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

import httptools
from tornado import gen, httputil
from tornado.iostream import StreamClosedError
from tornado.log import app_log, gen_log

from ..headers import FAST_HEADERS, make_headers
from ..responses import error_response, too_large_message
from .stream import DetachedStream

if TYPE_CHECKING:
    from .server import FastHTTPServer

# Exchange stages: waiting for (or holding) the request head; delivering the body to the
# delegate; body complete and the handler is producing the response.
HEAD, BODY, HANDLER = 0, 1, 2

# Body bytes parsed but not yet taken by the delegate above this pause reading from the socket.
BODY_PAUSE_BYTES = 256 * 1024
# A response that must close the connection while the client may still be sending: stop writing,
# read and discard for this long / this much (like nginx's lingering_close), so that closing with
# unread input does not make the kernel reset the connection and lose our answer.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 4 * 1024 * 1024
# Reads longer than this are parsed a slice at a time; once this many pipelined requests wait,
# the rest of the read stays unparsed until they are answered.
FEED_SLICE = 16 * 1024
MAX_PIPELINED = 16
# Header-name spellings remembered per server (bounded: names are client-chosen).
NAME_CACHE_SIZE = 512

CONTINUE = b"HTTP/1.1 100 (Continue)\r\n\r\n"
VERSIONS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
RequestStartLine = httputil.RequestStartLine
_new_tuple = tuple.__new__


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing a request the server refuses."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ParserSink:
    """llhttp's callbacks for whichever connection is being fed; one per server.

    httptools keeps the callables it finds on its protocol object. Handing every parser the same
    pre-bound methods (instead of a connection's own) saves eight bound-method objects per
    connection; `conn` says which connection the current feed_data call belongs to.
    """

    __slots__ = ("conn", "small_read", "server", "names", "methods", "waiting_head", "on_url",
                 "on_header", "on_headers_complete", "on_body", "on_message_complete")

    def __init__(self, server: "FastHTTPServer") -> None:
        self.conn: Connection | None = None
        # True while the bytes fed so far to the current head cannot exceed max_header_size
        self.small_read = True
        self.server = server
        self.names: dict[bytes, str] = {}
        self.methods: dict[bytes, str] = {}
        self.waiting_head = server.waiting_head
        self.on_url = self._url
        self.on_header = self._header
        self.on_headers_complete = self._headers_complete
        self.on_body = self._body
        self.on_message_complete = self._message_complete

    def _url(self, url: bytes) -> None:
        # a message starts with its target (llhttp's on_message_begin would be one more call)
        conn = self.conn
        ex = conn.parsing
        if ex is not None:
            ex.url += url  # the rest of a target split across reads
            return
        ex = conn.parsing = Exchange(conn)
        ex.url = url
        if conn.current is None:
            conn.current = ex
        else:
            # pipelined: it waits until the responses before it are out
            if conn.queue is None:
                conn.queue = [ex]
            else:
                conn.queue.append(ex)
            conn.pause_reading()

    def _header(self, name: bytes, value: bytes) -> None:
        ex = self.conn.parsing
        if ex.head_done:
            return  # a trailer after a chunked body: nothing in Tornado reads them
        normal = self.names.get(name)
        if normal is None:
            normal = "-".join([word.capitalize() for word in name.decode("latin-1").split("-")])
            if len(self.names) < NAME_CACHE_SIZE:
                self.names[name] = normal
        if value and value[-1] in (32, 9):
            value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace; HTTP says it isn't part
        values = ex.headers.get(normal)
        if values is None:
            ex.headers[normal] = [value.decode("latin-1")]
        else:
            values.append(value.decode("latin-1"))

    def _headers_complete(self) -> None:
        conn = self.conn
        ex = conn.parsing
        parser = conn.parser
        conn.heads += 1
        raw_method = parser.get_method()
        method = self.methods.get(raw_method)
        if method is None:
            method = raw_method.decode("ascii")
            self.methods[raw_method] = method  # llhttp knows a fixed set of methods: bounded
        version = VERSIONS.get(parser.get_http_version())
        if version is None:
            raise _Reject(400, "unsupported HTTP version")
        url = ex.url
        if url is None:
            raise _Reject(400, "missing request target")
        as_list = ex.headers
        if not self.small_read:
            # this head may be larger than the limit: measure it (close enough: line ends and
            # separators counted as 4 bytes a line)
            limit = self.server.max_header_size
            size = len(url) + len(method) + 12 + sum(
                len(name) + len(value) + 4 for name, values in as_list.items() for value in values)
            if size > limit:
                raise _Reject(431, f"request head larger than {limit} bytes")
        if "Transfer-Encoding" in as_list:
            # as strict as Tornado: anything but exactly "chunked" could frame differently in a
            # proxy in front of us (request smuggling); llhttp already refuses TE with CL
            encodings = as_list["Transfer-Encoding"]
            # (and RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing)
            if (len(encodings) != 1 or encodings[0].lower() != "chunked"
                    or "Content-Length" in as_list or version != "HTTP/1.1"):
                raise _Reject(400, "unsupported Transfer-Encoding")
        else:
            length = as_list.get("Content-Length")
            if length is not None:
                ex.length = int(length[0])  # llhttp allows digits only, and one value
        ex.start_line = _new_tuple(RequestStartLine, (method, url.decode("latin-1"), version))
        ex.headers = make_headers(as_list)
        ex.head_done = True
        if ("Upgrade" in as_list or method == "CONNECT") and parser.should_upgrade():
            if ex.length or "Transfer-Encoding" in as_list:
                # llhttp hands whatever follows an upgrade head over as the new protocol's
                # bytes, so the body would never reach the handler
                raise _Reject(400, "a request body with Upgrade is not supported")
            ex.upgrade = True
        connection = as_list.get("Connection")
        if connection is None:
            ex.keep_alive = version == "HTTP/1.1"
        else:
            tokens = [token.strip().lower() for value in connection for token in value.split(",")]
            if version == "HTTP/1.1":
                ex.keep_alive = "close" not in tokens
            else:
                ex.keep_alive = "keep-alive" in tokens
        if ex is conn.current:
            self.waiting_head.pop(conn, None)  # the head timer stops

    def _body(self, data: bytes) -> None:
        conn = self.conn
        ex = conn.parsing
        if ex.body is None:
            ex.body = [data]
        else:
            ex.body.append(data)
        ex.body_bytes += len(data)
        if ex.body_bytes > BODY_PAUSE_BYTES:
            conn.pause_reading()

    def _message_complete(self) -> None:
        conn = self.conn
        conn.parsing.complete = True
        conn.parsing = None
        conn.completed += 1


class Exchange(httputil.HTTPConnection):
    """One request and its response: the HTTPConnection that Tornado's delegates write to."""

    # Fields every request sets live in slots; the rest are class-level defaults that a request
    # overrides (in its instance dict) only when it has a body, an error, a custom limit, ...
    __slots__ = ("conn", "delegate", "start_line", "headers", "url", "head_done", "complete",
                 "stage", "keep_alive", "remaining", "started", "finished", "close_callback")

    body: list[bytes] | None = None  # parsed body pieces not yet given to the delegate
    body_bytes = 0  # their size
    received = 0  # body bytes given to the delegate so far
    length: int | None = None  # Content-Length
    waiting: "asyncio.Future[Any] | None" = None  # the delegate's pending future (flow control)
    upgrade = False
    error: tuple[int, str] | None = None  # (status, detail) the request is refused with
    chunking = False
    max_body_size: int | None = None  # None: the server's
    body_timeout: float | None = None  # None: the server's
    detached = False

    def __init__(self, conn: "Connection") -> None:
        self.conn = conn
        self.delegate: httputil.HTTPMessageDelegate | None = None
        self.start_line: httputil.RequestStartLine | None = None
        self.headers: Any = {}  # {name: [values]} while parsing, then an HTTPHeaders
        self.url: bytes | None = None
        self.head_done = False
        self.complete = False
        self.stage = HEAD
        self.keep_alive = False
        self.remaining: int | None = None
        self.started = False
        self.finished = False
        self.close_callback: Callable[[], None] | None = None

    def body_limit(self) -> int:
        """The body size limit of this request."""
        limit = self.max_body_size
        return self.conn.server.max_body_size if limit is None else limit

    # --- what HTTPServerRequest and handlers read ---

    @property
    def context(self) -> "Connection":
        """The connection: remote_ip, protocol and address, like Tornado's _HTTPRequestContext."""
        return self.conn

    @property
    def stream(self) -> "Connection":
        """Minimal stream view (close/closed/set_nodelay/socket) for code that reaches for it."""
        return self.conn

    # --- HTTPConnection ---

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        """Called if the connection closes while the response is still being produced."""
        self.close_callback = callback

    def set_body_timeout(self, timeout: float) -> None:
        """Override the body timeout for this request (before its body is read)."""
        self.body_timeout = timeout

    def set_max_body_size(self, max_body_size: int) -> None:
        """Override the body size limit for this request (before its body is read)."""
        self.max_body_size = max_body_size

    def detach(self) -> DetachedStream:
        """Take over the connection (WebSocket): returns an IOStream-like stream, HTTP stops."""
        self.detached = True
        self.close_callback = None
        return self.conn.detach(self)

    def write_headers(self, start_line: Any, headers: httputil.HTTPHeaders,
                      chunk: bytes | None = None) -> "asyncio.Future[None]":
        """Write the status line and headers (and a first chunk of the body)."""
        conn = self.conn
        transport = conn.transport
        if transport is None or conn.closing:
            return conn.closed_future()
        request = self.start_line
        method = request[0]
        http11 = request[2] == "HTTP/1.1"
        code = start_line[1]
        self.started = True
        # {name: [values]}: Tornado 6.6's own dict (read directly, see server.headers) or a copy
        as_list = headers._as_list if FAST_HEADERS else {n: headers.get_list(n) for n in headers}
        length = as_list.get("Content-Length")
        if method == "HEAD" or code == 304:
            self.remaining = 0
        elif length is not None:
            self.remaining = int(length[0])
        keep_alive = self.keep_alive and self.stage == HANDLER and not conn.server.draining
        if length is None and code >= 200 and code != 204 and code != 304 and method != "HEAD":
            if http11:
                self.chunking = True
                headers["Transfer-Encoding"] = "chunked"
                as_list["Transfer-Encoding"] = ["chunked"]
            else:
                keep_alive = False  # HTTP/1.0 without a length: the body ends when we close
        if keep_alive and "Connection" in as_list and as_list["Connection"][0].lower() == "close":
            keep_alive = False  # the application asked to close (e.g. while draining)
        if not keep_alive:
            self.keep_alive = False
            if http11 and code != 101:
                headers["Connection"] = "close"
                as_list["Connection"] = ["close"]
        elif not http11:
            headers["Connection"] = "Keep-Alive"
            as_list["Connection"] = ["Keep-Alive"]
        lines = [f"{name}: {value}\r\n" for name, values in as_list.items() for value in values]
        text = f"HTTP/1.1 {code} {start_line[2]}\r\n{''.join(lines)}\r\n"
        count = len(lines) + 2
        if text.count("\n") != count or text.count("\r") != count:
            raise ValueError(f"Illegal characters (CR or LF) in header: {text!r}")
        data = text.encode("latin-1")
        if chunk:
            if self.remaining is None and not self.chunking:
                data += chunk
            else:
                data += self._frame(chunk)
        transport.write(data)
        return conn.server.done if not conn.write_paused else conn.write_future()

    def write(self, chunk: bytes) -> "asyncio.Future[None]":
        """Write a piece of the body (chunk-framed when the response is chunked)."""
        conn = self.conn
        if conn.transport is None or conn.closing:
            return conn.closed_future()
        if chunk:
            conn.transport.write(self._frame(chunk))
        return conn.write_future()

    def _frame(self, chunk: bytes) -> bytes:
        if self.remaining is not None:
            self.remaining -= len(chunk)
            if self.remaining < 0:
                self.conn.abort()  # stop the framing error from reaching the client
                raise httputil.HTTPOutputError("Tried to write more data than Content-Length")
        if self.chunking and chunk:
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        return chunk

    def finish(self) -> None:
        """The response is complete: end the chunked body and move on to the next request."""
        conn = self.conn
        open_ = conn.transport is not None and not conn.closing
        if self.remaining and open_:
            conn.abort()
            raise httputil.HTTPOutputError(
                "Tried to write %d bytes less than Content-Length" % self.remaining)
        if self.chunking and open_:
            conn.transport.write(b"0\r\n\r\n")
        self.finished = True
        if conn.current is self and not self.detached:
            conn.response_done(self)


class Connection(asyncio.Protocol):
    """The asyncio protocol of one client connection; also the request context handlers see."""

    __slots__ = ("server", "transport", "parser", "remote_ip", "protocol", "address", "current",
                 "parsing", "queue", "completed", "heads", "head_fed", "head_slack", "paused",
                 "write_paused",
                 "waiters", "tail", "backlog", "stream", "closing", "discard", "linger")

    def __init__(self, server: "FastHTTPServer") -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = None
        self.remote_ip = "0.0.0.0"  # a Unix socket's peer has no IP (as in Tornado)
        self.protocol = server.protocol
        self.address: Any = None
        self.current: Exchange | None = None  # the request being answered
        self.parsing: Exchange | None = None  # the request the parser is filling in
        self.queue: list[Exchange] | None = None  # pipelined requests after current
        self.completed = 0
        self.heads = 0
        self.head_fed = 0  # bytes of the current, incomplete head read so far (at least)
        self.head_slack = 0  # ... plus at most this many
        self.paused = False
        self.write_paused = False
        self.waiters: list[asyncio.Future[None]] | None = None
        self.tail: bytearray | None = None  # input after an upgrade request's head
        self.backlog: bytes | None = None  # input not parsed yet because requests are queued
        self.stream: DetachedStream | None = None
        self.closing = False
        self.discard = -1  # >= 0 while lingering: bytes of input thrown away so far
        self.linger: asyncio.TimerHandle | None = None

    def __str__(self) -> str:
        return self.remote_ip

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A client connected: note its address, start a parser, start the idle timer."""
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.address = peer
        if isinstance(peer, tuple) and peer:
            self.remote_ip = peer[0]
        self.parser = httptools.HttpRequestParser(self.server.sink)
        self.server.connection_made(self)

    def data_received(self, data: bytes | memoryview) -> None:
        """Input from the client: parse it, or hand it to whoever owns the connection now."""
        if self.stream is not None:
            self.stream.feed(data)
            return
        if self.discard >= 0 or self.closing:
            self.discard += len(data)
            if self.discard > LINGER_MAX_BYTES:
                self.abort()
            return
        if self.tail is not None:
            self.tail += data
            return
        if self.backlog is not None:
            self.backlog += data
            return
        self.feed(data)

    def feed(self, data: bytes | bytearray) -> None:
        """Parse input and let the application act on what is complete."""
        if len(data) <= FEED_SLICE:
            self.parse(data)
        else:
            # A read can hold thousands of tiny pipelined requests, each far bigger once parsed:
            # parse a slice at a time and keep the rest raw once enough requests are waiting.
            view = memoryview(data)
            size = len(view)
            pos = 0
            while pos < size:
                if self.tail is not None:
                    self.tail += view[pos:]
                    break
                if self.discard >= 0 or self.closing:
                    break
                if self.queue is not None and len(self.queue) >= MAX_PIPELINED:
                    self.backlog = bytes(view[pos:])
                    self.pause_reading()
                    break
                self.parse(view[pos:pos + FEED_SLICE])
                pos += FEED_SLICE
        self.advance()

    def parse(self, data: bytes | bytearray | memoryview) -> None:
        """Run the parser over data; its callbacks fill in this connection's exchanges."""
        sink = self.server.sink
        sink.conn = self  # left set afterwards: cleared when the connection goes
        sink.small_read = self.head_fed + self.head_slack + len(data) <= self.server.max_header_size
        completed, heads = self.completed, self.heads
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.tail = bytearray(data[exc.args[0]:])
            self.pause_reading()
        except httptools.HttpParserError as exc:
            self.parse_error(exc)
        ex = self.parsing
        if ex is not None and not ex.head_done and ex.error is None:
            self.server.head_started(self)  # header_timeout runs from a head's first read
            # llhttp has no size limit of its own: count the reads spent inside one head
            if completed == self.completed and heads == self.heads:
                self.head_fed += len(data)  # all of it belongs to the head (bar blank lines)
                limit = self.server.max_header_size
                if self.head_fed > limit:
                    ex.error = (431, f"request head larger than {limit} bytes")
                    self.discard_input()
            else:
                # the head began somewhere in this read: up to all of it may be the head's
                self.head_fed = 0
                self.head_slack = len(data)
        elif self.head_fed or self.head_slack:
            self.head_fed = self.head_slack = 0

    def eof_received(self) -> bool | None:
        """The client closed its side."""
        # like Tornado: a client that stops sending is gone (the transport closes itself)
        return None

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark: writes now wait."""
        self.write_paused = True
        self.server.write_stalled(self)  # send_timeout: it must drain, or the connection goes

    def resume_writing(self) -> None:
        """The transport drained: wake the writers, serve a request held back."""
        self.write_paused = False
        self.server.write_flowing(self)
        waiters = self.waiters
        if waiters:
            self.waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if self.current is not None and self.current.stage == HEAD:
            self.advance()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: tell whoever was using it, drop references."""
        server = self.server
        server.connection_lost(self)
        if server.sink.conn is self:
            server.sink.conn = None
        self.closing = True
        self.transport = None
        self.parser = None
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        ex = self.current
        self.current = self.parsing = self.queue = None
        if ex is not None and ex.delegate is not None and not ex.detached:
            delegate = ex.delegate
            ex.delegate = None
            if ex.stage != HANDLER:
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
        waiters = self.waiters
        if waiters:
            self.waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(StreamClosedError(real_error=exc))
                    waiter.exception()
        if self.stream is not None:
            self.stream.connection_lost(exc)

    # --- driving the current request ---

    def advance(self) -> None:
        """Take the current request as far as the data and the application allow."""
        ex = self.current
        while ex is not None and ex.waiting is None and not self.closing:
            stage = ex.stage
            if stage == HEAD:
                if ex.error is not None:
                    self.fail(ex)
                    return
                if not ex.head_done or self.write_paused:
                    return
                self.dispatch(ex)
            elif stage == BODY:
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
            if self.current is not ex:
                return

    def dispatch(self, ex: Exchange) -> None:
        """The head is complete: hand it to a new delegate of the Application."""
        server = self.server
        ex.stage = BODY
        server.busy.add(self)
        length = ex.length
        if length is not None and length > server.max_body_size:
            self.reject_too_large(ex)
            return
        try:
            delegate = ex.delegate = server.start_request(self, ex)
            result = delegate.headers_received(ex.start_line, ex.headers)
        except httputil.HTTPInputError as exc:
            gen_log.info("Malformed HTTP message from %s: %s", self, exc)
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
        if length is not None or not ex.complete:
            self.body_starts(ex)

    def _headers_settled(self, future: "asyncio.Future[Any]") -> None:
        ex = self.current
        if ex is None or ex.waiting is not future or self.closing:
            return
        ex.waiting = None
        if self._settled_ok(future):
            self.body_starts(ex)
            self.advance()

    def _settled_ok(self, future: "asyncio.Future[Any]") -> bool:
        exc = None if future.cancelled() else future.exception()
        if exc is None:
            return True
        if isinstance(exc, httputil.HTTPInputError):
            ex = self.current
            ex.error = (400, str(exc))
            self.fail(ex)
        else:
            app_log.error("Uncaught exception", exc_info=(type(exc), exc, exc.__traceback__))
            self.abort()
        return False

    def body_starts(self, ex: Exchange) -> None:
        """The delegate is ready for the body: check its size, send 100 Continue, start the timer."""
        if ex.detached or self.closing or self.current is not ex:
            return
        if ex.length is not None and ex.length > ex.body_limit():
            ex.error = (400, "Content-Length too long")
            return
        if not ex.complete:
            if (not ex.finished and ex.body is None
                    and ex.headers.get("Expect", "").lower() == "100-continue"):
                self.transport.write(CONTINUE)
            timeout = ex.body_timeout
            if timeout is None:
                timeout = self.server.body_timeout
            if timeout:
                self.server.body_started(self, timeout)

    def deliver(self, ex: Exchange) -> None:
        """Pass the body parsed so far to the delegate (coalesced into one call)."""
        chunks = ex.body
        ex.body = None
        ex.body_bytes = 0
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        ex.received += len(data)
        if ex.received > ex.body_limit():
            ex.error = (400, "body too large")
            return
        if self.paused:
            self.maybe_resume()
        if ex.finished:
            return  # the response went out early; the rest of the body is not wanted
        try:
            result = ex.delegate.data_received(data)
        except httputil.HTTPInputError as exc:
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
            else:
                self._settled_ok(future)

    def _body_settled(self, future: "asyncio.Future[Any]") -> None:
        ex = self.current
        if ex is None or ex.waiting is not future or self.closing:
            return
        ex.waiting = None
        if self._settled_ok(future):
            self.advance()

    def read_done(self, ex: Exchange) -> None:
        """The whole request is in: let the delegate run the handler."""
        ex.stage = HANDLER
        if self.server.reading_body:
            self.server.body_ended(self)
        if ex.finished:
            return
        try:
            ex.delegate.finish()
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
        server.busy.discard(self)
        if ex.stage != HANDLER:
            # answered before the request was fully read: the rest of it is in the way
            self.close_transport(linger=True)
            return
        ex.delegate = None
        ex.close_callback = None
        if ex.upgrade:
            self.current = None
            # detach() may follow right after finish() (WebSocket): decide on the next tick
            server.loop.call_soon(self.after_upgrade, ex.keep_alive)
            return
        if not ex.keep_alive or server.draining:
            self.current = None
            self.close_transport(linger=self.queue is not None or self.parsing is not None)
            return
        queue = self.queue
        if queue is not None:
            self.current = queue.pop(0)
            if not queue:
                self.queue = None
            server.loop.call_soon(self.next_request)
            return
        self.current = None
        server.idle(self)
        if self.backlog is not None:
            server.loop.call_soon(self.next_request)
        elif self.paused:
            self.maybe_resume()

    def next_request(self) -> None:
        """Serve a pipelined request once the previous response is out."""
        if self.closing:
            return
        ex = self.current
        if ex is not None and not ex.head_done:
            self.server.idle(self)
        backlog = self.backlog
        if backlog is not None and (self.queue is None or len(self.queue) < MAX_PIPELINED // 2):
            self.backlog = None
            self.feed(backlog)  # advances too
        else:
            self.advance()
        if self.paused:
            self.maybe_resume()

    def after_upgrade(self, keep_alive: bool) -> None:
        """An upgrade request was answered without taking over the connection: back to HTTP."""
        if self.stream is not None or self.closing:
            return
        if not keep_alive or self.server.draining:
            self.close_transport(linger=True)
            return
        tail = self.tail
        self.tail = None
        self.server.idle(self)
        self.maybe_resume()
        if tail:
            self.feed(tail)

    # --- refusing requests ---

    def parse_error(self, exc: httptools.HttpParserError) -> None:
        """The parser refused the input: the request it was reading gets an error response."""
        context = exc.__context__
        if isinstance(context, _Reject):
            error = (context.status, context.detail)
        elif isinstance(exc, httptools.HttpParserCallbackError) and context is not None:
            app_log.error("HTTP parser callback failed",
                          exc_info=(type(context), context, context.__traceback__))
            error = (500, "internal error")
        else:
            gen_log.info("Malformed HTTP message from %s: %s", self, exc)
            error = (400, str(exc) or "malformed request")
        ex = self.parsing
        if ex is None:
            ex = Exchange(self)
            if self.current is None:
                self.current = ex
            elif self.queue is None:
                self.queue = [ex]
            else:
                self.queue.append(ex)
        ex.error = error
        self.parsing = None
        self.discard_input()

    def discard_input(self) -> None:
        """Parse nothing more on this connection (it closes after the error response)."""
        self.discard = 0
        self.pause_reading()

    def fail(self, ex: Exchange) -> None:
        """Answer the current request with its error status (unless a response started) and close."""
        status, detail = ex.error
        self.server.busy.discard(self)
        if not ex.started and self.transport is not None:
            ex.started = True
            path = ex.start_line[1].partition("?")[0] if ex.start_line else ""
            self.transport.write(error_response(status, detail, path))
        self.close_transport(linger=True)

    def reject_too_large(self, ex: Exchange) -> None:
        """413 from the head, before reading the body (the client may be waiting for 100 Continue)."""
        limit = self.server.max_body_size
        message = too_large_message(ex.length, limit)
        ex.started = ex.finished = True
        self.server.busy.discard(self)
        self.transport.write(error_response(413, message, ex.start_line[1].partition("?")[0]))
        self.close_transport(linger=True)

    def timed_out(self, reading_body: bool) -> None:
        """The idle/head timer or the body timer ran out."""
        if self.closing:
            return
        ex = self.current
        if reading_body:
            gen_log.info("Timeout reading body from %s", self)
            if ex is not None:
                ex.error = (408, "the request body did not arrive in time")
                self.fail(ex)
                return
        self.close_transport()

    # --- flow control ---

    def pause_reading(self) -> None:
        """Stop reading from the socket (a no-op when already paused)."""
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def maybe_resume(self) -> None:
        """Read again once nothing we hold is waiting on the application."""
        if (not self.paused or self.transport is None or self.tail is not None
                or self.backlog is not None):
            return
        if self.discard < 0:
            if self.queue is not None:
                return
            ex = self.current
            if ex is not None and ex.body_bytes > BODY_PAUSE_BYTES:
                return
        self.paused = False
        self.transport.resume_reading()

    def pause_for_stream(self) -> None:
        """The detached stream's buffer is full."""
        self.pause_reading()

    def resume_for_stream(self) -> None:
        """The detached stream wants more input."""
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def write_future(self) -> "asyncio.Future[None]":
        """A future for a write: resolved now, or when the transport drains below its low mark."""
        if not self.write_paused:
            return self.server.done
        waiter = self.server.loop.create_future()
        if self.waiters is None:
            self.waiters = [waiter]
        else:
            self.waiters.append(waiter)
        return waiter

    def closed_future(self) -> "asyncio.Future[None]":
        """A future failed with StreamClosedError, for writes after the connection closed."""
        future = self.server.loop.create_future()
        future.set_exception(StreamClosedError())
        future.exception()  # the caller may ignore it, as Tornado's HTTP1Connection allows
        return future

    # --- closing ---

    def detach(self, ex: Exchange) -> DetachedStream:
        """Hand the connection over to a stream; HTTP processing stops here."""
        self.server.detached(self)
        self.current = self.parsing = self.queue = None
        self.parser = None
        stream = self.stream = DetachedStream(self, self.transport)
        tail = self.tail
        self.tail = None
        if tail:
            stream.feed(tail)
        self.resume_for_stream()
        return stream

    def close_transport(self, linger: bool = False) -> None:
        """Close after the buffered output is sent; with linger, drain input briefly first."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.server.closing(self)
        transport = self.transport
        loop = self.server.loop
        if linger and transport.can_write_eof():
            transport.write_eof()
            self.discard = max(self.discard, 0)
            self.tail = None
            self.linger = loop.call_later(LINGER_SECONDS, self.abort)
            if self.paused:
                self.paused = False
                transport.resume_reading()
            return
        transport.close()
        if transport.get_write_buffer_size():
            # a client that never reads must not hold the socket forever (send_timeout)
            self.server.write_stalled(self)

    def abort(self) -> None:
        """Close now, dropping anything unsent."""
        transport = self.transport
        if transport is not None:
            self.closing = True
            self.server.closing(self)
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
        """The transport's socket."""
        return self.transport.get_extra_info("socket") if self.transport is not None else None

    def set_nodelay(self, value: bool) -> None:
        """asyncio and uvloop set TCP_NODELAY already; kept for interface compatibility."""
