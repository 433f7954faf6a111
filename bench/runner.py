"""Runs the modes: connection slots, ramp, schedules, timeouts, per-second ticks, workers."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import multiprocessing.connection
import random
import resource
import signal
import socket
import threading
import time
from time import monotonic_ns

from .protocol import build_requests, conn_class
from .stats import (
    CONNECT_ERROR_KINDS,
    REQUEST_ERROR_KINDS,
    Aggregator,
    classify_exception,
    encode_histogram,
    histogram_from_values,
    new_histogram,
)

try:  # uvloop is optional: the tool works (slower) on the stock loop
    import uvloop
except ImportError:  # pragma: no cover - exercised only where uvloop is missing
    uvloop = None

NS = 1_000_000_000
DRAIN_MAX_S = 2.0  # after --duration, in-flight requests get at most this long to finish
RETRY_MIN_S, RETRY_MAX_S = 0.05, 1.0  # back-off between failed connects of one slot
RATE_TICK_NS = 1_000_000  # rate mode releases requests in batches of one timer tick
FD_RESERVE = 64  # descriptors the process needs besides its sockets


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed, else the default asyncio loop."""
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def loop_name() -> str:
    """Which event loop implementation the workers use."""
    return "uvloop" if uvloop is not None else "asyncio"


def share(total: int, index: int, parts: int) -> int:
    """Worker ``index``'s part of ``total`` when split as evenly as possible."""
    return total // parts + (1 if index < total % parts else 0)


def ensure_fd_limit(connections: int, workers: int) -> str | None:
    """Raise the soft open-file limit towards the hard one; a warning text when still too low."""
    need = -(-connections // workers) + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        return (
            f"-c {connections} needs about {need:,} open files per worker process but the limit is "
            f"{soft:,} (hard limit {hard:,}); connections beyond it will fail with 'fd_limit' — "
            f"raise 'ulimit -Hn' or spread them over more --workers"
        )
    return None


