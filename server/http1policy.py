"""The HTTP/1.1 connection policy both engines follow, written once.

What a connection may cost the server and how it ends: the lingering close, the graceful drain,
the 413 answered from a request head, and the deadlines of the header and send timeouts (kept by
``Deadlines``, which each engine's one timer sweep reads). The message rules (framing, versions,
Transfer-Encoding, including its refusal in an HTTP/1.0 request) are in ``rules``.

Nothing here imports httptools or either engine: an engine keeps only its mechanism (asyncio
transports for the fast engine, IOStreams for the tornado one) and calls these rules.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable
from time import monotonic
from typing import Generic, Protocol, TypeVar, runtime_checkable

from . import rules

log = logging.getLogger("server.http")

# --- lingering close ---

# A response that must close the connection while the client may still be sending (it was sent
# before the request's body was read, or more requests are queued or being parsed): stop writing,
# read and discard for this long / this much (like nginx's lingering_close), so that closing with
# unread input does not make the kernel reset the connection and lose our answer. A connection
# with no input in the way closes at once.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 4 * 1024 * 1024
LINGER_READ_SIZE = 65536


def linger_exhausted(discarded: int) -> bool:
    """True once a lingering connection has thrown away all the input it may (LINGER_MAX_BYTES):
    the one test both engines' lingering applies before giving up on the client."""
    return discarded >= LINGER_MAX_BYTES


async def discard_input(read: Callable[[float], Awaitable[bytes]]) -> int:
    """Linger on a connection whose output is shut: read and drop input until the limits.

    ``read(timeout)`` returns the next input (at most LINGER_READ_SIZE bytes) or raises
    asyncio.TimeoutError; this stops after LINGER_SECONDS or LINGER_MAX_BYTES, whichever comes
    first, and returns the bytes discarded. The caller closes the connection afterwards.
    """
    deadline = monotonic() + LINGER_SECONDS
    discarded = 0
    while not linger_exhausted(discarded):
        remaining = deadline - monotonic()
        if remaining <= 0:
            break
        discarded += len(await read(remaining))
    return discarded


# --- refusing from the head ---


def refusal_from_head(length: int | None, limit: int) -> rules.Violation | None:
    """413 when a request declares a body (Content-Length) over its own limit; None to read it.

    ``limit`` is the request's own: the server's max_body_size unless the application changed it
    (set_max_body_size in a @stream_request_body handler's prepare()), so engines ask once the
    application has seen the head. The body is then never read; the connection lingers.
    """
    if length is None or length <= limit:
        return None
    return rules.too_large(length, limit)


# --- header and send timeouts ---

K = TypeVar("K")


class Deadlines(Generic[K]):
    """Timers of one kind: key -> when it is due (``due``), kept in the order they were armed.

    With one timeout for all (``ordered``, the default), insertion order is deadline order and
    expired() stops at the first timer still running; a kind with timers of different lengths
    (``ordered=False``) is scanned whole. Optional marks say what a timer was armed for (a head
    count, how far output had got), so a sweep can tell that something moved (progress()) or
    that a timer outlived what it was for. ``due`` may be read (a sweep's "any running?");
    it is changed only through these methods.
    """

    __slots__ = ("timeout", "ordered", "due", "marks")

    def __init__(self, timeout: float | None, ordered: bool = True) -> None:
        self.timeout = timeout or 0.0  # 0: this kind of timer is off
        self.ordered = ordered
        self.due: dict[K, float] = {}
        self.marks: dict[K, int] = {}

    def __len__(self) -> int:
        return len(self.due)

    def __contains__(self, key: object) -> bool:
        return key in self.due

    def arm(self, key: K, now: float, mark: int | None = None,
            timeout: float | None = None) -> None:
        """(Re)start key's timer: due ``timeout`` (default: this kind's) from now, last in order."""
        due = self.due
        due.pop(key, None)  # re-inserting moves it to the end, keeping deadline order
        due[key] = now + (self.timeout if timeout is None else timeout)
        if mark is not None:
            self.marks[key] = mark

    def disarm(self, key: K) -> None:
        """Stop key's timer (no-op when it is not running)."""
        if self.due.pop(key, None) is not None and self.marks:
            self.marks.pop(key, None)

    def mark(self, key: K) -> int | None:
        """What key's timer was armed for (None: not running, or armed with no mark)."""
        return self.marks.get(key) if key in self.due else None

    def progress(self, key: K, mark: int, now: float) -> None:
        """Note how far key has got: past its last mark postpones the timer a whole timeout.

        The mark is remembered either way, so a mark that goes back (more output queued than
        was sent) is the new base and postpones nothing. An engine that only knows how much is
        left to do passes that amount negated. The timer keeps its place: a kind watched for
        progress is unordered.
        """
        marks = self.marks
        last = marks.get(key)
        marks[key] = mark
        if last is not None and mark > last:
            self.due[key] = now + self.timeout

    def expired(self, now: float) -> list[tuple[K, int | None]]:
        """The timers due by now, with their marks; they are stopped (removed) first."""
        due = self.due
        keys = []
        for key, deadline in due.items():
            if deadline <= now:
                keys.append(key)
            elif self.ordered:
                break
        marks = self.marks
        for key in keys:
            del due[key]
        return [(key, marks.pop(key, None) if marks else None) for key in keys]

    def armed_by(self, moment: float) -> list[K]:
        """Keys whose timer was last armed at or before ``moment`` (an ordered kind)."""
        cutoff = moment + self.timeout
        found = []
        for key, deadline in self.due.items():
            if deadline > cutoff:
                break
            found.append(key)
        return found


