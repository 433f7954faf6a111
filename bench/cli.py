"""Command-line parsing and validation: argv in, a frozen Config out (or one clear error line)."""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import TOOL_NAME, __version__

MODES = ("closed", "rate", "hold")
MAX_CONNECTIONS = 1_000_000
MAX_WORKERS = 256
MAX_DURATION = 7 * 24 * 3600.0
MAX_RATE = 10_000_000.0
MAX_PATHS = 100_000
MAX_BODY = 64 * 1024 * 1024
DEFAULT_HOLD_RAMP = (10, 0.010)  # the seed scenario: 10 new connections every 10 ms
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "us": 1e-6}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|min|m|h)?\s*$")
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class UsageError(ValueError):
    """Bad command-line input: reported as one line on stderr with exit status 2."""


@dataclass(frozen=True)
class Config:
    """Everything one run needs; immutable and picklable so worker processes get an exact copy."""

    url: str
    host: str
    port: int
    host_header: str
    mode: str
    method: str
    paths: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    body: bytes
    connections: int
    duration: float
    warmup: float
    ramp: tuple[int, float] | None
    rate: float | None
    interval: tuple[float, float] | None
    workers: int
    timeout: float
    keepalive: bool
    json_path: str | None
    report_path: str | None
    png_path: str | None
    max_error_rate: float | None
    progress: bool
    quiet: bool
    seed: int | None

    def to_dict(self) -> dict:
        """The run settings as JSON-ready data (the ``config`` object of the JSON report)."""
        return {
            "url": self.url,
            "mode": self.mode,
            "method": self.method,
            "paths": list(self.paths),
            "headers": [[k, v] for k, v in self.headers],
            "body_bytes": len(self.body),
            "connections": self.connections,
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "ramp": (
                None
                if self.ramp is None
                else {"connections": self.ramp[0], "period_s": self.ramp[1]}
            ),
            "rate": self.rate,
            "interval_s": None if self.interval is None else list(self.interval),
            "workers": self.workers,
            "timeout_s": self.timeout,
            "keepalive": self.keepalive,
            "max_error_rate": self.max_error_rate,
            "seed": self.seed,
        }


