"""Slow and hostile clients on both engines: slowloris, slow body, slow read and the connection cap.

Each attack runs against a `python -m server` subprocess (1,000 attacking sockets and a server in
one process would share its open-file limit and its event loop) while a probe client makes one
request after another on fresh connections. The attackers are bounded: a fixed number of
connections, each giving up after its timeout plus a margin, so every test stops by itself.
"""
import asyncio
import csv
import os
import re
import resource
import shutil
import socket
import subprocess
import threading
import time

import pytest

from helpers import http_call, open_fds, require, rss_bytes

ATTACKERS = 1000
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
SEND_TIMEOUT = 2.0
# A cut may come this much after its timeout: the servers look at their timers every tenth of
# the shortest timeout, and the machine (2 cores) is shared with other test runs.
LATE_MARGIN = 1.5
EARLY_MARGIN = 0.1  # and this much before it (clock granularity)
GIVE_UP = 8.0  # an attacking connection still open this long after its timer started is a failure
TCP_ESTABLISHED = 1


# --- helpers ---

def ensure_open_files(needed):
    """Raise this process's soft open-file limit (up to the hard limit) so `needed` sockets fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    require(soft >= needed, f"an open-file limit of {needed} (ulimit -n)")


def run_async(coroutine):
    """Run a coroutine on a fresh event loop and close it (sync tests; no asyncio.run)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def percentile(values, q):
    """The q-quantile (0..1) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def start_server(live_server_factory, engine, *options):
    """A subprocess server of this engine with short slow-client timeouts and no access log."""
    return live_server_factory("--engine", engine, "--log-level", "warning", "--access-log", "off",
                               "--header-timeout", str(HEADER_TIMEOUT),
                               "--body-timeout", str(BODY_TIMEOUT),
                               "--send-timeout", str(SEND_TIMEOUT), *options)


async def close_writer(writer):
    """Close a stream's connection and let the loop finish closing it."""
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


class Probe:
    """Sequential GET /api/hello requests, each on a fresh connection, timed; failures kept."""

    def __init__(self, port, path="/api/hello"):
        self.port = port
        self.path = path
        self.latencies = []
        self.failures = []
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self):
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                answer = await http_call(self.port, "GET", self.path, timeout=2.0)
                if answer.status != 200:
                    self.failures.append(f"status {answer.status}")
            except (TimeoutError, OSError, ConnectionError) as exc:
                self.failures.append(repr(exc))
            self.latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    async def stop(self):
        """Stop probing; returns p99 in ms."""
        self._stop.set()
        await self._task
        return self.p99_ms

    @property
    def p99_ms(self):
        return percentile(self.latencies, 0.99) * 1000


async def attack(port, attacker, count, probe_path="/api/hello", watch=None, per_tenth=100):
    """Run `count` attacking connections (`per_tenth` every 0.1 s) while a probe measures.

    Returns (each attacker's result, the probe). `watch` is called every 0.2 s meanwhile.
    """
    probe = Probe(port, probe_path)
    await asyncio.sleep(0.2)
    tasks = []
    for index in range(count):
        tasks.append(asyncio.ensure_future(attacker(port, index)))
        if index % per_tenth == per_tenth - 1:
            await asyncio.sleep(0.1)
    pending = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.2)
        if watch is not None:
            watch()
    await probe.stop()
    return [task.result() for task in tasks], probe


async def read_until_cut(reader, writer, trickle, interval, limit, started=None):
    """Trickle bytes every `interval` until the server closes (EOF or reset): the seconds it took
    since `started` (default: now). None if the connection is still open after `limit` seconds.
    """
    started = time.monotonic() if started is None else started
    while time.monotonic() - started < limit:
        try:
            data = await asyncio.wait_for(reader.read(65536), interval)
        except TimeoutError:
            if not writer.is_closing():
                writer.write(trickle)
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
        if not data:
            return time.monotonic() - started
        # a response (the fast engine's 408): the close follows it
    return None


def check_cuts(cuts, timeout, what):
    """Every connection was cut, none before its timeout, none much after it."""
    missing = sum(cut is None for cut in cuts)
    assert not missing, f"{missing} of {len(cuts)} {what} connections were never cut"
    early = [cut for cut in cuts if cut < timeout - EARLY_MARGIN]
    assert not early, f"{len(early)} {what} connections cut before {timeout} s: {early[:5]}"
    latest = max(cuts)
    assert latest <= timeout + LATE_MARGIN, f"{what} connections cut as late as {latest:.2f} s"
    return latest


def check_probe(probe, what):
    """The probe never failed: every request was answered 200 within its 2 s timeout.

    Its latency is reported (RELIABILITY.md), not asserted: that is a benchmark's job.
    """
    assert probe.latencies, "the probe made no request"
    assert not probe.failures, f"probe failures during {what}: {probe.failures[:5]}"


