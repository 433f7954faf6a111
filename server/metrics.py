"""What the server measures about itself: Prometheus metrics and a rolling summary for /api/stats."""
from __future__ import annotations

import asyncio
import bisect
import gc
import os
import resource
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# Latency buckets shared by Prometheus and the in-process summary: 100 µs .. 30 s
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.0075, 0.01,
                   0.015, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0,
                   7.5, 10.0, 15.0, 30.0)
TIMELINE_SECONDS = 120
SUMMARY_WINDOW = 10  # seconds of history behind the p50/p99 in /api/stats
# Finished requests wait in a list and are folded into the counts by the lag task (every 0.1 s),
# before every read, and whenever this many are waiting (a loop too busy to run the task)
FOLD_BATCH = 1024


class BucketCounts:
    """Counts per latency bucket; quantiles by linear interpolation inside a bucket."""

    __slots__ = ("counts", "total", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0
        self.sum = 0.0

    def add(self, seconds: float) -> None:
        self.add_at(bisect.bisect_left(LATENCY_BUCKETS, seconds), seconds)

    def add_at(self, index: int, seconds: float) -> None:
        """Count a value whose bucket index the caller already knows."""
        self.counts[index] += 1
        self.total += 1
        self.sum += seconds

    def merge(self, other: BucketCounts) -> None:
        for i, count in enumerate(other.counts):
            self.counts[i] += count
        self.total += other.total
        self.sum += other.sum

    def quantile(self, q: float) -> float | None:
        """The q-quantile in seconds (None without data)."""
        if not self.total:
            return None
        rank = q * self.total
        seen = 0
        for i, count in enumerate(self.counts):
            if count and seen + count >= rank:
                low = LATENCY_BUCKETS[i - 1] if i > 0 else 0.0
                high = LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS) else LATENCY_BUCKETS[-1] * 2
                return low + (high - low) * ((rank - seen) / count)
            seen += count
        return LATENCY_BUCKETS[-1]