class Worker:
    """One process's share of the run on one event loop (hot-path state in plain attributes)."""

    def __init__(self, cfg, index: int, nworkers: int, emit_tick):
        self.cfg = cfg
        self.index = index
        self.nworkers = nworkers
        self.emit_tick = emit_tick
        self.slots = share(cfg.connections, index, nworkers)
        self.loop = None
        self.mode = cfg.mode
        self.cls = conn_class(cfg.mode, cfg.method)
        reqs = build_requests(
            cfg.method, cfg.paths, cfg.host_header, cfg.headers, cfg.body, cfg.keepalive
        )
        # Each worker starts at a different path so several workers do not move in lockstep.
        reqs = reqs[index % len(reqs) :] + reqs[: index % len(reqs)]
        self.next_req = (
            itertools.repeat(reqs[0]) if len(reqs) == 1 else itertools.cycle(reqs)
        ).__next__
        # hot-path state (read by the protocol objects)
        self.running = False
        self.sent = 0
        self.status = [0] * 1000
        self.lat = []
        self.lat_append = self.lat.append
        self.rng = random.Random(None if cfg.seed is None else cfg.seed * 1000 + index)
        self.uniform = self.rng.uniform
        self.hold_low, self.hold_high = cfg.interval or (0.0, 0.0)
        self.idle = []
        self.next_i = 0
        self.rate_t0 = 0
        self.step_ns = NS / (cfg.rate / nworkers) if cfg.rate else 0.0
        # bookkeeping
        self.conns = set()
        self.req_errors = dict.fromkeys(REQUEST_ERROR_KINDS, 0)
        self.failed = dict.fromkeys(CONNECT_ERROR_KINDS, 0)
        self.attempted = self.established = self.closed_by_server = self.closed_by_client = 0
        self.cancelled = self.open_at_end = self.peak_open = 0
        self.to_open = 0
        self.ramp_tokens = 0.0
        self.ramp_per_tick = (cfg.ramp[0] / nworkers) if cfg.ramp else 0.0
        self.connect_tasks = set()
        self.fail_streak = 0
        self.accepting = True  # slots are (re)opened while this is true
        self.shutting_down = False
        self.stopped = None  # asyncio.Event: Ctrl-C / stop message
        self.addr = None
        self.family = socket.AF_INET
        self.interrupted = False
        self.warnings = []
        self.total_hist = None

    # -- connection slots ----------------------------------------------------------------
    def want_connection(self, delay: float = 0.0) -> None:
        """A slot needs a (new) connection: now, or after ``delay`` (back-off after a failure)."""
        if not self.accepting:
            return
        if delay > 0:
            # no bookkeeping needed: the timer re-checks ``accepting`` when it fires
            self.loop.call_later(delay, self.want_connection)
            return
        self._open()

    def _open(self) -> None:
        """Start one connect attempt."""
        task = self.loop.create_task(self._connect())
        self.connect_tasks.add(task)
        task.add_done_callback(self.connect_tasks.discard)

    async def _connect(self) -> None:
        """Connect one slot, classifying failures and backing off before the retry."""
        # counted here, not when the task is created: a task cancelled before it ran made no attempt
        self.attempted += 1
        conn = self.cls(self)
        loop = self.loop
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn, self.addr[0], self.addr[1], family=self.family
                ),
                self.cfg.timeout,
            )
        except asyncio.CancelledError:
            if conn.transport is None:  # else it was established and is accounted as a connection
                self.cancelled += 1
                conn.dead = True
            raise
        except (TimeoutError, OSError) as exc:
            if conn.transport is not None:
                # connected just as the attempt gave up: connection_lost accounts for it as ours
                conn.by_client = True
                return
            conn.dead = True
            self.failed[classify_exception(exc, connecting=True)] += 1
            self.fail_streak += 1
            self.want_connection(min(RETRY_MAX_S, RETRY_MIN_S * (2 ** min(self.fail_streak, 6))))
        else:
            self.fail_streak = 0

    def conn_made(self, conn) -> None:
        """Protocol callback: the TCP connection is up."""
        self.established += 1
        self.conns.add(conn)
        if len(self.conns) > self.peak_open:
            self.peak_open = len(self.conns)
        if self.shutting_down:  # connected while the run was being torn down
            self.open_at_end += 1
            conn.close_by_client()
            return
        conn.start()

    def conn_lost(self, conn, exc) -> None:
        """Protocol callback: the connection is gone; account for it and reopen the slot."""
        self.conns.discard(conn)
        if self.shutting_down:
            return
        if conn.by_client:
            # we aborted it (timeout / parse error): already counted where it happened
            self.closed_by_client += 1
        else:
            self.closed_by_server += 1
            if conn.busy:
                conn.busy = False
                kind = "closed" if exc is None else classify_exception(exc, connecting=False)
                self.req_errors[kind if kind in self.req_errors else "reset"] += 1
        self.want_connection()

    def conn_close_requested(self, conn) -> None:
        """The server answered 'Connection: close' (or HTTP/1.0): close and reconnect, no error."""
        conn.dead = True
        self.conns.discard(conn)
        self.closed_by_server += 1
        if conn.transport is not None:
            conn.transport.close()
        if conn.handle is not None:
            conn.handle.cancel()
            conn.handle = None
        self.want_connection()

    def conn_failed_request(self, conn, kind: str) -> None:
        """A request failed (timeout, unparsable response): count it, drop the connection."""
        if conn.busy:
            conn.busy = False
            self.req_errors[kind] += 1
        conn.close_by_client()

    # -- rate mode -----------------------------------------------------------------------
    def rate_idle(self, conn) -> None:
        """A connection is free: give it an overdue request or park it."""
        now = monotonic_ns()
        if self.running and self.rate_t0 + self.next_i * self.step_ns <= now:
            index = self.next_i
            self.next_i = index + 1
            conn.send_scheduled(self.rate_t0 + int(index * self.step_ns), now)
        else:
            self.idle.append(conn)

    def _rate_tick(self) -> None:
        """Release every request due before the next tick to an idle connection (1 ms batches)."""
        if not self.running:
            return
        now = monotonic_ns()
        # Timers tick once per millisecond, so requests due within the coming tick leave now; one
        # sent ahead of its slot is timed from its real send, one sent late from its scheduled slot.
        horizon = now + RATE_TICK_NS
        idle = self.idle
        t0, step = self.rate_t0, self.step_ns
        while idle and t0 + self.next_i * step <= horizon:
            conn = idle.pop()
            if conn.dead or conn.busy:
                continue
            index = self.next_i
            self.next_i = index + 1
            scheduled = t0 + int(index * step)
            conn.send_scheduled(scheduled if scheduled < now else now, now)
        wait = (t0 + self.next_i * step - horizon) / NS
        self.loop.call_later(min(max(wait, RATE_TICK_NS / NS), 0.05), self._rate_tick)

    def rate_backlog(self, now: int) -> int:
        """Requests whose scheduled time has passed but that were never sent."""
        if not self.step_ns or now < self.rate_t0:
            return 0
        due = (now - self.rate_t0) // self.step_ns + 1
        return max(0, int(due) - self.next_i)

    # -- ramp and timeouts -----------------------------------------------------------------
    def _ramp_tick(self) -> None:
        """Open up to N/workers new connections per ramp period (fractional shares accumulate)."""
        if not self.accepting or self.to_open <= 0:
            return
        self.ramp_tokens = min(self.ramp_tokens + self.ramp_per_tick, max(1.0, self.ramp_per_tick))
        n = min(int(self.ramp_tokens), self.to_open)
        self.ramp_tokens -= n
        self.to_open -= n
        for _ in range(n):
            self._open()
        if self.to_open > 0:
            self.loop.call_later(self.cfg.ramp[1], self._ramp_tick)

    def _sweep(self, period: float) -> None:
        """Time out requests in flight for longer than --timeout (one timer for all connections)."""
        if self.shutting_down:
            return
        limit = monotonic_ns() - int(self.cfg.timeout * NS)
        if self.mode == "rate":
            expired = [c for c in self.conns if c.busy and c.sent_at < limit]
        else:
            expired = [c for c in self.conns if c.busy and c.t0 < limit]
        for conn in expired:
            self.conn_failed_request(conn, "timeout")
        self.loop.call_later(period, self._sweep, period)

    def inflight(self) -> int:
        """Requests currently waiting for an answer."""
        return sum(1 for c in self.conns if c.busy)

    # -- the run ---------------------------------------------------------------------------
    def _snapshot(self) -> tuple:
        """Cumulative counters used to compute per-second deltas."""
        return (
            self.sent,
            sum(self.status),
            sum(self.req_errors.values()),
            sum(self.failed.values()),
            time.thread_time(),
        )

    def _tick(self, phase: str, second: int, t: float, dt: float, prev: tuple) -> tuple:
        """Emit one per-second record (deltas since ``prev``, that second's latency histogram)."""
        chunk = self.lat[:]
        del self.lat[:]  # same list object: the protocols hold its bound append
        hist = histogram_from_values(chunk)
        if phase == "run":
            self.total_hist.add(hist)
        now = self._snapshot()
        self.emit_tick(
            self.index,
            {
                "phase": phase,
                "second": second,
                "t": t,
                "dt": dt,
                "sent": now[0] - prev[0],
                "responses": now[1] - prev[1],
                "errors": now[2] - prev[2],
                "connect_errors": now[3] - prev[3],
                "open": len(self.conns),
                "cpu_s": now[4] - prev[4],
                "hist": encode_histogram(hist) if chunk else "",
            },
        )
        return now

    def _reset_measurement(self) -> None:
        """End of warm-up: forget request counters and latencies; in-flight ones count as sent."""
        del self.lat[:]
        self.status[:] = [0] * len(self.status)
        for key in self.req_errors:
            self.req_errors[key] = 0
        self.sent = self.inflight()

    async def _sleep_until(self, deadline_ns: int) -> bool:
        """Sleep until a monotonic deadline; True when stopped early."""
        delay = (deadline_ns - monotonic_ns()) / NS
        if delay <= 0:
            return self.stopped.is_set()
        try:
            await asyncio.wait_for(self.stopped.wait(), delay)
            return True
        except TimeoutError:
            return False

    def stop(self) -> None:
        """Ctrl-C / parent's stop message: end the run now, still producing a report."""
        self.interrupted = True
        if self.stopped is not None:
            self.stopped.set()

    async def run(self, start_at_ns: int) -> dict:
        """Execute the whole run on the current loop and return this worker's final totals."""
        self.loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        if self.interrupted:  # stop arrived before the loop started
            self.stopped.set()
        self.total_hist = new_histogram()
        # resolve once: every connect then goes straight to the address, no per-connection DNS
        infos = await self.loop.getaddrinfo(self.cfg.host, self.cfg.port, type=socket.SOCK_STREAM)
        self.family, self.addr = infos[0][0], infos[0][4][:2]

        stopped = await self._sleep_until(start_at_ns)
        begin = monotonic_ns()
        warm_end = begin + int(self.cfg.warmup * NS)
        end = warm_end + int(self.cfg.duration * NS)
        self.running = True
        if self.mode == "rate":
            # workers interleave their schedules so K workers together send evenly spaced requests
            self.rate_t0 = begin + int(self.index * self.step_ns / self.nworkers)
            self.loop.call_soon(self._rate_tick)
        if self.cfg.ramp:
            self.to_open = self.slots
            self._ramp_tick()
        else:
            for _ in range(self.slots):
                self._open()
        sweep = min(1.0, max(0.01, self.cfg.timeout / 10))
        self.loop.call_later(sweep, self._sweep, sweep)

        prev = self._snapshot()
        second = 0
        last = begin
        # warm-up: progress lines only, then forget everything measured so far
        while self.cfg.warmup > 0 and not stopped:
            second += 1
            tick_at = min(begin + second * NS, warm_end)
            stopped = await self._sleep_until(tick_at)
            now = monotonic_ns()
            prev = self._tick("warmup", second, (now - begin) / NS, (now - last) / NS, prev)
            last = now
            if tick_at >= warm_end:
                break
        self._reset_measurement()
        # requests in flight at the boundary count as sent in the first measured second
        prev = (0,) + self._snapshot()[1:]
        cpu0, wall0 = prev[4], monotonic_ns()
        second = 0
        last = wall0
        while not stopped:
            second += 1
            tick_at = min(warm_end + second * NS, end)
            stopped = await self._sleep_until(tick_at)
            if tick_at >= end or stopped:
                break
            now = monotonic_ns()
            prev = self._tick("run", second, (now - wall0) / NS, (now - last) / NS, prev)
            last = now

        # stop sending, give in-flight requests a bounded chance to finish
        self.running = False
        self.accepting = False
        backlog = self.rate_backlog(monotonic_ns())
        drain_until = monotonic_ns() + int(min(self.cfg.timeout, DRAIN_MAX_S) * NS)
        while self.inflight() and monotonic_ns() < drain_until:
            await asyncio.sleep(0.005)
        now = monotonic_ns()
        measured = (now - wall0) / NS
        cancelled = self.inflight()
        self.req_errors["cancelled"] += cancelled
        for conn in self.conns:
            conn.busy = False
        self._tick("run", second, measured, (now - last) / NS, prev)
        cpu = time.thread_time() - cpu0
        await self._shutdown()
        status = {str(code): n for code, n in enumerate(self.status) if n}
        return {
            "index": self.index,
            "connections": {
                "attempted": self.attempted,
                "established": self.established,
                "closed_by_server": self.closed_by_server,
                "closed_by_client": self.closed_by_client,
                "open_at_end": self.open_at_end,
                "peak_open": self.peak_open,
                "cancelled": self.cancelled,
                "failed": dict(self.failed),
            },
            "requests": {
                "sent": self.sent,
                "status": status,
                "errors": dict(self.req_errors),
                "backlog_at_end": backlog,
            },
            "hist": encode_histogram(self.total_hist),
            "cpu_s": cpu,
            "measured_s": measured,
            "interrupted": self.interrupted,
            "warnings": self.warnings,
        }

    async def _shutdown(self) -> None:
        """Close every connection, cancel every pending connect: leave nothing behind."""
        self.shutting_down = True
        self.open_at_end = len(self.conns)
        for conn in list(self.conns):
            if conn.handle is not None:
                conn.handle.cancel()
            # an orderly FIN, as a polite client leaves (errors use abort() instead)
            conn.by_client = True
            conn.transport.close()
        for task in list(self.connect_tasks):
            task.cancel()
        if self.connect_tasks:
            await asyncio.gather(*self.connect_tasks, return_exceptions=True)
        # let the transports deliver connection_lost before the loop closes
        for _ in range(3):
            await asyncio.sleep(0)
        deadline = monotonic_ns() + NS
        while self.conns and monotonic_ns() < deadline:
            await asyncio.sleep(0.01)