def connections_open(port):
    """The server's http_connections_open gauge (one request on a fresh connection)."""
    answer = run_async(http_call(port, "GET", "/metrics", timeout=2.0))
    assert answer.status == 200
    return float(re.search(rb"^http_connections_open (\S+)$", answer.body, re.M).group(1))


# --- slowloris: request heads trickled a line at a time ---

async def slowloris(port, index):
    """A head trickled a header line every 0.5 s; every tenth connection first sends a complete
    keep-alive request, waits 1 s, then trickles its second head (the timer starts at its first
    byte, not at connect). Returns seconds from the head's start (the connect, for a first
    request: the server's timer starts when it accepts) until the server cut it."""
    started = time.monotonic()  # before connecting: this loop may resume the task late
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if index % 10 == 0:
            writer.write(b"GET /api/hello HTTP/1.1\r\nHost: attacker\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            await asyncio.wait_for(reader.readexactly(length), 5)
            await asyncio.sleep(1.0)
            started = time.monotonic()
        writer.write(b"GET /api/hello HTTP/1.1\r\nHost: attacker\r\n")
        return await read_until_cut(reader, writer, b"X-Slow: 1\r\n", 0.5, GIVE_UP, started)
    finally:
        await close_writer(writer)


@pytest.mark.hardening
def test_slowloris_connections_are_cut_at_the_header_timeout(engine, live_server_factory,
                                                            reliability):
    reliability.describe(f"1,000 slowloris connections trickle a header line every 0.5 s "
                         f"(--header-timeout {HEADER_TIMEOUT:g}, --idle-timeout 75) while a probe "
                         f"makes sequential requests ({engine} engine)", area="slow clients")
    ensure_open_files(ATTACKERS + 200)
    server = start_server(live_server_factory, engine)
    cuts, probe = run_async(attack(server.port, slowloris, ATTACKERS))
    latest = check_cuts(cuts, HEADER_TIMEOUT, "slowloris")
    check_probe(probe, "slowloris")
    assert connections_open(server.port) <= 1  # the /metrics request itself
    reliability.figure(f"probe p99 {probe.p99_ms:.1f} ms, 0 failures in {len(probe.latencies)} "
                       f"requests with 1,000 slowloris connections; all cut "
                       f"{min(cuts):.1f}-{latest:.1f} s after their head began")


# --- slow body: a request body trickled a byte at a time ---

async def slow_body(port, index):
    """A POST whose head arrives at once and whose 100 kB body trickles 2 bytes every 0.5 s.
    Returns seconds from the head until the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /api/echo HTTP/1.1\r\nHost: attacker\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n[")
        return await read_until_cut(reader, writer, b"1,", 0.5, GIVE_UP)
    finally:
        await close_writer(writer)


@pytest.mark.hardening
def test_slow_bodies_are_cut_at_the_body_timeout(engine, live_server_factory, reliability):
    reliability.describe(f"1,000 connections trickle a 100 kB request body 2 bytes every 0.5 s "
                         f"(--body-timeout {BODY_TIMEOUT:g}) while a probe makes sequential "
                         f"requests ({engine} engine)", area="slow clients")
    ensure_open_files(ATTACKERS + 200)
    server = start_server(live_server_factory, engine)
    cuts, probe = run_async(attack(server.port, slow_body, ATTACKERS))
    latest = check_cuts(cuts, BODY_TIMEOUT, "slow-body")
    check_probe(probe, "slow bodies")
    assert connections_open(server.port) <= 1
    reliability.figure(f"probe p99 {probe.p99_ms:.1f} ms, 0 failures in {len(probe.latencies)} "
                       f"requests with 1,000 slow bodies; all cut {min(cuts):.1f}-{latest:.1f} s "
                       f"after their head")


# --- slow read: large responses to a client that never reads ---

def tcp_state(sock):
    """The kernel's TCP state of a socket (1 = established)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


class StateWatcher:
    """Looks at the TCP state of many sockets every 0.1 s (one task, not one wake-up per socket)."""

    def __init__(self):
        self._watched = {}  # socket -> (started, future)
        self._task = None

    def closed(self, sock):
        """A future: seconds from now until the socket leaves ESTABLISHED (None after GIVE_UP)."""
        future = asyncio.get_running_loop().create_future()
        self._watched[sock] = (time.monotonic(), future)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return future

    async def _run(self):
        while self._watched:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for sock, (started, future) in list(self._watched.items()):
                if tcp_state(sock) != TCP_ESTABLISHED:
                    future.set_result(now - started)
                elif now - started > GIVE_UP:
                    future.set_result(None)
                else:
                    continue
                del self._watched[sock]
        self._task = None


def slow_reader(watcher):
    """An attacker that asks for a 1 MiB file and never reads. A small receive buffer and a
    small MSS keep the kernel from absorbing the response (loopback would otherwise queue
    megabytes per socket), so it piles up in the server. It returns seconds from the request
    until the server reset the connection."""
    async def attacker(port, index):
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, b"GET /files/big.bin HTTP/1.1\r\nHost: attacker\r\n\r\n")
            return await watcher.closed(sock)
        finally:
            sock.close()
    return attacker


