"""Faults of the services behind the server, with leak checks: PostgreSQL and Redis stopped and
restarted, an upstream of /api/fetch that hangs or resets. Each test measures the subprocess's
open file descriptors (/proc/<pid>/fd), its connection gauges (/metrics) and the connections the
database or Redis sees from it, before the fault and after recovery, and asserts they come back.

(The server exposes no asyncio task count and no pool gauge; file descriptors and the peer's
own connection count cover both: a leaked connection or socket task holds a descriptor.)
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

import pytest

from helpers import gauges, http_call, in_executor, open_fds

FD_SLACK = 4  # a descriptor or two may come and go (a pooled connection, the metrics probe)


async def settle_fds(pid: int, target: int, seconds: float = 8.0) -> int:
    """Open fds of the process, polled until at most `target` or `seconds` passed; the last count."""
    deadline = time.monotonic() + seconds
    while True:
        count = open_fds(pid)
        if count <= target or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.2)


async def wait_until(check, seconds: float, what: str):
    """Poll an async check until it returns something true; the value, or an AssertionError."""
    deadline = time.monotonic() + seconds
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {seconds} s"
        await asyncio.sleep(0.2)


async def burst(port: int, calls: list[tuple[str, str, object]], concurrency: int = 20):
    """Run (method, path, body) calls with bounded concurrency; the Answers (or exceptions)."""
    slots = asyncio.Semaphore(concurrency)

    async def one(method, path, body):
        async with slots:
            return await http_call(port, method, path, body, timeout=30)
    return await asyncio.gather(*(one(*call) for call in calls), return_exceptions=True)


def guestbook_mix(tag: str, n: int) -> list[tuple[str, str, object]]:
    """n calls: posts, list pages, a message by id, the HTML page, readiness."""
    calls = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            calls.append(("POST", "/api/messages", {"name": tag, "text": f"{tag} {i}"}))
        elif kind == 1:
            calls.append(("GET", "/api/messages?limit=10", None))
        elif kind == 2:
            calls.append(("GET", "/api/messages/1", None))
        elif kind == 3:
            calls.append(("GET", "/guestbook", None))
        else:
            calls.append(("GET", "/readyz", None))
    return calls


def status_of(answer) -> object:
    return getattr(answer, "status", type(answer).__name__)


async def warm_up(port: int) -> None:
    """One message first (the mix reads message 1), then 200 calls of the mix: all must succeed."""
    first = await http_call(port, "POST", "/api/messages", {"name": "first", "text": "message 1"})
    assert first.status == 201, first.body
    warm = await burst(port, guestbook_mix("before", 200))
    bad = [status_of(a) for a in warm if status_of(a) not in (200, 201)]
    assert not bad, f"warm-up failed: {bad[:10]}"


async def connection_gauges(port: int) -> tuple[float, float]:
    values = await gauges(port)
    return values["http_connections_open"], values["http_requests_in_flight"]


TASK_SLACK = 2


async def settle_tasks(port: int, target: float, seconds: float = 8.0) -> float:
    """asyncio tasks alive in the server (its asyncio_tasks gauge), once down to target or after seconds."""
    deadline = time.monotonic() + seconds
    while True:
        count = (await gauges(port))["asyncio_tasks"]
        if count <= target or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.2)


# --- PostgreSQL stopped and restarted ---

@dataclass
class Counts:
    """What a fault must not leak: the server's open fds, HTTP connection gauges, asyncio tasks."""

    fds: int
    conns: tuple[float, float]
    tasks: float


async def counts_now(pid: int, port: int) -> Counts:
    return Counts(open_fds(pid), await connection_gauges(port), (await gauges(port))["asyncio_tasks"])


async def counts_settled(pid: int, port: int, before: Counts) -> Counts:
    """The counts once back to `before` (within the slack), or after a few seconds of waiting."""
    fds = await settle_fds(pid, before.fds + FD_SLACK)
    conns = await connection_gauges(port)
    tasks = await settle_tasks(port, before.tasks + TASK_SLACK)
    return Counts(fds, conns, tasks)


def assert_back_to(before: Counts, after: Counts, reliability) -> None:
    """fds, connections (only the probe itself: nothing left open or busy) and tasks as before."""
    assert after.fds <= before.fds + FD_SLACK, f"fds {before.fds} before, {after.fds} after"
    assert after.conns == before.conns
    reliability.figure(f"asyncio tasks {before.tasks:.0f} → {after.tasks:.0f}")
    assert after.tasks <= before.tasks + TASK_SLACK, f"asyncio tasks {before.tasks:.0f} → {after.tasks:.0f}"