def _install_signals(loop, callback) -> list[int]:
    """Route Ctrl-C / SIGTERM to ``callback`` (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return []
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
        except (ValueError, RuntimeError, NotImplementedError):
            pass
    return installed


def run_in_process(cfg, agg: Aggregator) -> bool:
    """One worker on a fresh loop in this process (the default, and what the speed numbers use)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        # Called from code that already runs an event loop in this thread (a notebook, Playwright's
        # sync API): a thread of our own gets its own loop instead of failing.
        box = {}

        def target():
            """Run on this thread's own loop, keeping the outcome for the caller."""
            try:
                box["result"] = run_in_process(cfg, agg)
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=target, name="bench-worker-0")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["result"]
    loop = new_loop()
    worker = Worker(cfg, 0, 1, agg.tick)
    installed = _install_signals(loop, worker.stop)
    try:
        result = loop.run_until_complete(worker.run(monotonic_ns()))
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    agg.done(0, result)
    return worker.interrupted


def worker_main(cfg, index: int, nworkers: int, pipe) -> None:
    """Entry point of a worker process: wait for the common start, run, send the totals back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop and tells us
    loop = new_loop()
    worker = Worker(cfg, index, nworkers, lambda i, rec: pipe.send(("tick", i, rec)))
    pipe.send(("ready", index))
    message = pipe.recv()
    if message[0] == "stop":
        worker.stop()
        start_at = monotonic_ns()
    else:
        start_at = message[1]

    def on_message():
        """The parent wrote to the pipe: a stop request, or EOF when it died."""
        try:
            msg = pipe.recv()
        except (EOFError, OSError):
            msg = ("stop",)
            loop.remove_reader(pipe.fileno())
        if msg[0] == "stop":
            worker.stop()

    loop.add_reader(pipe.fileno(), on_message)
    signal.signal(signal.SIGTERM, lambda *_: loop.call_soon_threadsafe(worker.stop))
    try:
        result = loop.run_until_complete(worker.run(start_at))
    finally:
        loop.remove_reader(pipe.fileno())
        loop.close()
    pipe.send(("done", index, result))
    pipe.close()


class _StopFlag:
    """Set by the parent's signal handler; forwarded to the workers by the message loop."""

    def __init__(self):
        self.set = False

    def handler(self, signum, frame):
        """Signal handler: remember the request (forwarded outside the handler)."""
        self.set = True


