"""The shared HTTP/1.1 policy (server/http1policy.py) on its own: timers, the 413 rule, lingering, drain.

Both engines' socket tests (test_engine.py, test_slow_clients.py, ...) show the policy at work;
these pin the rules themselves, with plain objects standing in for connections and servers.
"""
import asyncio
import logging

import pytest
import tornado.web

from server import http1policy
from server.config import Settings
from server.engine.linger import Linger
from server.http1policy import LINGER_MAX_BYTES, LINGER_SECONDS, Deadlines, HTTPEngine
from server.lifecycle import make_http_server

# --- Deadlines ---


def test_timers_expire_in_the_order_armed_and_only_once_due():
    timer = Deadlines(10.0)
    timer.arm("a", 0.0)
    timer.arm("b", 1.0)
    timer.arm("c", 2.0)
    assert timer.expired(9.9) == []
    assert timer.expired(11.0) == [("a", None), ("b", None)]
    assert "a" not in timer and "b" not in timer and "c" in timer
    assert timer.expired(100.0) == [("c", None)]
    assert len(timer) == 0


def test_rearming_moves_a_timer_to_its_new_deadline():
    timer = Deadlines(10.0)
    timer.arm("a", 0.0)
    timer.arm("b", 1.0)
    timer.arm("a", 5.0)  # e.g. a keep-alive connection idle again after a request
    assert timer.expired(11.5) == [("b", None)]
    assert timer.expired(15.0) == [("a", None)]


def test_a_disarmed_timer_never_expires():
    timer = Deadlines(1.0)
    timer.arm("a", 0.0, mark=3)
    timer.disarm("a")
    timer.disarm("never armed")
    assert timer.mark("a") is None
    assert timer.expired(100.0) == []


def test_unordered_timers_of_different_lengths_are_all_found():
    timer = Deadlines(None, ordered=False)
    timer.arm("long", 0.0, timeout=60.0)
    timer.arm("short", 1.0, timeout=2.0)
    assert timer.expired(5.0) == [("short", None)]
    assert timer.expired(61.0) == [("long", None)]


def test_marks_come_back_with_expired_timers():
    timer = Deadlines(5.0)
    timer.arm("conn", 0.0, mark=7)  # armed for the connection's 7th head
    assert timer.mark("conn") == 7
    assert timer.expired(5.0) == [("conn", 7)]
    assert timer.mark("conn") is None


def test_progress_postpones_a_whole_timeout():
    timer = Deadlines(10.0, ordered=False)
    timer.arm("conn", 0.0, mark=100)  # 100 bytes written so far
    timer.progress("conn", 150, 8.0)  # 50 more went out
    assert timer.expired(12.0) == []
    assert timer.expired(18.0) == [("conn", 150)]


def test_no_progress_keeps_the_deadline():
    timer = Deadlines(10.0, ordered=False)
    timer.arm("conn", 0.0, mark=100)
    timer.progress("conn", 100, 8.0)
    assert timer.expired(10.0) == [("conn", 100)]


def test_a_mark_that_goes_back_is_the_new_base_not_progress():
    # the fast engine marks minus the bytes still buffered: more output queued is no progress
    timer = Deadlines(10.0, ordered=False)
    timer.arm("conn", 0.0, mark=-1000)
    timer.progress("conn", -5000, 4.0)  # more queued, none sent
    assert timer.expired(9.0) == []
    timer.progress("conn", -4000, 9.0)  # some of it sent: progress from the new base
    assert timer.expired(10.0) == []
    assert timer.expired(19.0) == [("conn", -4000)]


def test_armed_by_finds_timers_started_long_enough_ago():
    timer = Deadlines(60.0)
    timer.arm("idle a while", 0.0)
    timer.arm("just idle", 9.5)
    assert timer.armed_by(10.0 - 1.0) == ["idle a while"]  # idle for a grace of 1 s at t=10
    assert len(timer) == 2  # nothing is removed


def test_an_unset_timeout_means_the_timer_is_off():
    assert Deadlines(None).timeout == 0.0
    assert Deadlines(0).timeout == 0.0


# --- refusing from the head ---


def test_a_declared_body_over_the_requests_limit_is_refused_from_the_head():
    violation = http1policy.refusal_from_head(1001, 1000)
    assert violation is not None
    assert violation.status == 413
    assert "1001" in violation.detail and "1000" in violation.detail


@pytest.mark.parametrize("length", [None, 0, 999, 1000])
def test_a_body_within_the_limit_or_none_is_read(length):
    assert http1policy.refusal_from_head(length, 1000) is None


# --- lingering close ---


class FakeInput:
    """A connection's input for discard_input: fixed-size reads, recording the timeouts asked."""

    def __init__(self, size, reads=None):
        self.size = size
        self.reads = reads  # None: endless
        self.timeouts = []

    async def read(self, timeout):
        self.timeouts.append(timeout)
        if self.reads is not None:
            if self.reads == 0:
                raise TimeoutError
            self.reads -= 1
        return b"x" * self.size