@dataclass
class RouteSummary:
    """Since-start totals for one route."""

    latency: BucketCounts = field(default_factory=BucketCounts)
    errors: int = 0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class Metrics:
    """The Prometheus registry of one server process plus the rolling view the dashboard shows."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.started = time.time()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._routes: dict[str, RouteSummary] = {}
        # A finished request is one tuple appended to a list on the hot path; fold() counts them
        # into plain dicts and lists in one loop, and those become Prometheus families only when
        # /metrics is scraped. (prometheus-client's labels() + observe() cost ~3 µs per request,
        # 5-14% of a hello request; counting each request as it finished cost 1.1 µs in process
        # and ~7% over sockets, where the cache is cold between requests.)
        self._pending: list[tuple[str, str, int, float]] = []
        self._request_counts: dict[tuple[str, str, int], int] = {}
        r.register(_RequestCollector(self._request_counts, self._routes, self.fold))
        self.loop_lag = Histogram("event_loop_lag_seconds", "how late a periodic timer fired",
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.outbound = Counter("outbound_requests", "outbound HTTP requests by result", ["result"],
                                registry=r)
        self.outbound_latency = Histogram("outbound_request_duration_seconds",
                                          "outbound HTTP request latency", buckets=LATENCY_BUCKETS,
                                          registry=r)
        self.db_latency = Histogram("db_call_duration_seconds", "database call latency",
                                    ["operation", "result"], buckets=LATENCY_BUCKETS, registry=r)
        self.cache_latency = Histogram("cache_call_duration_seconds", "cache call latency",
                                       ["operation", "result"], buckets=LATENCY_BUCKETS, registry=r)
        ProcessCollector(registry=r)
        GCCollector(registry=r)  # collections and collected objects per generation
        # how long each collection stopped the process, per generation (gc.callbacks, while started)
        self.gc_pauses = [BucketCounts() for _ in range(3)]
        self._gc_started = 0.0
        r.register(_GCPauseCollector(self.gc_pauses))
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        r.register(_FunctionGauges(self._gauges))
        self._counters: dict[str, tuple[str, Callable[[], float]]] = {}
        r.register(_FunctionCounters(self._counters))
        self.last_loop_lag = 0.0
        # rolling per-second view for /api/stats and the dashboard
        self._second = int(time.time())
        self._current = BucketCounts()
        self._current_errors = 0
        self._timeline: deque[tuple[int, BucketCounts, int]] = deque(maxlen=TIMELINE_SECONDS)
        self.total_requests = 0
        self._lag_task: asyncio.Task[None] | None = None

    # --- sources the server plugs in ---

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Expose a value read at scrape time (open connections, requests in flight...)."""
        self._gauges[name] = (help_text, read)

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Expose a running total read at scrape time (connections refused...); shown as NAME_total."""
        self._counters[name] = (help_text, read)

    # --- recording (hot path: keep it small) ---

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished HTTP request (in the counts at the next fold())."""
        if self.enabled:
            pending = self._pending
            pending.append((route, method, status, seconds))
            if len(pending) >= FOLD_BATCH:
                self.fold()

    def fold(self) -> None:
        """Count the requests finished since the last fold, then start a new second if one began.

        Requests fold into the second that was current when they are folded: with the lag task
        folding every 0.1 s, at most that much of one second's requests lands in the previous one.
        """
        pending = self._pending
        if pending:
            self._pending = []
            counts, routes = self._request_counts, self._routes
            current = self._current
            current_counts = current.counts
            errors = 0
            bisect_left, buckets = bisect.bisect_left, LATENCY_BUCKETS
            for route, method, status, seconds in pending:
                key = (route, method, status)
                counts[key] = counts.get(key, 0) + 1
                index = bisect_left(buckets, seconds)
                current_counts[index] += 1
                current.sum += seconds
                summary = routes.get(route)
                if summary is None:
                    summary = routes[route] = RouteSummary()
                summary.latency.add_at(index, seconds)
                if status >= 500:
                    errors += 1
                    summary.errors += 1
            current.total += len(pending)
            self._current_errors += errors
            self.total_requests += len(pending)
        now = int(time.time())
        if now != self._second:
            self._roll(now)

    def observe_outbound(self, result: str, seconds: float) -> None:
        """Count one outbound request ("ok", "http_error", "timeout", "refused", ...)."""
        if self.enabled:
            self.outbound.labels(result).inc()
            self.outbound_latency.observe(seconds)

    def observe_db(self, operation: str, ok: bool, seconds: float) -> None:
        """Time one database call."""
        if self.enabled:
            self.db_latency.labels(operation, "ok" if ok else "error").observe(seconds)

    def observe_cache(self, operation: str, ok: bool, seconds: float) -> None:
        """Time one cache call."""
        if self.enabled:
            self.cache_latency.labels(operation, "ok" if ok else "error").observe(seconds)

    def _roll(self, now: int) -> None:
        self._timeline.append((self._second, self._current, self._current_errors))
        # seconds with no request at all still belong on the timeline
        for second in range(max(self._second + 1, now - TIMELINE_SECONDS), now):
            self._timeline.append((second, BucketCounts(), 0))
        self._second = now
        self._current = BucketCounts()
        self._current_errors = 0

    # --- event-loop lag ---

    async def start(self, interval: float = 0.1) -> None:
        """Start measuring event-loop lag and garbage-collector pauses."""
        self._lag_task = asyncio.create_task(self._measure_lag(interval))
        if self.enabled:
            gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses[info["generation"]].add(time.perf_counter() - self._gc_started)

    async def _measure_lag(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - before - interval)
            self.last_loop_lag = lag
            if self.enabled:
                self.loop_lag.observe(lag)
                self.fold()

    async def close(self) -> None:
        """Stop the lag task and the pause timing."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._lag_task is not None:
            self._lag_task.cancel()
            try:
                await self._lag_task
            except asyncio.CancelledError:
                pass

    # --- reading ---

    def prometheus_text(self) -> bytes:
        """The Prometheus exposition of every metric of this process."""
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """Everything summary() needs, as plain data that survives JSON (to merge processes)."""
        self.fold()
        now = self._second
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "pid": os.getpid(), "time": time.time(), "started": self.started, "second": now,
            "enabled": self.enabled, "total": self.total_requests,
            "timeline": [[second, c.counts, c.total, c.sum, errors]
                         for second, c, errors in self._timeline],
            "current": [now, self._current.counts, self._current.total, self._current.sum,
                        self._current_errors],
            "routes": {route: [r.latency.counts, r.latency.total, r.latency.sum, r.errors]
                       for route, r in self._routes.items()},
            "gauges": {name: read() for name, (_, read) in self._gauges.items()},
            "loop_lag": self.last_loop_lag,
            "process": {"rss_bytes": _rss_bytes(),
                        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                        "open_fds": _open_fds()},
        }

    def summary(self) -> dict[str, Any]:
        """The JSON summary of this process behind /api/stats and the dashboard."""
        return merge_snapshots([self.snapshot()])


def _counts(raw: list[Any]) -> BucketCounts:
    counts = BucketCounts()
    counts.counts, counts.total, counts.sum = list(raw[0]), raw[1], raw[2]
    return counts


def merge_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary for one or several processes: sums, and quantiles of merged histograms."""
    now = max(snap["second"] for snap in snapshots)
    per_second: dict[int, tuple[BucketCounts, list[int]]] = {}
    routes: dict[str, RouteSummary] = {}
    gauges: dict[str, float] = {}
    for snap in snapshots:
        for second, counts, total, total_sum, errors in [*snap["timeline"], snap["current"]]:
            bucket, err = per_second.setdefault(second, (BucketCounts(), [0]))
            bucket.merge(_counts([counts, total, total_sum]))
            err[0] += errors
        for route, (counts, total, total_sum, errors) in snap["routes"].items():
            summary = routes.setdefault(route, RouteSummary())
            summary.latency.merge(_counts([counts, total, total_sum]))
            summary.errors += errors
        for name, value in snap["gauges"].items():
            gauges[name] = gauges.get(name, 0) + value
    window = BucketCounts()
    for second, (counts, _) in per_second.items():
        if second >= now - SUMMARY_WINDOW:
            window.merge(counts)
    last = per_second.get(now - 1)
    timeline = [(second, *per_second[second]) for second in sorted(per_second) if second < now][-60:]
    return {
        "time": time.time(),
        "uptime_s": round(time.time() - min(snap["started"] for snap in snapshots), 3),
        "pid": snapshots[0]["pid"],
        "workers": [{"pid": snap["pid"], "requests": snap["total"],
                     "rss_bytes": snap["process"]["rss_bytes"]} for snap in snapshots],
        "metrics_enabled": all(snap["enabled"] for snap in snapshots),
        "requests": {
            "total": sum(snap["total"] for snap in snapshots),
            "per_second": last[0].total if last else 0,
            "errors_per_second": last[1][0] if last else 0,
            "in_flight": gauges.get("http_requests_in_flight", 0),
        },
        "latency_ms": {"p50": _ms(window.quantile(0.5)), "p90": _ms(window.quantile(0.9)),
                       "p99": _ms(window.quantile(0.99)), "window_s": SUMMARY_WINDOW},
        "connections": {"http": gauges.get("http_connections_open", 0),
                        "tcp": gauges.get("tcp_connections_open", 0),
                        "live": gauges.get("live_clients", 0)},
        "event_loop_lag_ms": round(max(snap["loop_lag"] for snap in snapshots) * 1000, 3),
        "process": {key: sum(snap["process"][key] for snap in snapshots)
                    for key in ("rss_bytes", "cpu_seconds", "open_fds")},
        "routes": sorted(({
            "route": route, "count": s.latency.total, "errors": s.errors,
            "mean_ms": _ms(s.latency.sum / s.latency.total) if s.latency.total else None,
            "p50_ms": _ms(s.latency.quantile(0.5)), "p99_ms": _ms(s.latency.quantile(0.99)),
        } for route, s in routes.items()), key=lambda r: -r["count"]),
        "timeline": [{"t": second, "rps": counts.total, "errors": errors[0],
                      "p50_ms": _ms(counts.quantile(0.5)), "p99_ms": _ms(counts.quantile(0.99))}
                     for second, counts, errors in timeline],
    }