def postgres_connections(server, database: str) -> int:
    """Connections PostgreSQL has open to one database (pg_stat_activity)."""
    psql = str(server.bin / "psql") if (server.bin / "psql").exists() else "psql"
    out = subprocess.run(
        [psql, "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-d", "postgres", "-tAc",
         f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"],
        check=True, capture_output=True, text=True, timeout=30)
    return int(out.stdout.strip())


class Traffic:
    """Workers sending the guestbook mix in a loop until stopped; every answer is kept."""

    def __init__(self, port: int, tag: str, workers: int = 10) -> None:
        self.port, self.tag = port, tag
        self.answers: list[tuple[str, object]] = []  # (path, Answer or exception)
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._run(w)) for w in range(workers)]

    async def _run(self, worker: int) -> None:
        calls = guestbook_mix(self.tag, 5)
        i = worker
        while not self._stop.is_set():
            method, path, body = calls[i % len(calls)]
            i += 1
            try:
                answer = await http_call(self.port, method, path, body, timeout=30)
            except Exception as exc:  # kept and reported: a dropped request is a finding
                answer = exc
            self.answers.append((path, answer))
            if getattr(answer, "status", 0) == 503:
                await asyncio.sleep(0.01)  # no busy loop while it is down

    async def stop(self) -> list[tuple[str, object]]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.answers


@pytest.mark.hardening
@pytest.mark.gen_test(timeout=150)
async def test_postgres_stop_start_is_503_then_recovers_without_leaks(live_server_factory, postgres_server,
                                                                      postgres_url, reliability):
    reliability.describe("PostgreSQL stopped (pg_ctl -m fast, connections cut mid-query) under "
                         "10 workers of guestbook traffic and started again: only 200/201 or JSON "
                         "503 with a message and Retry-After, never a 500 or a dropped connection; "
                         "recovery without a restart; fds, HTTP connections and PostgreSQL "
                         "connections back to baseline", area="faults")
    database = postgres_url.rsplit("/", 1)[1]
    server = live_server_factory("--db-url", postgres_url, "--post-rate", "off", "--db-timeout", "2",
                                 "--access-log", "off", "--log-level", "error")
    pid, port = server.proc.pid, server.port
    await warm_up(port)
    pg_before = await in_executor(postgres_connections, postgres_server, database)
    before = await counts_now(pid, port)

    traffic = Traffic(port, "outage")
    try:
        await asyncio.sleep(0.5)
        await in_executor(postgres_server.stop)  # while queries are running
        stopped = time.monotonic()
        await asyncio.sleep(2.0)
        fds_during = open_fds(pid)
        ready = await http_call(port, "GET", "/readyz")
    finally:
        await in_executor(postgres_server.start)
    restarted = time.monotonic()
    outage_s = restarted - stopped

    async def posts_again():
        answer = await http_call(port, "POST", "/api/messages", {"name": "after", "text": "recovered"})
        return answer.status == 201
    await wait_until(posts_again, 30, "a 201 after PostgreSQL came back")
    recovery_s = time.monotonic() - restarted
    await asyncio.sleep(0.5)
    answers = await traffic.stop()
    after = await burst(port, guestbook_mix("after", 200))
    after_ok = sum(status_of(a) in (200, 201) for a in after)
    pg_after = await in_executor(postgres_connections, postgres_server, database)
    after_counts = await counts_settled(pid, port, before)

    statuses = [status_of(a) for _, a in answers]
    bad = [(path, s) for (path, a), s in zip(answers, statuses, strict=True) if s not in (200, 201, 503)]
    refused = [(path, a) for path, a in answers if status_of(a) == 503]
    api_errors = [a.json()["error"] for path, a in refused if path.startswith("/api/")]
    reliability.figure(
        f"{len(answers):,} requests across a {outage_s:.1f} s outage: "
        f"{statuses.count(200) + statuses.count(201):,} × 200/201, {len(refused):,} × 503, {len(bad)} other; "
        f"writes again {recovery_s:.1f} s after the restart, then {after_ok}/{len(after)} OK; "
        f"fds {before.fds} → {fds_during} during → {after_counts.fds}; "
        f"PostgreSQL connections {pg_before} → {pg_after}; "
        f"HTTP connections {before.conns[0]:.0f} → {after_counts.conns[0]:.0f}")
    assert not bad, f"not 200/201/503 around the outage: {bad[:10]}"
    assert len(refused) > 20 and api_errors
    assert all(e["status"] == 503 and "database is unavailable" in e["message"] for e in api_errors)
    assert all(int(a.headers["retry-after"]) >= 1 for _, a in refused)
    assert ready.status == 503 and ready.json()["checks"]["database"] == "unavailable"
    assert after_ok == len(after)
    assert fds_during <= before.fds + 25, f"fds {fds_during} during the outage"
    assert pg_after <= max(pg_before, 1) + 2, f"PostgreSQL connections {pg_before} → {pg_after}"
    assert_back_to(before, after_counts, reliability)


