"""Error classification, HDR histograms and the merge of per-worker results into one report."""

from __future__ import annotations

import errno
from collections import Counter

from hdrh.histogram import HdrHistogram

SCHEMA_VERSION = 1
LOWEST_US = 1
HIGHEST_US = (
    3_600_000_000  # one hour: longer latencies are clamped (and the run would have timed out)
)
SIGNIFICANT_DIGITS = 3
SATURATION_PERCENT = 90.0
PERCENTILES = (
    ("p50", 50.0),
    ("p75", 75.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
    ("p99_99", 99.99),
)

REQUEST_ERROR_KINDS = ("timeout", "closed", "reset", "parse", "cancelled")
CONNECT_ERROR_KINDS = (
    "refused",
    "timeout",
    "reset",
    "unreachable",
    "fd_limit",
    "no_ports",
    "other",
)


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds; every part of the tool uses the same layout."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def histogram_from_values(values) -> HdrHistogram:
    """Histogram of raw microsecond values; counted first: one record call per distinct value."""
    hist = new_histogram()
    record = hist.record_value
    for value, count in Counter(values).items():
        record(value if value < HIGHEST_US else HIGHEST_US, count)
    return hist


def encode_histogram(hist: HdrHistogram) -> str:
    """Compressed, base64 HDR encoding (the standard HdrHistogram V2 format) as text."""
    return hist.encode().decode("ascii")


def merge_encoded(encoded) -> HdrHistogram:
    """Add encoded histograms bucket by bucket: merged, not averaged, so percentiles stay exact."""
    total = new_histogram()
    for item in encoded:
        if item:
            total.decode_and_add(item.encode("ascii") if isinstance(item, str) else item)
    return total


def latency_summary(hist: HdrHistogram) -> dict:
    """min/mean/stdev/percentiles/max in milliseconds (0.0 for all when nothing was recorded)."""
    count = hist.get_total_count()
    out = {"count": count}
    if not count:
        out.update({k: 0.0 for k in ("min", "mean", "stdev", *[n for n, _ in PERCENTILES], "max")})
        return out
    ms = 1000.0
    out["min"] = hist.get_min_value() / ms
    out["mean"] = round(hist.get_mean_value() / ms, 6)
    out["stdev"] = round(hist.get_stddev() / ms, 6)
    for name, pct in PERCENTILES:
        out[name] = hist.get_value_at_percentile(pct) / ms
    out["max"] = hist.get_max_value() / ms
    return out


def classify_exception(exc: BaseException | None, connecting: bool) -> str:
    """Map a socket error to an error kind: refused, timeout, reset, closed, fd_limit, ..."""
    if exc is None:
        return "closed"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "reset"
    code = getattr(exc, "errno", None)
    if code in (errno.EMFILE, errno.ENFILE):
        return "fd_limit"
    if code == errno.EADDRNOTAVAIL:
        return "no_ports"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.ECONNRESET, errno.EPIPE):
        return "reset"
    if code == errno.ETIMEDOUT:
        return "timeout"
    return "other" if connecting else "reset"


def _add_counts(into: dict, more: dict) -> None:
    """into[k] += more[k] for every key."""
    for key, value in more.items():
        into[key] = into.get(key, 0) + value