_BOUNDS = [*(floatToGoString(b) for b in LATENCY_BUCKETS), "+Inf"]


def _cumulative(counts: BucketCounts) -> list[tuple[str, int]]:
    """Prometheus histogram buckets (upper bound, count at or below it) of one BucketCounts."""
    total, buckets = 0, []
    for bound, count in zip(_BOUNDS, list(counts.counts), strict=True):
        total += count
        buckets.append((bound, total))
    return buckets


class _RequestCollector:
    """Prometheus families for the request counts and latencies kept by Metrics.observe_request."""

    def __init__(self, counts: dict[tuple[str, str, int], int], routes: dict[str, RouteSummary],
                 fold: Callable[[], None]) -> None:
        self._counts = counts
        self._routes = routes
        self._fold = fold

    def collect(self) -> Any:
        self._fold()
        requests = CounterMetricFamily("http_requests", "HTTP requests by route, method and status",
                                       labels=["route", "method", "status"])
        for (route, method, status), count in list(self._counts.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        latency = HistogramMetricFamily("http_request_duration_seconds",
                                        "HTTP request latency by route", labels=["route"])
        for route, summary in list(self._routes.items()):
            latency.add_metric([route], _cumulative(summary.latency), summary.latency.sum)
        yield latency

    def describe(self) -> list[Any]:
        return []


class _GCPauseCollector:
    """python_gc_pause_seconds: a histogram per generation of the collector's pauses."""

    def __init__(self, pauses: list[BucketCounts]) -> None:
        self._pauses = pauses

    def collect(self) -> Any:
        family = HistogramMetricFamily("python_gc_pause_seconds",
                                       "how long garbage collections stopped the process",
                                       labels=["generation"])
        for generation, pause in enumerate(self._pauses):
            family.add_metric([str(generation)], _cumulative(pause), pause.sum)
        yield family

    def describe(self) -> list[Any]:
        return []


class _FunctionGauges:
    """A Prometheus collector for values read at scrape time."""

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]]) -> None:
        self._gauges = gauges

    def collect(self) -> Any:
        for name, (help_text, read) in list(self._gauges.items()):
            family = GaugeMetricFamily(name, help_text)
            family.add_metric([], float(read()))
            yield family

    def describe(self) -> list[Any]:
        return []


class _FunctionCounters(_FunctionGauges):
    """A Prometheus collector for running totals read at scrape time."""

    def collect(self) -> Any:
        for name, (help_text, read) in list(self._gauges.items()):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], float(read()))
            yield family


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1
