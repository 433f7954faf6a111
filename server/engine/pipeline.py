"""A connection's requests in the order they are answered, and the input held back from its parser."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .exchange import Exchange

# Once this many pipelined requests wait, the rest of a read stays unparsed (the backlog) until
# they are answered; parsing goes on once fewer than half of them are left.
MAX_PIPELINED = 16


class Pipeline:
    """The request being answered, the pipelined ones after it, and input not parsed yet.

    Requests are answered strictly in order: the first parsed is ``current``, the rest wait in
    ``queue``. Input is held back from the parser in two cases: after an upgrade request's head
    (``tail``: it belongs to whoever takes the connection over, or is parsed if nobody does) and
    while MAX_PIPELINED requests wait (``backlog``). The connection reads ``current``, ``queue``,
    ``tail`` and ``backlog`` directly where it does so on every request or every read (a method
    call there costs more than the check); everything else goes through the methods.
    """

    __slots__ = ("current", "queue", "tail", "backlog")

    def __init__(self) -> None:
        self.current: Exchange | None = None  # the request being answered
        self.queue: list[Exchange] | None = None  # pipelined requests after current, in order
        self.tail: bytearray | None = None  # input after an upgrade request's head
        self.backlog: bytes | None = None  # input not parsed yet because requests are queued

    # --- the requests ---

    def enqueue(self, ex: Exchange) -> bool:
        """A new request: it becomes current, or waits after the others; True if it waits."""
        if self.current is None:
            self.current = ex
            return False
        if self.queue is None:
            self.queue = [ex]
        else:
            self.queue.append(ex)
        return True

    def drop(self, ex: Exchange) -> None:
        """Forget a request, current or queued; dropping current does not promote the next."""
        if self.current is ex:
            self.current = None
        elif self.queue is not None and ex in self.queue:
            self.queue.remove(ex)
            if not self.queue:
                self.queue = None

    def next(self) -> Exchange | None:
        """The current request is answered: the first queued one becomes current (None if none)."""
        queue = self.queue
        if queue is None:
            self.current = None
            return None
        ex = self.current = queue.pop(0)
        if not queue:
            self.queue = None
        return ex

    def full(self) -> bool:
        """True while so many requests are queued that input must stay unparsed."""
        return self.queue is not None and len(self.queue) >= MAX_PIPELINED

    def room(self) -> bool:
        """True once few enough requests are queued for the backlog to be parsed."""
        return self.queue is None or len(self.queue) < MAX_PIPELINED // 2

    def clear(self) -> None:
        """No request is served any more (the connection closed or was taken over).

        Held input stays: its owner takes it (take_tail) or it goes with the connection.
        """
        self.current = self.queue = None

    # --- input held back from the parser ---

    def holds_input(self) -> bool:
        """True while input is held back (an upgrade's tail or a backlog): reading stays paused."""
        return self.tail is not None or self.backlog is not None

    def hold(self, data: bytes | bytearray | memoryview) -> None:
        """More input while some is held back: it goes after it (the tail first, if both)."""
        if self.tail is not None:
            self.tail += data
        else:
            assert self.backlog is not None  # called only while input is held back
            self.backlog += data

    def hold_backlog(self, data: bytes | bytearray | memoryview) -> None:
        """Keep input unparsed while the queue is full (after any backlog already kept)."""
        if self.backlog is None:
            self.backlog = bytes(data)
        else:
            self.backlog += data

    def take_backlog(self) -> bytes | None:
        """The input kept unparsed, to be parsed now; none is kept afterwards."""
        backlog = self.backlog
        self.backlog = None
        return backlog

    def start_tail(self, data: bytes | bytearray | memoryview) -> None:
        """The input after an upgrade request's head: kept for whoever takes the connection."""
        self.tail = bytearray(data)

    def take_tail(self) -> bytearray | None:
        """The input kept after an upgrade request's head; none is kept afterwards."""
        tail = self.tail
        self.tail = None
        return tail