def run_workers(cfg, agg: Aggregator) -> bool:
    """K worker processes started together; their ticks and totals are merged by ``agg``."""
    ctx = multiprocessing.get_context(
        "spawn"
    )  # no fork: the caller may have threads (test suites do)
    procs, pipes = [], []
    for index in range(cfg.workers):
        parent_end, child_end = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=worker_main,
            args=(cfg, index, cfg.workers, child_end),
            name=f"bench-worker-{index}",
            daemon=True,
        )
        proc.start()
        child_end.close()
        procs.append(proc)
        pipes.append(parent_end)
    flag = _StopFlag()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, flag.handler)
    alive = dict(enumerate(pipes))
    stop_sent = False
    try:
        for index, pipe in enumerate(pipes):
            try:
                ready = pipe.poll(60) and pipe.recv()[0] == "ready"
            except (EOFError, OSError):
                ready = False
            if not ready:
                raise RuntimeError(f"worker process {index} did not start")
        start_at = monotonic_ns() + 100_000_000
        for pipe in pipes:
            pipe.send(("stop",) if flag.set else ("start", start_at))
        deadline = (
            time.monotonic() + 0.1 + cfg.warmup + cfg.duration + min(cfg.timeout, DRAIN_MAX_S) + 60
        )
        while alive:
            if flag.set and not stop_sent:
                stop_sent = True
                for pipe in alive.values():
                    try:
                        pipe.send(("stop",))
                    except OSError:
                        pass
            if time.monotonic() > deadline:
                for index in list(alive):
                    procs[index].terminate()
                    agg.worker_died(index)
                    del alive[index]
                break
            ready = multiprocessing.connection.wait(list(alive.values()), timeout=0.2)
            for pipe in ready:
                index = pipes.index(pipe)
                try:
                    message = pipe.recv()
                except (EOFError, OSError):
                    agg.worker_died(index)
                    del alive[index]
                    continue
                if message[0] == "tick":
                    agg.tick(message[1], message[2])
                elif message[0] == "done":
                    agg.done(message[1], message[2])
                    del alive[index]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for pipe in pipes:
            pipe.close()
    return flag.set or any(r.get("interrupted") for r in agg.results.values())


def run(cfg, agg: Aggregator) -> bool:
    """Run the configured benchmark; returns True when it was interrupted (Ctrl-C / SIGTERM)."""
    if cfg.workers == 1:
        return run_in_process(cfg, agg)
    return run_workers(cfg, agg)