# --- draining ---

DRAIN_POLL = 0.02  # seconds between looks at what is still open while draining


@runtime_checkable
class Drainable(Protocol):
    """What drain() needs of an HTTP server: the engines implement it over their connections."""

    @property
    def connection_count(self) -> int:
        """Open HTTP connections."""

    @property
    def busy(self) -> Collection[object]:
        """Connections with a request in flight."""

    def stop(self) -> None:
        """Stop accepting new connections."""

    def close_after_responses(self) -> None:
        """Set draining: every response from now on says Connection: close, then closes."""

    def close_idle(self, idle_grace: float, now: float) -> None:
        """Close the keep-alive connections that have waited idle_grace for a next request."""

    async def close_all_connections(self) -> None:
        """Close every connection now and wait until they are closed."""


async def drain(server: Drainable, timeout: float, idle_grace: float) -> bool:
    """Stop accepting, let requests in flight finish (up to timeout), then close everything.

    While draining every response says ``Connection: close`` and its connection closes once it
    is sent, whatever the application does (close_after_responses; responses already under way
    close after they are sent). A keep-alive connection
    idle for ``idle_grace`` is closed; one that went idle more recently gets the rest of that
    time, so a busy client never sends into a connection we are closing (its request is
    answered, with ``Connection: close``). Returns True when every request finished in time,
    False when some were cut off.
    """
    server.close_after_responses()
    server.stop()  # with no other holder of the listening sockets, new connections are refused
    end = monotonic() + timeout
    while server.connection_count and monotonic() < end:
        server.close_idle(idle_grace, monotonic())
        await asyncio.sleep(DRAIN_POLL)
    busy = len(server.busy)
    if busy:
        log.warning("shutdown timeout: cutting off %d request(s) still in flight", busy)
    await server.close_all_connections()
    return not busy


# --- the engines' common interface ---


@runtime_checkable
class HTTPEngine(Protocol):
    """What the rest of the server uses of an HTTP engine (FastHTTPServer, DrainingHTTPServer).

    The launcher serves, watches and drains an engine through these alone; each engine is a
    Tornado HTTPServer and satisfies this structurally.
    """

    draining: bool

    @property
    def request_callback(self) -> object:
        """The application (or callable) the engine serves."""

    @property
    def connection_count(self) -> int:
        """Open HTTP connections."""

    @property
    def refused_connections(self) -> int:
        """Connections closed right after accept because --max-connections were open."""

    @property
    def busy(self) -> Collection[object]:
        """Connections with a request in flight."""

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Serve on already-bound listening sockets."""

    def stop(self) -> None:
        """Stop accepting: close the listening sockets."""

    async def drain(self, timeout: float, idle_grace: float = 1.0) -> bool:
        """Stop accepting, let requests in flight finish (see drain()); False if some were cut."""

    async def close_all_connections(self) -> None:
        """Close every connection now (requests in flight included) and wait."""