@pytest.fixture
def big_file_dir(tmp_path):
    """A directory with a 1 MiB file of random bytes (incompressible) to serve at /files/."""
    directory = tmp_path / "files"
    directory.mkdir()
    (directory / "big.bin").write_bytes(os.urandom(1024 * 1024))
    return directory


@pytest.mark.hardening
def test_clients_that_never_read_are_cut_at_the_send_timeout(engine, live_server_factory,
                                                             big_file_dir, reliability):
    reliability.describe(f"1,000 connections ask for a 1 MiB file and never read "
                         f"(--send-timeout {SEND_TIMEOUT:g}) while a probe makes sequential "
                         f"requests ({engine} engine)", area="slow clients")
    ensure_open_files(ATTACKERS + 200)
    server = start_server(live_server_factory, engine, "--files", str(big_file_dir))
    before = rss_bytes(server.proc.pid) / 2**20
    peak = [before]

    def watch():
        peak[0] = max(peak[0], rss_bytes(server.proc.pid) / 2**20)

    async def run():
        # 250 new connections a second: each asks for a file, and a faster ramp would measure
        # how many file requests a second the server answers rather than how it copes with
        # clients that never read
        return await attack(server.port, slow_reader(StateWatcher()), ATTACKERS, watch=watch,
                            per_tenth=25)

    cuts, probe = run_async(run())
    latest = check_cuts(cuts, SEND_TIMEOUT, "slow-read")
    check_probe(probe, "slow reads")
    assert connections_open(server.port) <= 1
    growth = peak[0] - before
    # 1,000 whole responses would be 1,000 MiB: the server holds about one chunk per connection
    assert growth < 400, f"server memory grew {growth:.0f} MiB for 1,000 stuck 1 MiB responses"
    reliability.figure(f"probe p99 {probe.p99_ms:.1f} ms, 0 failures in {len(probe.latencies)} "
                       f"requests with 1,000 clients not reading 1 MiB each; all reset "
                       f"{min(cuts):.1f}-{latest:.1f} s after their request; server memory "
                       f"+{growth:.0f} MiB")


# --- the connection cap ---

async def cap_scenario(port, cap, extra):
    """`cap` connections with a request in flight, then `extra` more: the extra are closed early,
    the ones in flight complete. Returns (in-flight statuses, extra outcomes, seconds to close)."""
    in_flight = []
    for _ in range(cap):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/slow?ms=1500 HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n")
        in_flight.append((reader, writer))
    await asyncio.sleep(0.3)  # all accepted and being served

    async def refused():
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /api/hello HTTP/1.1\r\nHost: c\r\n\r\n")
            data = await asyncio.wait_for(reader.read(-1), 2.0)
            outcome = "served" if data else "closed"
        except (ConnectionResetError, BrokenPipeError):
            outcome = "closed"
        except TimeoutError:
            outcome = "left open"
        finally:
            await close_writer(writer)
        return outcome, time.monotonic() - started

    extras = await asyncio.gather(*(refused() for _ in range(extra)))

    async def finish(reader, writer):
        try:
            raw = await asyncio.wait_for(reader.read(-1), 5.0)
        finally:
            await close_writer(writer)
        return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else None

    statuses = await asyncio.gather(*(finish(r, w) for r, w in in_flight))
    return statuses, extras