def parse_duration(text: str, what: str = "duration") -> float:
    """Parse ``10s``, ``500ms``, ``2m``, ``1h`` or a bare number of seconds into seconds."""
    match = _DURATION_RE.match(text)
    if not match:
        raise UsageError(f"{what} {text!r} is not a duration (examples: 10s, 500ms, 2m)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_ramp(text: str) -> tuple[int, float]:
    """Parse ``10/10ms`` (10 new connections every 10 ms) or ``100/s`` into (count, period s)."""
    count, sep, period = text.partition("/")
    if not sep or not count.strip().isdigit():
        raise UsageError(f"--ramp {text!r} must look like COUNT/PERIOD, e.g. 10/10ms or 100/s")
    period = period.strip()
    seconds = parse_duration(("1" + period) if period in _UNITS else period, "--ramp period")
    n = int(count)
    if n < 1 or n > MAX_CONNECTIONS:
        raise UsageError(f"--ramp count must be between 1 and {MAX_CONNECTIONS}, got {n}")
    if seconds < 0.001 or seconds > 3600:
        raise UsageError(f"--ramp period must be between 1ms and 1h, got {period!r}")
    return n, seconds


def parse_interval(text: str) -> tuple[float, float]:
    """Parse ``1-30s`` / ``500ms-2s`` / ``5s`` into (low, high) s; a final unit applies to both."""
    low, sep, high = text.partition("-")
    if not sep:
        low_s = high_s = parse_duration(text, "--interval")
    else:
        high_s = parse_duration(high, "--interval")
        low_match = _DURATION_RE.match(low)
        if low_match and low_match.group(2) is None:
            low += _DURATION_RE.match(high).group(2) or "s"  # "1-30s": the 1 is in seconds too
        low_s = parse_duration(low, "--interval")
    if low_s <= 0 or high_s < low_s:
        raise UsageError(f"--interval {text!r} must be LOW-HIGH with 0 < LOW <= HIGH")
    if high_s > 3600:
        raise UsageError(f"--interval {text!r}: at most 1h between requests")
    return low_s, high_s


def parse_error_rate(text: str) -> float:
    """Parse ``0.01`` or ``1%`` into a fraction between 0 and 1."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(
            f"--max-error-rate {text!r} is not a number (examples: 0.01, 1%)"
        ) from None
    if not 0 <= value <= 1 or math.isnan(value):
        raise UsageError(f"--max-error-rate must be between 0 and 1 (or 0% and 100%), got {text!r}")
    return value


def _parse_url(url: str) -> tuple[str, int, str, str]:
    """Split an http:// URL into (host, port, host header, path with query)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"bad URL {url!r}: {exc}") from None
    if parts.scheme != "http":
        raise UsageError(f"URL {url!r}: only http:// URLs are supported")
    if not parts.hostname:
        raise UsageError(f"URL {url!r} has no host")
    host = parts.hostname
    port = port or 80
    if port < 1:
        raise UsageError(f"URL {url!r}: port must be 1-65535")
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    host_header = f"[{host}]" if is_v6 else host
    if parts.port:
        host_header += f":{port}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return host, port, host_header, path


def _check_path(path: str) -> str:
    """A request target must start with '/' and contain no whitespace or control characters."""
    if not path.startswith("/") or any(
        ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in path
    ):
        raise UsageError(
            f"path {path!r} must start with '/' and contain no spaces or control characters"
        )
    return path


def _read_paths_file(name: str) -> list[str]:
    """One request path per line; blank lines and lines starting with '#' are skipped."""
    try:
        with open(name, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except OSError as exc:
        raise UsageError(f"--paths-file {name!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--paths-file {name!r} is not UTF-8 text") from None
    paths = [line for line in lines if line and not line.startswith("#")]
    if not paths:
        raise UsageError(f"--paths-file {name!r} contains no paths")
    return paths


def _parse_header(text: str) -> tuple[str, str]:
    """``Name: value`` -> (name, value), refusing names that are not HTTP tokens."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN_RE.match(name):
        raise UsageError(f"--header {text!r} must look like 'Name: value'")
    if any(ch in value for ch in "\r\n\0"):
        raise UsageError(f"--header {text!r}: value contains a line break")
    return name, value


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str):
        """Turn argparse's complaint into a UsageError (one line, exit 2)."""
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argparse definition of every option (documented in docs/bench.md)."""
    p = _Parser(
        prog="python -m bench",
        description="Keep-alive HTTP/1.1 load generator. Modes: closed loop (default), "
        "--rate R (open loop, coordinated-omission corrected), "
        "--interval A-B (hold N connections, one request each every random interval).",
    )
    p.add_argument(
        "url", help="target, e.g. http://127.0.0.1:8888/ (its path is the default request path)"
    )
    p.add_argument(
        "-c",
        "--connections",
        type=int,
        default=100,
        metavar="N",
        help="connections to open and keep (default 100)",
    )
    p.add_argument(
        "-d",
        "--duration",
        default="10s",
        metavar="D",
        help="measured run time, e.g. 10s, 500ms, 2m (default 10s)",
    )
    p.add_argument(
        "--warmup",
        default="0s",
        metavar="D",
        help="run this long first without counting (default 0)",
    )
    p.add_argument(
        "--mode", choices=MODES, help="force a mode (normally chosen by --rate / --interval)"
    )
    p.add_argument(
        "--rate", type=float, metavar="R", help="open loop: R requests/s in total (all workers)"
    )
    p.add_argument(
        "--interval",
        metavar="A-B",
        help="hold mode: each connection sends one request every random A..B, e.g. 1-30s",
    )
    p.add_argument(
        "--ramp",
        metavar="N/T",
        help="open N new connections every T, e.g. 10/10ms (hold: 10/10ms, else all at once)",
    )
    p.add_argument(
        "-m", "--method", metavar="M", help="request method (default GET; HEAD in hold mode)"
    )
    p.add_argument(
        "-p",
        "--path",
        action="append",
        default=[],
        metavar="PATH",
        help="request path (repeat for several; used round-robin); default: the URL's path",
    )
    p.add_argument("--paths-file", metavar="FILE", help="file with one request path per line")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'K: V'",
        help="extra request header (repeatable)",
    )
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", metavar="TEXT", help="request body (UTF-8)")
    body.add_argument("--body-file", metavar="FILE", help="request body read from FILE")
    p.add_argument(
        "-w",
        "--workers",
        type=int,
        default=1,
        metavar="K",
        help="worker processes; connections and rate are split, histograms merged (default 1)",
    )
    p.add_argument(
        "-t",
        "--timeout",
        default="10s",
        metavar="D",
        help="per-request and connect timeout (default 10s)",
    )
    p.add_argument(
        "--no-keepalive",
        action="store_true",
        help="send 'Connection: close' and open a new connection for every request",
    )
    p.add_argument(
        "--json", dest="json_path", metavar="FILE", help="write the full results as JSON"
    )
    p.add_argument(
        "--report",
        dest="report_path",
        metavar="FILE.html",
        help="write a self-contained HTML report with charts",
    )
    p.add_argument(
        "--png",
        dest="png_path",
        metavar="FILE.png",
        help="write the charts as PNG (needs matplotlib)",
    )
    p.add_argument(
        "--max-error-rate",
        metavar="F",
        help="exit 1 when failed/attempted exceeds F (e.g. 0.01 or 1%%)",
    )
    prog = p.add_mutually_exclusive_group()
    prog.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="print the per-second progress line even when stderr is not a terminal",
    )
    prog.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never print progress"
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no text report on stdout (use with --json)"
    )
    p.add_argument(
        "--seed", type=int, help="random seed for hold-mode intervals (reproducible schedules)"
    )
    p.add_argument("--version", action="version", version=f"{TOOL_NAME} {__version__}")
    return p


def _positive(value: float, name: str, low: float, high: float) -> float:
    """Range-check a number, naming the option in the error."""
    if not (low <= value <= high) or math.isnan(value):
        raise UsageError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def parse_args(argv: list[str], stderr_isatty: bool = False) -> Config:
    """Parse and validate argv into a Config; raises UsageError with a one-line message."""
    ns = build_parser().parse_args(argv)
    host, port, host_header, url_path = _parse_url(ns.url)

    if ns.mode:
        mode = ns.mode
    elif ns.rate is not None and ns.interval is not None:
        raise UsageError("--rate and --interval select different modes; use one of them")
    elif ns.rate is not None:
        mode = "rate"
    elif ns.interval is not None:
        mode = "hold"
    else:
        mode = "closed"
    if mode == "rate" and ns.rate is None:
        raise UsageError("--mode rate needs --rate R")
    if mode != "rate" and ns.rate is not None:
        raise UsageError(f"--rate only applies to rate mode, not {mode}")
    if mode != "hold" and ns.interval is not None:
        raise UsageError(f"--interval only applies to hold mode, not {mode}")
    if mode == "hold" and ns.no_keepalive:
        raise UsageError(
            "hold mode keeps connections open: it cannot be combined with --no-keepalive"
        )

    connections = int(_positive(ns.connections, "-c/--connections", 1, MAX_CONNECTIONS))
    workers = int(_positive(ns.workers, "--workers", 1, MAX_WORKERS))
    if workers > connections:
        raise UsageError(
            f"--workers {workers} is more than -c {connections}: every worker needs a connection"
        )
    cpus = os.cpu_count() or 1
    if workers > 4 * cpus:
        raise UsageError(
            f"--workers {workers} is far more than the {cpus} CPUs here; use at most {4 * cpus}"
        )
    duration = _positive(
        parse_duration(ns.duration, "--duration"), "--duration", 0.001, MAX_DURATION
    )
    warmup = _positive(parse_duration(ns.warmup, "--warmup"), "--warmup", 0, MAX_DURATION)
    timeout = _positive(parse_duration(ns.timeout, "--timeout"), "--timeout", 0.001, 3600)
    rate = None if ns.rate is None else _positive(ns.rate, "--rate", 0.001, MAX_RATE)
    interval = None
    if mode == "hold":
        interval = parse_interval(ns.interval) if ns.interval is not None else (1.0, 30.0)
    ramp = (
        parse_ramp(ns.ramp)
        if ns.ramp is not None
        else (DEFAULT_HOLD_RAMP if mode == "hold" else None)
    )

    method = ns.method or ("HEAD" if mode == "hold" else "GET")
    if not _TOKEN_RE.match(method):
        raise UsageError(f"--method {method!r} is not a valid HTTP method token")
    method = (
        method.upper()
        if method.lower() in {"get", "head", "post", "put", "delete", "patch", "options"}
        else method
    )

    paths = list(ns.path)
    if ns.paths_file:
        paths.extend(_read_paths_file(ns.paths_file))
    if not paths:
        paths = [url_path]
    if len(paths) > MAX_PATHS:
        raise UsageError(f"at most {MAX_PATHS} paths, got {len(paths)}")
    paths = [_check_path(p) for p in paths]

    headers = tuple(_parse_header(h) for h in ns.header)
    reserved = {"content-length", "transfer-encoding"}
    for name, _ in headers:
        if name.lower() in reserved:
            raise UsageError(f"--header {name}: set by the tool from --body")
        if name.lower() == "connection":
            raise UsageError("--header Connection: use --no-keepalive instead")

    if ns.body is not None:
        body = ns.body.encode("utf-8")
    elif ns.body_file is not None:
        try:
            with open(ns.body_file, "rb") as handle:
                body = handle.read(MAX_BODY + 1)
        except OSError as exc:
            raise UsageError(f"--body-file {ns.body_file!r}: {exc.strerror or exc}") from None
    else:
        body = b""
    if len(body) > MAX_BODY:
        raise UsageError(f"request body larger than {MAX_BODY // (1024 * 1024)} MiB")
    if body and method == "HEAD":
        raise UsageError("a HEAD request cannot carry --body")

    if mode == "rate" and rate is not None and rate / connections > 1_000_000:
        raise UsageError(
            f"--rate {rate:g} with -c {connections} needs over 1M requests/s per connection"
        )
    max_error_rate = parse_error_rate(ns.max_error_rate) if ns.max_error_rate is not None else None
    for opt, path in (
        ("--json", ns.json_path),
        ("--report", ns.report_path),
        ("--png", ns.png_path),
    ):
        if path is not None:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise UsageError(f"{opt} {path!r}: directory {parent!r} does not exist")
    progress = stderr_isatty if ns.progress is None else ns.progress

    return Config(
        url=ns.url,
        host=host,
        port=port,
        host_header=host_header,
        mode=mode,
        method=method,
        paths=tuple(paths),
        headers=headers,
        body=body,
        connections=connections,
        duration=duration,
        warmup=warmup,
        ramp=ramp,
        rate=rate,
        interval=interval,
        workers=workers,
        timeout=timeout,
        keepalive=not ns.no_keepalive,
        json_path=ns.json_path,
        report_path=ns.report_path,
        png_path=ns.png_path,
        max_error_rate=max_error_rate,
        progress=progress,
        quiet=ns.quiet,
        seed=ns.seed,
    )
