"""The IOStream-like object a detached connection hands to Tornado (for WebSocketHandler)."""
from __future__ import annotations

import asyncio
import re
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tornado import ioloop
from tornado.iostream import StreamClosedError, UnsatisfiableReadError

if TYPE_CHECKING:
    from .connection import Connection
    from .flow import FlowControl

# Unread input above this pauses the socket (when no read is waiting for more), so a peer that
# sends faster than the application reads cannot grow our buffer without limit.
READ_HIGH_WATER = 1024 * 1024

_BYTES, _UNTIL, _REGEX, _CLOSE = 0, 1, 2, 3


class DetachedStream:
    """The subset of tornado.iostream.IOStream that WebSocketProtocol13 (and similar tunnels) use.

    Reads are served from a buffer that the connection's protocol fills; writes go straight to
    the asyncio transport, and their futures resolve once the transport is below its high-water
    mark (like IOStream's, which resolve once the data is handed to the kernel).
    """

    __slots__ = ("_conn", "_flow", "_loop", "_transport", "_buffer", "_read_future", "_read_kind",
                 "_read_arg", "_read_max", "_close_callback", "_closed", "io_loop", "socket",
                 "error", "max_buffer_size")

    def __init__(self, conn: Connection, flow: FlowControl, transport: asyncio.Transport,
                 max_buffer_size: int = 100 * 1024 * 1024) -> None:
        self._conn = conn  # closed through it (its timers stop, the server forgets it)
        self._flow = flow  # reads paused and resumed, write futures
        self._transport = transport
        self._loop = flow.loop
        self._buffer = bytearray()
        self._read_future: asyncio.Future[bytes] | None = None
        self._read_kind = _BYTES
        self._read_arg: Any = 0
        self._read_max: int | None = None
        self._close_callback: Callable[[], None] | None = None
        self._closed = False
        self.io_loop = ioloop.IOLoop.current()
        self.socket = transport.get_extra_info("socket")
        self.error: BaseException | None = None
        self.max_buffer_size = max_buffer_size

    # --- reading ---

    def read_bytes(self, num_bytes: int, partial: bool = False) -> asyncio.Future[bytes]:
        """Read exactly num_bytes (or, with partial, whatever is there, at most num_bytes)."""
        return self._start_read(_BYTES, (num_bytes, partial), None)

    def read_until(self, delimiter: bytes, max_bytes: int | None = None) -> asyncio.Future[bytes]:
        """Read up to and including delimiter."""
        return self._start_read(_UNTIL, delimiter, max_bytes)

    def read_until_regex(self, regex: bytes, max_bytes: int | None = None) -> asyncio.Future[bytes]:
        """Read up to and including the first match of regex."""
        return self._start_read(_REGEX, re.compile(regex), max_bytes)

    def read_until_close(self) -> asyncio.Future[bytes]:
        """Read everything until the peer closes."""
        return self._start_read(_CLOSE, None, None)

    def reading(self) -> bool:
        """True while a read is waiting for data."""
        return self._read_future is not None

    def _start_read(self, kind: int, arg: Any, max_bytes: int | None) -> asyncio.Future[bytes]:
        if self._read_future is not None:
            raise AssertionError("Already reading")
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._read_future = future
        self._read_kind, self._read_arg, self._read_max = kind, arg, max_bytes
        self._try_read()
        if self._read_future is not None:
            if self._closed:
                self._fail_read()
            else:
                # a read that needs more input must get it even if the buffer is over the mark
                self._flow.resume_reading()
        return future

    def _try_read(self) -> None:
        future = self._read_future
        if future is None:
            return
        buffer = self._buffer
        kind = self._read_kind
        end = -1
        if kind == _BYTES:
            wanted, partial = self._read_arg
            if len(buffer) >= wanted:
                end = wanted
            elif partial and buffer:
                end = len(buffer)
        elif kind == _UNTIL or kind == _REGEX:
            if kind == _UNTIL:
                pos = buffer.find(self._read_arg)
                if pos >= 0:
                    end = pos + len(self._read_arg)
            else:
                match = self._read_arg.search(buffer)
                if match is not None:
                    end = match.end()
            limit = self._read_max
            if limit is not None and (end > limit or (end < 0 and len(buffer) > limit)):
                self._read_future = None
                future.set_exception(
                    UnsatisfiableReadError(f"delimiter not found within {limit} bytes"))
                self.close()
                return
        if end < 0:
            return
        data = bytes(buffer[:end])
        del buffer[:end]
        self._read_future = None
        if not future.done():
            future.set_result(data)
        if len(buffer) < READ_HIGH_WATER:
            self._flow.resume_reading()

    def _fail_read(self) -> None:
        future = self._read_future
        self._read_future = None
        if future is None or future.done():
            return
        if self._read_kind == _CLOSE:
            data = bytes(self._buffer)
            self._buffer.clear()
            future.set_result(data)
        else:
            future.set_exception(StreamClosedError(real_error=self.error))
            future.exception()  # nobody may be waiting; don't log "exception never retrieved"

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Input from the connection (called by the protocol)."""
        self._buffer += data
        if self._read_future is not None:
            self._try_read()
        if len(self._buffer) >= READ_HIGH_WATER and self._read_future is None:
            self._flow.pause_reading()

    # --- writing ---

    def write(self, data: bytes | memoryview) -> asyncio.Future[None]:
        """Queue data on the transport; the future resolves when the transport is not congested."""
        if self._closed:
            raise StreamClosedError(real_error=self.error)
        self._transport.write(data)
        return self._flow.write_future()

    def writing(self) -> bool:
        """True while written data is still buffered."""
        return not self._closed and self._transport.get_write_buffer_size() > 0

    # --- state ---

    def closed(self) -> bool:
        """True once the stream is closed (by either side)."""
        return self._closed

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        """Call callback (once) when the stream closes."""
        self._close_callback = callback
        if self._closed:
            self._run_close_callback()

    def set_nodelay(self, value: bool) -> None:
        """Switch Nagle's algorithm off (True) or on (False) for this TCP connection."""
        sock = self.socket
        if sock is None or self._closed or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if value else 0)
        except OSError:
            pass  # the peer may have gone already (EINVAL on a reset socket), as IOStream ignores

    def close(self, exc_info: Any = False) -> None:
        """Close the connection (written data is still flushed); pending reads fail."""
        if self._closed:
            return
        if exc_info:
            if isinstance(exc_info, tuple):
                self.error = exc_info[1]
            elif isinstance(exc_info, BaseException):
                self.error = exc_info
            else:
                self.error = sys.exc_info()[1]
        self._closed = True
        self._conn.close_transport()
        self._fail_read()
        self._run_close_callback()

    def connection_lost(self, exc: BaseException | None) -> None:
        """The transport is gone (called by the protocol)."""
        if self._closed:
            return
        self._closed = True
        if exc is not None and self.error is None:
            self.error = exc
        # like IOStream, a read the buffered data can still satisfy gets it
        self._try_read()
        self._fail_read()
        self._run_close_callback()

    def _run_close_callback(self) -> None:
        callback = self._close_callback
        if callback is not None:
            self._close_callback = None
            self._loop.call_soon(callback)