def postgres_processes(server) -> list[int]:
    """The postmaster of this test cluster and every process it forked (backends, workers)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as file:
                    stat = file.read()
                if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(entry))
    return [postmaster, *children]


DB_TIMEOUT = 1.5


@pytest.mark.hardening
@pytest.mark.gen_test(timeout=150)
async def test_frozen_postgres_is_503_within_db_timeout_then_recovers_without_leaks(
        live_server_factory, postgres_server, postgres_url, reliability):
    reliability.describe("PostgreSQL frozen (SIGSTOP on the postmaster and its backends: sockets "
                         "open, nothing answers) under guestbook traffic, then thawed: JSON 503 "
                         "within --db-timeout instead of hanging, recovery without a restart; "
                         "fds, HTTP and PostgreSQL connections back to baseline", area="faults")
    database = postgres_url.rsplit("/", 1)[1]
    server = live_server_factory("--db-url", postgres_url, "--post-rate", "off", "--db-timeout",
                                 str(DB_TIMEOUT), "--access-log", "off", "--log-level", "error")
    pid, port = server.proc.pid, server.port
    await warm_up(port)
    pg_before = await in_executor(postgres_connections, postgres_server, database)
    before = await counts_now(pid, port)

    frozen = postgres_processes(postgres_server)
    timings = []

    async def timed(method, path, body):
        started = time.monotonic()
        try:
            answer = await http_call(port, method, path, body, timeout=30)
        except Exception as exc:
            answer = exc
        timings.append(time.monotonic() - started)
        return path, answer
    try:
        for process in frozen:
            os.kill(process, signal.SIGSTOP)
        answers = await asyncio.gather(*(timed(*call) for call in guestbook_mix("frozen", 40)))
        fds_during = open_fds(pid)
    finally:
        for process in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGCONT)
    thawed = time.monotonic()

    async def posts_again():
        answer = await http_call(port, "POST", "/api/messages", {"name": "after", "text": "thawed"})
        return answer.status == 201
    await wait_until(posts_again, 30, "a 201 after PostgreSQL was thawed")
    recovery_s = time.monotonic() - thawed
    after = await burst(port, guestbook_mix("after", 200))
    after_ok = sum(status_of(a) in (200, 201) for a in after)
    pg_after = await in_executor(postgres_connections, postgres_server, database)
    after_counts = await counts_settled(pid, port, before)

    statuses = [status_of(a) for _, a in answers]
    reliability.figure(
        f"{len(answers)} concurrent requests to a frozen database: statuses "
        f"{sorted(set(map(str, statuses)))}, slowest answer {max(timings):.1f} s (--db-timeout "
        f"{DB_TIMEOUT} s); writes again {recovery_s:.1f} s after SIGCONT, then {after_ok}/{len(after)} "
        f"OK; fds {before.fds} → {fds_during} during → {after_counts.fds}; PostgreSQL connections "
        f"{pg_before} → {pg_after}; HTTP connections {before.conns[0]:.0f} → {after_counts.conns[0]:.0f}")
    assert set(statuses) == {503}, statuses
    assert all(a.json()["error"]["message"].startswith("the database is unavailable")
               for path, a in answers if path.startswith("/api/"))
    # a request may wait for a pooled connection, connect, then run its query: each bounded
    assert max(timings) < 3 * DB_TIMEOUT + 3, f"slowest 503 after {max(timings):.1f} s"
    assert after_ok == len(after)
    assert pg_after <= max(pg_before, 1) + 2, f"PostgreSQL connections {pg_before} → {pg_after}"
    assert_back_to(before, after_counts, reliability)


# --- Redis stopped and restarted ---

REDIS_POOL = 4
REDIS_BOUND = 2 * REDIS_POOL + 1  # cache pool, publishing pool, the live-event subscription


@pytest.mark.hardening
@pytest.mark.gen_test(timeout=120)
async def test_redis_stop_start_degrades_then_recovers_without_leaks(live_server_factory, redis_server,
                                                                     redis_url, tmp_path, reliability):
    reliability.describe("Redis (--cache-url) stopped under guestbook traffic and started again: "
                         "answers keep coming from the database (no error), the cache comes back "
                         "by itself (live events: test_guestbook_faults.py); fds, HTTP and Redis "
                         "connections back to baseline", area="faults")
    server = live_server_factory("--data-dir", str(tmp_path / "data"), "--cache-url", redis_url,
                                 "--cache-pool-size", str(REDIS_POOL), "--post-rate", "off",
                                 "--access-log", "off", "--log-level", "error")
    pid, port = server.proc.pid, server.port
    await warm_up(port)
    redis_before = await in_executor(redis_server.clients)
    before = await counts_now(pid, port)

    await in_executor(redis_server.stop)
    try:
        during = await burst(port, guestbook_mix("during", 300))
        fds_during = open_fds(pid)
        ready = (await http_call(port, "GET", "/readyz")).json()
    finally:
        await in_executor(redis_server.start)
    statuses = [getattr(a, "status", type(a).__name__) for a in during]
    bad = [s for s in statuses if s not in (200, 201)]

    async def cache_back():
        return (await http_call(port, "GET", "/readyz")).json()["checks"]["cache"] == "ok"
    restarted = time.monotonic()
    await wait_until(cache_back, 20, "the cache reported ok after Redis came back")
    recovery_s = time.monotonic() - restarted
    after = await burst(port, guestbook_mix("after", 200))
    after_ok = sum(getattr(a, "status", 0) in (200, 201) for a in after)
    redis_after = await in_executor(redis_server.clients)
    after_counts = await counts_settled(pid, port, before)
    reliability.figure(
        f"{len(during)} requests with Redis down: {len(during) - len(bad)} answered 200/201 from the "
        f"database, {len(bad)} other; cache ok {recovery_s:.1f} s after Redis restarted; then "
        f"{after_ok}/{len(after)} OK; fds {before.fds} → {fds_during} during → {after_counts.fds}; "
        f"Redis clients {redis_before} → {redis_after} (--cache-pool-size {REDIS_POOL}: at most "
        f"{REDIS_BOUND})")
    assert not bad, f"errors while Redis was down: {sorted(set(map(str, bad)))}"
    assert ready["status"] == "ready" and ready["checks"]["cache"].startswith("unavailable")
    assert after_ok == len(after)
    # how many the pools hold depends on how many calls overlapped; never more than the bound
    assert redis_after <= REDIS_BOUND, \
        f"Redis clients {redis_before} → {redis_after} (bound {REDIS_BOUND})"
    assert_back_to(before, after_counts, reliability)


# --- an upstream of /api/fetch that hangs, and one that resets ---

class FaultyUpstream:
    """Two loopback listeners: one accepts and never answers, one accepts and sends RST."""

    def __init__(self) -> None:
        self.hung: list[asyncio.StreamWriter] = []
        self.hung_closed_by_peer = 0
        self.resets = 0
        self.servers: list[asyncio.base_events.Server] = []

    async def start(self) -> tuple[str, str]:
        hang = await asyncio.start_server(self._hang, "127.0.0.1", 0)
        reset = await asyncio.start_server(self._reset, "127.0.0.1", 0)
        self.servers = [hang, reset]
        return (f"http://127.0.0.1:{hang.sockets[0].getsockname()[1]}/hang",
                f"http://127.0.0.1:{reset.sockets[0].getsockname()[1]}/reset")

    async def _hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hung.append(writer)
        with contextlib.suppress(OSError):
            while await reader.read(65536):  # read the request, never answer; EOF = the server gave up
                pass
            self.hung_closed_by_peer += 1

    async def _reset(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.resets += 1
        writer.transport.abort()

    async def close(self) -> None:
        for writer in self.hung:
            writer.close()
        for server in self.servers:
            server.close()
            await server.wait_closed()


OUTBOUND_TIMEOUT = 1.0


@pytest.mark.hardening
@pytest.mark.gen_test(timeout=90)
async def test_hanging_and_resetting_upstream_of_fetch_without_leaks(live_server_factory, upstream,
                                                                     reliability):
    reliability.describe("/api/fetch to an upstream that accepts and never answers, and one that "
                         "resets: per-URL 'timeout' within --outbound-timeout and 'connection "
                         "reset' in a 200 JSON answer beside a good URL, JSON 504 / 502 when they "
                         "are the only URLs, never a 500; the server closes every "
                         "upstream socket; fds and connections back to baseline", area="faults")
    faulty = FaultyUpstream()
    hang_url, reset_url = await faulty.start()
    try:
        server = live_server_factory("--outbound-allow", "127.0.0.1", "--outbound-timeout",
                                     str(OUTBOUND_TIMEOUT), "--access-log", "off", "--log-level", "error")
        pid, port = server.proc.pid, server.port
        good = {"urls": [upstream + "/page", upstream + "/plain"]}
        warm = await burst(port, [("POST", "/api/fetch", good)] * 40, concurrency=10)
        assert all(a.status == 200 and all(r["ok"] for r in a.json()["results"]) for a in warm)
        before = await counts_now(pid, port)

        started = time.monotonic()
        bad_calls = [("POST", "/api/fetch", {"urls": [hang_url, reset_url, upstream + "/plain"]})] * 30
        answers = await burst(port, bad_calls, concurrency=30)
        elapsed = time.monotonic() - started
        fds_during_peak = len(faulty.hung)
        statuses = [getattr(a, "status", type(a).__name__) for a in answers]
        results = [a.json()["results"] for a in answers if getattr(a, "status", 0) == 200]
        hang_errors = {r[0]["error"] for r in results}
        reset_errors = {r[1]["error"] for r in results}
        hang_ms = max(r[0]["time_ms"] for r in results)
        # every URL failing upstream is a gateway error: 504 with a timeout among them, else 502
        only_hang = await burst(port, [("POST", "/api/fetch", {"urls": [hang_url]})] * 10, concurrency=10)
        only_reset = await burst(port, [("POST", "/api/fetch", {"urls": [reset_url]})] * 10, concurrency=10)

        await wait_until(lambda: _true_when(faulty.hung_closed_by_peer >= len(faulty.hung)), 10,
                         "the server closed every hanging upstream connection")
        after = await burst(port, [("POST", "/api/fetch", good)] * 40, concurrency=10)
        after_ok = sum(a.status == 200 and all(r["ok"] for r in a.json()["results"]) for a in after)
        after_counts = await counts_settled(pid, port, before)
    finally:
        await faulty.close()
    reliability.figure(
        f"30 fetches of [hanging, resetting, good] in {elapsed:.1f} s: statuses "
        f"{sorted(set(map(str, statuses)))}, hanging → {sorted(hang_errors)} after at most "
        f"{hang_ms:.0f} ms (--outbound-timeout {OUTBOUND_TIMEOUT:.0f} s), resetting → "
        f"{sorted(reset_errors)}; {faulty.hung_closed_by_peer}/{fds_during_peak} hung upstream "
        f"sockets closed by the server; then {after_ok}/{len(after)} OK; fds {before.fds} → "
        f"{after_counts.fds}; HTTP connections {before.conns[0]:.0f} → {after_counts.conns[0]:.0f}")
    reliability.figure(f"10 fetches of only the hanging upstream: "
                       f"{sorted({status_of(a) for a in only_hang})}; "
                       f"10 of only the resetting one: {sorted({status_of(a) for a in only_reset})}")
    assert statuses == [200] * len(bad_calls)
    assert [a.status for a in only_hang] == [504] * 10
    assert all("timeout" in a.json()["error"]["message"] for a in only_hang)
    assert [a.status for a in only_reset] == [502] * 10
    assert all(a.json()["error"]["status"] == 502 for a in only_reset)
    assert hang_errors == {"timeout"}
    assert all(e and ("reset" in e or "closed" in e) for e in reset_errors), reset_errors
    assert all(r[2]["ok"] for r in results), "a good URL failed next to the bad ones"
    assert hang_ms < OUTBOUND_TIMEOUT * 1000 + 1500
    assert after_ok == len(after)
    assert_back_to(before, after_counts, reliability)


async def _true_when(value: bool) -> bool:
    return value