@pytest.mark.hardening
def test_connections_over_the_cap_are_closed_and_requests_in_flight_complete(
        engine, live_server_factory, reliability):
    cap, extra = 50, 20
    reliability.describe(f"--max-connections {cap}: {cap} connections with a 1.5 s request in "
                         f"flight, then {extra} more ({engine} engine)", area="slow clients")
    server = start_server(live_server_factory, engine, "--max-connections", str(cap))
    fds_before = open_fds(server.proc.pid)
    statuses, extras = run_async(cap_scenario(server.port, cap, extra))
    assert statuses == [200] * cap, statuses
    outcomes = [outcome for outcome, _ in extras]
    assert outcomes == ["closed"] * extra, outcomes
    slowest = max(seconds for _, seconds in extras)
    assert slowest < 1.0, f"an extra connection took {slowest:.2f} s to be closed"
    # the server stays up and counts what it refused; ask once it has seen the clients' closes
    # (a request while it still counts them open would itself be refused at the cap)
    deadline = time.monotonic() + 5
    while open_fds(server.proc.pid) > fds_before and time.monotonic() < deadline:
        time.sleep(0.05)
    answer = run_async(http_call(server.port, "GET", "/metrics", timeout=2.0))
    assert answer.status == 200
    refused = float(re.search(rb"^http_connections_refused_total (\S+)$", answer.body, re.M).group(1))
    assert refused == extra
    server.stop()
    logged = [line for line in server.stderr_lines if "--max-connections" in line]
    assert 1 <= len(logged) <= 2, logged  # at most once a second, and the burst took < 1 s
    reliability.figure(f"{cap} of {cap} requests in flight answered 200; {extra} of {extra} extra "
                       f"connections closed within {slowest * 1000:.0f} ms; "
                       f"http_connections_refused_total {refused:g}; {len(logged)} log line(s)")


# --- Debian's slowhttptest ---

def slowhttptest_run(port, mode, path, connections, rate, seconds, prefix, *options):
    """Run slowhttptest in a mode while a probe thread makes requests; (csv rows, probe, output)."""
    url = f"http://127.0.0.1:{port}{path}"
    command = ["slowhttptest", mode, "-c", str(connections), "-r", str(rate), "-l", str(seconds),
               "-u", url, "-g", "-o", str(prefix), "-p", "3", *options]
    probe_result = {}

    def probe_thread():
        async def run():
            probe = Probe(port)
            while process.poll() is None:
                await asyncio.sleep(0.2)
            await probe.stop()
            return probe
        probe_result["probe"] = run_async(run())

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    thread = threading.Thread(target=probe_thread)
    thread.start()
    try:
        output, _ = process.communicate(timeout=seconds + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        thread.join(30)
    with open(f"{prefix}.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    return rows, probe_result["probe"], output.decode(errors="replace")


SLOWHTTPTEST_MODES = {
    # mode: (flag, path, connections, new connections a second, extra options)
    "slowloris": ("-H", "/api/hello", 1000, 200, ("-i", "1", "-x", "24")),
    "slow body": ("-B", "/api/echo", 1000, 200, ("-i", "1", "-x", "24", "-s", "100000")),
    # Slow read: an 8 MiB file read through a 512-1024 byte window, up to 1 kB a second (it
    # notices the server's reset only once it has read what its buffer holds). slowhttptest sets
    # no small MSS, so on loopback the kernel queues ~2.8 MB for each stuck socket before the
    # server sees backpressure: fewer, slower connections keep that bounded (~250 MB at once).
    "slow read": ("-X", "/files/big.bin", 200, 25, ("-w", "512", "-y", "1024", "-n", "1",
                                                    "-z", "1024", "-k", "1")),
}


@pytest.mark.soak
@pytest.mark.parametrize("mode", list(SLOWHTTPTEST_MODES))
def test_slowhttptest(engine, mode, live_server_factory, tmp_path, reliability):
    flag, path, connections, rate, options = SLOWHTTPTEST_MODES[mode]
    seconds = 15
    reliability.describe(f"Debian's slowhttptest {flag} ({mode}), {connections} connections for "
                         f"{seconds} s, while a probe makes sequential requests ({engine} engine)",
                         area="slow clients")
    require(shutil.which("slowhttptest"), "slowhttptest (apt-get install slowhttptest)")
    ensure_open_files(connections + 200)
    files = tmp_path / "files"
    files.mkdir()
    (files / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    server = start_server(live_server_factory, engine, "--files", str(files))
    rows, probe, output = slowhttptest_run(server.port, flag, path, connections, rate, seconds,
                                           tmp_path / "slowhttptest", *options)
    assert rows, output[-2000:]
    check_probe(probe, f"slowhttptest {mode}")
    table = "\n".join(str(row) for row in rows)
    # its own probe found the service available every second
    assert all(row["Service Available"].strip() != "0" for row in rows), table
    closed = int(rows[-1]["Closed"])
    most = max(int(row["Connected"]) for row in rows)
    output = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output)  # its terminal colours
    exit_status = re.search(r"Exit status:\s*([^\n]*)", output)
    # the server, not the end of the test, closed every slow connection: slowhttptest stops
    # early when none is left (its table is written once a second, so may end just before)
    assert exit_status and "no open connections left" in exit_status.group(1).lower(), (
        f"{exit_status.group(1) if exit_status else output[-2000:]}\n{table}")
    closed = connections
    reliability.figure(f"probe p99 {probe.p99_ms:.1f} ms, 0 failures in {len(probe.latencies)} "
                       f"requests; at most {most} slow connections open at once; the server "
                       f"closed {closed} of {connections}")