class Aggregator:
    """Collects per-second ticks and final results of all workers; prints the progress line."""

    def __init__(self, workers: int, progress_stream=None):
        self.workers = workers
        self.stream = progress_stream
        self.pending: dict[tuple[str, int], list[dict]] = {}
        self.timeline: list[dict] = []
        self.cumulative = new_histogram()
        self.results: dict[int, dict] = {}
        self.dead: set[int] = set()
        self.last_printed = None

    def _expected(self) -> int:
        """Workers that can still report (a dead worker sends no more ticks)."""
        return max(1, self.workers - len(self.dead))

    def tick(self, index: int, rec: dict) -> None:
        """One worker finished second ``rec['second']``; merge when every worker has reported it."""
        key = (rec["phase"], rec["second"])
        recs = self.pending.setdefault(key, [])
        recs.append(rec)
        if len(recs) >= self._expected():
            self._merge_second(key, self.pending.pop(key))

    def flush(self) -> None:
        """Merge seconds some worker never reported (it died or stopped early), in order."""
        for key in sorted(self.pending, key=lambda k: (k[0] != "warmup", k[1])):
            self._merge_second(key, self.pending[key])
        self.pending.clear()

    def _merge_second(self, key, recs: list[dict]) -> None:
        """Sum one second across workers into the timeline and print its progress line."""
        phase, second = key
        hist = merge_encoded(r["hist"] for r in recs)
        dt = max(r["dt"] for r in recs) or 1e-9
        responses = sum(r["responses"] for r in recs)
        entry = {
            "t": round(max(r["t"] for r in recs), 3),
            "dt": round(dt, 4),
            "sent": sum(r["sent"] for r in recs),
            "responses": responses,
            "errors": sum(r["errors"] for r in recs),
            "connect_errors": sum(r["connect_errors"] for r in recs),
            "requests_per_s": round(responses / dt, 2),
            "open_connections": sum(r["open"] for r in recs),
            "latency_ms": None,
            "cpu_percent": round(100.0 * sum(r["cpu_s"] for r in recs) / dt, 1),
        }
        if hist.get_total_count():
            entry["latency_ms"] = {
                "p50": hist.get_value_at_percentile(50) / 1000.0,
                "p90": hist.get_value_at_percentile(90) / 1000.0,
                "p99": hist.get_value_at_percentile(99) / 1000.0,
                "max": hist.get_max_value() / 1000.0,
            }
        if phase == "run":
            self.timeline.append(entry)
            self.cumulative.add(hist)
        if self.stream is not None:
            self._print(phase, second, entry)

    def _print(self, phase: str, second: int, entry: dict) -> None:
        """The once-per-second progress line on stderr."""
        p99 = (
            self.cumulative.get_value_at_percentile(99) / 1000.0
            if self.cumulative.get_total_count()
            else 0.0
        )
        label = "warm-up" if phase == "warmup" else f"{entry['t']:7.1f}s"
        errors = entry["errors"] + entry["connect_errors"]
        line = (
            f"[{label}] open {entry['open_connections']:>7,} | "
            f"{entry['requests_per_s']:>11,.0f} req/s | errors {errors:>6,} | "
            f"p99 so far {p99:9.3f} ms | cpu {entry['cpu_percent']:5.1f}%"
        )
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.stream = None  # stderr went away (closed pipe): keep running silently

    def done(self, index: int, result: dict) -> None:
        """A worker's final totals."""
        self.results[index] = result

    def worker_died(self, index: int) -> None:
        """A worker vanished without a result: stop waiting for its ticks."""
        self.dead.add(index)
        for key in [k for k, recs in self.pending.items() if len(recs) >= self._expected()]:
            self._merge_second(key, self.pending.pop(key))

    def finish(self, config: dict, meta: dict, warnings: list[str]) -> dict:
        """The complete report (JSON schema version 1) from everything received."""
        self.flush()
        results = [self.results[i] for i in sorted(self.results)]
        conns = {
            "target": config["connections"],
            "attempted": 0,
            "established": 0,
            "closed_by_server": 0,
            "closed_by_client": 0,
            "open_at_end": 0,
            "peak_open": 0,
            "cancelled": 0,
        }
        failed = {k: 0 for k in CONNECT_ERROR_KINDS}
        req_errors = {k: 0 for k in REQUEST_ERROR_KINDS}
        status: dict[str, int] = {}
        sent = backlog = 0
        for res in results:
            for key in conns:
                if key != "target":
                    conns[key] += res["connections"][key]
            _add_counts(failed, res["connections"]["failed"])
            _add_counts(req_errors, res["requests"]["errors"])
            _add_counts(status, res["requests"]["status"])
            sent += res["requests"]["sent"]
            backlog += res["requests"]["backlog_at_end"]
        hist = merge_encoded(r["hist"] for r in results)
        responses_total = sum(status.values())
        non_ok = sum(n for code, n in status.items() if not 200 <= int(code) < 400)
        errors_total = sum(req_errors.values())
        failed_total = sum(failed.values())
        measured = max((r["measured_s"] for r in results), default=0.0)
        denominator = sent + failed_total
        if denominator:
            error_rate = (errors_total + failed_total + non_ok) / denominator
        else:
            error_rate = 1.0 if conns["attempted"] and not conns["established"] else 0.0
        cpu_workers = []
        for res in results:
            wall = res["measured_s"] or 1e-9
            cpu_workers.append(
                {
                    "index": res["index"],
                    "cpu_s": round(res["cpu_s"], 4),
                    "wall_s": round(res["measured_s"], 4),
                    "percent": round(100.0 * res["cpu_s"] / wall, 1),
                }
            )
        saturated = any(w["percent"] >= SATURATION_PERCENT for w in cpu_workers)
        warnings = list(warnings)
        for res in results:
            warnings.extend(w for w in res.get("warnings", []) if w not in warnings)
        if saturated:
            worst = max(cpu_workers, key=lambda w: w["percent"])
            warnings.append(
                f"load generator saturated: worker {worst['index']} used {worst['percent']:.0f}% "
                "of a core, so these numbers may describe the client rather than the server "
                "(try --workers)"
            )
        if self.dead:
            warnings.append(f"worker(s) {sorted(self.dead)} died; their results are missing")
        if backlog:
            warnings.append(
                f"{backlog:,} scheduled requests were never sent: every connection was busy "
                "(the server fell behind the rate; they are counted in requests.backlog_at_end)"
            )
        rps = responses_total / measured if measured else 0.0
        rate = None
        if config["mode"] == "rate":
            target = config["rate"]
            rate = {"target": target, "achieved": round(rps, 2)}
            if measured >= 1 and rps < 0.95 * target:
                warnings.append(f"achieved {rps:,.0f} requests/s, below the target {target:,.0f}/s")
        if failed["fd_limit"]:
            warnings.append(
                f"{failed['fd_limit']:,} connections failed on the open-file limit (ulimit -n)"
            )
        if failed["no_ports"]:
            warnings.append(f"{failed['no_ports']:,} connections failed: out of local ports")
        errors_by_kind = dict(req_errors)
        for kind, n in failed.items():
            errors_by_kind[kind] = errors_by_kind.get(kind, 0) + n
        conns["failed"] = failed
        conns["failed_total"] = failed_total
        conns["peak_open"] = max(
            conns["peak_open"], max((e["open_connections"] for e in self.timeline), default=0)
        )
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": meta["tool"],
            "started_at": meta["started_at"],
            "interrupted": meta["interrupted"],
            "config": config,
            "duration_s": round(measured, 4),
            "connections": conns,
            "requests": {
                "sent": sent,
                "responses": dict(sorted(status.items())),
                "responses_total": responses_total,
                "non_2xx_3xx": non_ok,
                "errors": req_errors,
                "errors_total": errors_total,
                "backlog_at_end": backlog,
            },
            "errors": {k: v for k, v in errors_by_kind.items() if v},
            "error_rate": round(error_rate, 6),
            "requests_per_s": round(rps, 2),
            "rate": rate,
            "latency_ms": latency_summary(hist),
            "latency_histogram": encode_histogram(hist),
            "cpu": {
                "workers": cpu_workers,
                "total_cpu_s": round(sum(w["cpu_s"] for w in cpu_workers), 4),
                "max_percent": max((w["percent"] for w in cpu_workers), default=0.0),
                "saturated": saturated,
            },
            "warnings": warnings,
            "timeline": self.timeline,
        }