@pytest.mark.gen_test
async def test_lingering_stops_after_the_byte_limit():
    client = FakeInput(65536)
    discarded = await http1policy.discard_input(client.read)
    assert discarded == LINGER_MAX_BYTES
    assert len(client.timeouts) == LINGER_MAX_BYTES // 65536


@pytest.mark.gen_test
async def test_lingering_waits_at_most_the_linger_time_for_input():
    client = FakeInput(10, reads=3)
    with pytest.raises(asyncio.TimeoutError):  # the caller closes the connection then
        await http1policy.discard_input(client.read)
    assert len(client.timeouts) == 4
    assert all(0 < timeout <= LINGER_SECONDS for timeout in client.timeouts)


def test_both_engines_linger_up_to_the_same_byte_count():
    """The tornado engine's discard_input and the fast engine's Linger stop at the same count."""
    linger = Linger()
    assert not linger.discard(LINGER_MAX_BYTES - 1)
    assert linger.discard(1)
    assert not http1policy.linger_exhausted(LINGER_MAX_BYTES - 1)
    assert http1policy.linger_exhausted(LINGER_MAX_BYTES)


# --- draining ---


class FakeConnection:
    """A connection as drain() sees it through a server: idle since some time, maybe busy."""

    def __init__(self, idle_since=None, polls_to_finish=None):
        self.idle_since = idle_since  # None: busy
        self.polls_to_finish = polls_to_finish  # a busy one finishes after this many polls
        self.closed = False


class FakeServer:
    """A Drainable of plain objects: it closes idle connections as an engine would."""

    def __init__(self, *connections):
        self.connections = list(connections)
        self.draining = False
        self.stopped = False
        self.closed_all = False
        self.graces = []

    @property
    def connection_count(self):
        return len(self.connections)

    @property
    def busy(self):
        return [conn for conn in self.connections if conn.idle_since is None]

    def stop(self):
        self.stopped = True

    def close_after_responses(self):
        self.draining = True

    def close_idle(self, idle_grace, now):
        self.graces.append(idle_grace)
        assert self.draining and self.stopped  # every response closes, no new connections
        for conn in list(self.connections):
            if conn.idle_since is None:
                if conn.polls_to_finish is not None:
                    conn.polls_to_finish -= 1
                    if conn.polls_to_finish <= 0:
                        conn.idle_since = now  # response out: idle (a client may send again)
            elif now - conn.idle_since >= idle_grace:
                conn.closed = True
                self.connections.remove(conn)

    async def close_all_connections(self):
        self.closed_all = True
        for conn in self.connections:
            conn.closed = True
        self.connections = []


@pytest.mark.gen_test
async def test_drain_with_nothing_open_finishes_at_once():
    server = FakeServer()
    assert await http1policy.drain(server, timeout=5.0, idle_grace=1.0) is True
    assert server.draining and server.stopped and server.closed_all
    assert server.graces == []


@pytest.mark.gen_test
async def test_drain_closes_idle_keep_alive_connections_after_the_grace():
    idle = FakeConnection(idle_since=-10.0)  # idle long before the drain began
    server = FakeServer(idle)
    assert await http1policy.drain(server, timeout=30.0, idle_grace=1.0) is True
    assert idle.closed
    assert server.graces and set(server.graces) == {1.0}


@pytest.mark.gen_test
async def test_drain_waits_for_requests_in_flight():
    busy = FakeConnection(polls_to_finish=3)
    server = FakeServer(busy)
    assert await http1policy.drain(server, timeout=30.0, idle_grace=0.0) is True
    assert busy.closed
    assert len(server.graces) >= 3  # it waited while the request was in flight


@pytest.mark.gen_test
async def test_drain_cuts_off_requests_at_the_timeout_and_says_so(caplog):
    stuck = FakeConnection()  # never finishes
    server = FakeServer(stuck, FakeConnection(idle_since=-10.0))
    with caplog.at_level(logging.WARNING, logger="server.http"):
        finished = await http1policy.drain(server, timeout=0.1, idle_grace=1.0)
    assert finished is False
    assert stuck.closed and server.closed_all
    assert "cutting off 1 request(s) still in flight" in caplog.text


# --- the engines' common interface ---


@pytest.mark.parametrize("engine", ["fast", "tornado"])
def test_both_engines_offer_what_the_launcher_uses(engine):
    server = make_http_server(tornado.web.Application(), Settings(engine=engine))
    assert isinstance(server, HTTPEngine)
    assert isinstance(server, http1policy.Drainable)
    assert server.connection_count == 0 and server.refused_connections == 0
    assert not server.busy and not server.draining
