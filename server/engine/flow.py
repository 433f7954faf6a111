"""Read and write flow control of one connection: when the socket is read, when writers wait."""
from __future__ import annotations

import asyncio

from tornado.iostream import StreamClosedError


class FlowControl:
    """Reading paused or not (requests queued, a body not taken, a stream's buffer full), writing
    paused by the transport (above its high-water mark), and the futures writers wait on meanwhile.

    The connection decides when reading may resume (it knows what it holds); this object only
    keeps the transport's state and its own in step, so a pause or resume is never sent twice.
    """

    __slots__ = ("transport", "loop", "done", "reading_paused", "writing_paused", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.loop = loop
        self.done = done  # the already-resolved future every uncongested write returns
        self.reading_paused = False
        self.writing_paused = False
        self.waiters: list[asyncio.Future[None]] | None = None

    def pause_reading(self) -> None:
        """Stop reading from the socket (a no-op when already paused)."""
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the socket again (a no-op unless paused)."""
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark: writes now wait."""
        self.writing_paused = True

    def resume_writing(self) -> None:
        """The transport drained: wake the writers."""
        self.writing_paused = False
        self._settle_waiters(closed=False)

    def write_future(self) -> asyncio.Future[None]:
        """A future for a write: resolved now, or when the transport drains below its low mark."""
        if not self.writing_paused:
            return self.done
        waiter = self.loop.create_future()
        if self.waiters is None:
            self.waiters = [waiter]
        else:
            self.waiters.append(waiter)
        return waiter

    def closed_future(self) -> asyncio.Future[None]:
        """A future failed with StreamClosedError, for writes after the connection closed."""
        future = self.loop.create_future()
        future.set_exception(StreamClosedError())
        future.exception()  # the caller may ignore it, as Tornado's HTTP1Connection allows
        return future

    def lost(self, exc: BaseException | None) -> None:
        """The connection is gone: no more reading or writing, waiting writers fail."""
        self.transport = None
        self._settle_waiters(closed=True, exc=exc)

    def _settle_waiters(self, closed: bool, exc: BaseException | None = None) -> None:
        """Resolve every waiting writer: with None when the transport drained, or, when the
        connection is gone, with a StreamClosedError of its own (marked retrieved: a writer may
        have stopped listening)."""
        waiters = self.waiters
        if not waiters:
            return
        self.waiters = None
        for waiter in waiters:
            if waiter.done():
                continue
            if closed:
                waiter.set_exception(StreamClosedError(real_error=exc))
                waiter.exception()
            else:
                waiter.set_result(None)
