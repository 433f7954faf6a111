"""One request and its response on a connection: the HTTPConnection Tornado's delegates write to."""
from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tornado import httputil

from .. import rules
from ..compat import header_lists
from .delegates import ProxyContext
from .output import HOLD_BYTES
from .stream import DetachedStream

if TYPE_CHECKING:
    from .connection import Connection



class Stage(enum.Enum):
    """Where an exchange is: waiting for (or holding) its head; delivering the body to the
    delegate; body complete and the handler producing the response."""

    HEAD = "head"
    BODY = "body"
    HANDLER = "handler"


# the stages by name, compared by identity on the hot path
HEAD, BODY, HANDLER = Stage.HEAD, Stage.BODY, Stage.HANDLER


class Exchange(httputil.HTTPConnection):
    """One request and its response: the HTTPConnection that Tornado's delegates write to."""

    # Fields every request sets live in slots; the rest are class-level defaults that a request
    # overrides (in its instance dict) only when it has a body, an error, a custom limit, ...
    __slots__ = ("conn", "delegate", "start_line", "headers", "url", "head_done", "complete",
                 "stage", "keep_alive", "remaining", "started", "finished", "close_callback")

    body: list[Any] | None = None  # parsed body pieces not yet given to the delegate
    body_bytes = 0  # their size
    received = 0  # body bytes given to the delegate so far
    parsed = 0  # body bytes parsed so far
    length: int | None = None  # Content-Length
    chunked = False  # Transfer-Encoding: chunked
    chunks = 0  # chunks parsed so far, and the bytes of their framing (sizes, extensions, CRLF)
    overhead = 0
    proxy: ProxyContext | None = None  # xheaders: what the proxy in front says
    method_prefix: bytes | None = None  # the start of a method split across reads
    waiting: asyncio.Future[Any] | None = None  # the delegate's pending future (flow control)
    upgrade = False
    error: tuple[int, str] | None = None  # (status, detail) the request is refused with
    chunking = False
    max_body_size: int | None = None  # None: the server's
    body_timeout: float | None = None  # None: the server's
    detached = False
    body_timer = False  # the body timer runs for this request

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.delegate: httputil.HTTPMessageDelegate | None = None
        self.start_line: httputil.RequestStartLine | None = None
        self.headers: Any = {}  # {name: [values]} while parsing, then an HTTPHeaders
        self.url: bytes | None = None
        self.head_done = False
        self.complete = False
        self.stage: Stage = HEAD
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
    def context(self) -> Any:
        """remote_ip, protocol and address, like Tornado's _HTTPRequestContext (xheaders applied)."""
        return self.proxy or self.conn

    @property
    def stream(self) -> Connection:
        """The connection as a stream: raw write(), close(), closed(), socket, set_nodelay().

        Like ``request.connection.stream`` in Tornado: bytes written here bypass the HTTP
        framing (an application that answers this way owns the rest of the connection and
        should close it when done).
        """
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
                      chunk: bytes | None = None) -> asyncio.Future[None]:
        """Write the status line and headers (and a first chunk of the body)."""
        conn = self.conn
        flow = conn.flow
        if conn.transport is None or conn.closing:
            return flow.closed_future()
        request = self.start_line
        assert request is not None  # a response is written only for a parsed head
        method = request[0]
        http11 = request[2] == "HTTP/1.1"
        code = start_line[1]
        self.started = True
        as_list = header_lists(headers)  # {name: [values]}, read only
        length = as_list.get("Content-Length")
        if length is not None or "Transfer-Encoding" in as_list:
            problem = rules.response_framing_problem(as_list)
            if problem:
                conn.abort()  # nothing of this response can be framed right: the client sees a close
                raise httputil.HTTPOutputError(problem)
            if length is None and not http11:
                del headers["Transfer-Encoding"]  # an HTTP/1.0 body ends with the connection
                as_list.pop("Transfer-Encoding", None)
        if method == "HEAD" or code == 304:
            self.remaining = 0
        elif length is not None:
            self.remaining = int(length[0])
        keep_alive = self.keep_alive and self.stage is HANDLER and not conn.server.draining
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
        # a whole response with pipelined requests queued after it: held, to go out with theirs
        conn.output.send(data, conn.pipeline.queue is not None and self.remaining == 0
                         and len(data) <= HOLD_BYTES)
        return flow.done if not flow.writing_paused else flow.write_future()

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        """Write a piece of the body (chunk-framed when the response is chunked)."""
        conn = self.conn
        if conn.transport is None or conn.closing:
            return conn.flow.closed_future()
        if chunk:
            conn.output.send(self._frame(chunk))
        return conn.flow.write_future()

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
                f"Tried to write {self.remaining} bytes less than Content-Length")
        if self.chunking and open_:
            conn.output.send(b"0\r\n\r\n")
        self.finished = True
        if conn.pipeline.current is self and not self.detached:  # a read, not a call: every request
            conn.response_done(self)


