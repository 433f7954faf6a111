"""One asyncio.Protocol per connection with an incremental httptools response parser.

The hot path (response complete -> record latency -> send the next request) is a handful of
attribute stores and one ``transport.write``: no per-request objects besides the latency int.
"""

from __future__ import annotations

import asyncio
from time import monotonic_ns

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from . import TOOL_NAME, __version__


def build_requests(
    method: str, paths, host_header: str, headers, body: bytes, keepalive: bool
) -> list[bytes]:
    """Pre-encode one complete HTTP/1.1 request per path: sending is one write of ready bytes."""
    common = [f"Host: {host_header}", f"User-Agent: {TOOL_NAME}/{__version__}"]
    names = {name.lower() for name, _ in headers}
    if "accept" not in names:
        common.append("Accept: */*")
    common.extend(f"{name}: {value}" for name, value in headers)
    if body or method in ("POST", "PUT", "PATCH"):
        common.append(f"Content-Length: {len(body)}")
    if not keepalive:
        common.append("Connection: close")
    tail = ("\r\n".join(common) + "\r\n\r\n").encode("latin-1")
    return [f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + tail + body for path in paths]


class Conn(asyncio.Protocol):
    """A keep-alive connection; subclasses decide what happens after each response (the mode)."""

    __slots__ = (
        "w",
        "transport",
        "parser",
        "t0",
        "sent_at",
        "busy",
        "dead",
        "expect_close",
        "head_done",
        "handle",
        "by_client",
    )

    def __init__(self, worker):
        self.w = worker
        self.transport = None
        self.parser = None
        self.t0 = 0  # latency base in ns (send time; scheduled time in rate mode)
        self.sent_at = 0  # actual send time in ns (timeouts are measured from here)
        self.busy = False  # a request is in flight
        self.dead = False
        self.expect_close = False
        self.head_done = False
        self.handle = None  # hold mode: the timer of the next request
        self.by_client = False

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport):
        """Connected: set up the parser and hand the connection to the worker's mode."""
        self.transport = transport
        self.parser = HttpResponseParser(self)
        self.w.conn_made(self)

    def data_received(self, data):
        """Feed bytes to the incremental parser; its callbacks do the work."""
        try:
            self.parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade):
            if not self.dead:
                self.w.conn_failed_request(self, "parse")
            return
        if self.head_done:
            # llhttp cannot be told a response answers HEAD, so it would wait for the
            # Content-Length body that never comes; a fresh parser per HEAD response avoids that.
            self.head_done = False
            self.parser = HttpResponseParser(self)

    def eof_received(self):
        """Server half-closed: let the transport close (connection_lost does the accounting)."""
        return False

    def connection_lost(self, exc):
        """Closed by either side: account for it and let the worker reopen the slot."""
        if self.dead:
            return
        self.dead = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.w.conn_lost(self, exc)

    # -- helpers used by the worker ------------------------------------------------------
    def close_by_client(self):
        """Abort the connection from our side (timeout, parse error, end of run)."""
        if self.transport is not None and not self.dead:
            self.by_client = True
            self.transport.abort()


class ClosedConn(Conn):
    """Closed loop: the next request leaves as soon as the previous answer is complete (as wrk)."""

    __slots__ = ()

    def start(self):
        """First request right after connecting."""
        w = self.w
        if w.running:
            self.t0 = monotonic_ns()
            self.busy = True
            w.sent += 1
            self.transport.write(w.next_req())

    def on_message_complete(self):
        """Record the latency and status, then immediately send the next request."""
        now = monotonic_ns()
        w = self.w
        w.lat_append((now - self.t0) // 1000)
        parser = self.parser
        w.status[parser.get_status_code()] += 1
        if w.running and parser.should_keep_alive():
            self.t0 = now
            w.sent += 1
            self.transport.write(w.next_req())
        else:
            self.busy = False
            if not parser.should_keep_alive():
                self.w.conn_close_requested(self)


class RateConn(Conn):
    """Open loop: requests come from the fixed-rate schedule; latency counts from the schedule."""

    __slots__ = ()

    def start(self):
        """A fresh connection is idle until the schedule has a request for it."""
        self.w.rate_idle(self)

    def send_scheduled(self, scheduled_ns, now):
        """Send one request whose latency clock started at its scheduled time, not now."""
        self.t0 = scheduled_ns
        self.sent_at = now
        self.busy = True
        w = self.w
        w.sent += 1
        self.transport.write(w.next_req())

    def on_message_complete(self):
        """Record latency from the scheduled start; take the next due request or go idle."""
        now = monotonic_ns()
        w = self.w
        w.lat_append((now - self.t0) // 1000)
        parser = self.parser
        w.status[parser.get_status_code()] += 1
        self.busy = False
        if not parser.should_keep_alive():
            w.conn_close_requested(self)
        elif w.running:
            # Catch up on the schedule first: a request that is overdue waits for no timer tick.
            index = w.next_i
            if w.rate_t0 + index * w.step_ns <= now:
                w.next_i = index + 1
                self.send_scheduled(w.rate_t0 + int(index * w.step_ns), now)
            else:
                w.idle.append(self)


class HoldConn(Conn):
    """Hold mode: one request, then silence for a random interval, forever (the seed scenario)."""

    __slots__ = ()

    def start(self):
        """Send the first request at once (proves the server speaks HTTP), then keep it alive."""
        self.send()

    def send(self):
        """Timer callback: send one request on this connection."""
        self.handle = None
        w = self.w
        if w.running and not self.dead:
            self.t0 = self.sent_at = monotonic_ns()
            self.busy = True
            w.sent += 1
            self.transport.write(w.next_req())

    def on_message_complete(self):
        """Record, then schedule the next request after a random pause."""
        now = monotonic_ns()
        w = self.w
        w.lat_append((now - self.t0) // 1000)
        parser = self.parser
        w.status[parser.get_status_code()] += 1
        self.busy = False
        if not parser.should_keep_alive():
            w.conn_close_requested(self)
        elif w.running:
            self.handle = w.loop.call_later(w.uniform(w.hold_low, w.hold_high), self.send)


def _head_variant(base):
    """Subclass for HEAD: the response ends with its headers, whatever Content-Length says."""

    class Head(base):
        """Completes each response at the end of its headers (HEAD answers have no body)."""

        __slots__ = ()
        on_message_complete = None  # httptools skips callbacks that are None

        def on_headers_complete(self):
            """HEAD responses have no body: the message is complete here."""
            self.head_done = True
            base.on_message_complete(self)

    Head.__name__ = Head.__qualname__ = "Head" + base.__name__
    return Head


HeadClosedConn = _head_variant(ClosedConn)
HeadRateConn = _head_variant(RateConn)
HeadHoldConn = _head_variant(HoldConn)

_CLASSES = {
    ("closed", False): ClosedConn,
    ("rate", False): RateConn,
    ("hold", False): HoldConn,
    ("closed", True): HeadClosedConn,
    ("rate", True): HeadRateConn,
    ("hold", True): HeadHoldConn,
}


def conn_class(mode: str, method: str):
    """The protocol class for a mode and method."""
    return _CLASSES[(mode, method == "HEAD")]
