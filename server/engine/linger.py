"""Lingering close: input read and thrown away after a response that ends the connection."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

# how long and how much: the rule both engines follow (server.http1policy)
from ..http1policy import LINGER_SECONDS, linger_exhausted


class Linger:
    """A connection that parses no more input: what it has thrown away, and its deadline.

    It exists from a refusal on (the error response is still to be written) and, once the
    connection half-closes, bounds how long and how much the client may go on sending.
    """

    __slots__ = ("discarded", "timer")

    def __init__(self) -> None:
        self.discarded = 0
        self.timer: asyncio.TimerHandle | None = None

    def discard(self, size: int) -> bool:
        """Throw away ``size`` bytes of input; True once it is all the connection may send."""
        self.discarded += size
        return linger_exhausted(self.discarded)

    def start(self, loop: asyncio.AbstractEventLoop, give_up: Callable[[], None]) -> None:
        """Our side is closed: ``give_up`` runs if the client has not closed its side in time."""
        if self.timer is None:
            self.timer = loop.call_later(LINGER_SECONDS, give_up)

    def cancel(self) -> None:
        """The connection is gone: the deadline is not needed."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
