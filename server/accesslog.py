"""Per-request bookkeeping at the end of every request: metrics and the access log line."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from tornado.web import OutputTransform

from .metrics import Metrics
from .refusals import Refusal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# One write() of at most this many bytes to a pipe is never interleaved with another process's
# (POSIX PIPE_BUF, 4096 on Linux): worker processes sharing stderr keep their lines whole.
PIPE_BUF = 4096


class AccessLogWriter:
    """Access log lines to stderr, written in batches instead of one write per request.

    A line waits at most ``flush_interval`` seconds (one timer on the event loop) or until
    ``max_pending`` bytes wait; each write() carries whole lines and at most PIPE_BUF bytes
    unless one line is longer. ``flush_interval`` 0 writes every line at once. Through the
    logging module, a line cost a LogRecord, a caller lookup, a lock and a write system call:
    with it, bench Suite 2 measured /api/hello/x at two thirds of its throughput without it.
    """

    def __init__(self, flush_interval: float, stream: TextIO | None = None,
                 max_pending: int = 64 * 1024) -> None:
        self.flush_interval = flush_interval
        self.stream = stream  # None: whatever sys.stderr is when writing
        self.max_pending = max_pending
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def write(self, line: str) -> None:
        """Queue one line (without its newline)."""
        self._lines.append(line)
        self._size += len(line) + 1
        if not self.flush_interval or self._size >= self.max_pending:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop: nothing would flush later
                self.flush()
                return
            self._timer = loop.call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        """Write every waiting line now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines = self._lines
        if not lines:
            return
        self._lines, self._size = [], 0
        stream = self.stream or sys.stderr
        try:
            stream.flush()  # what the process logged before these lines goes first
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None  # a stream without a file (captured output): write text
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            data = line.encode("utf-8", "backslashreplace") + b"\n"
            if chunk and size + len(data) > PIPE_BUF:
                self._emit(stream, fd, b"".join(chunk))
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        self._emit(stream, fd, b"".join(chunk))

    @staticmethod
    def _emit(stream: TextIO, fd: int | None, data: bytes) -> None:
        try:
            if fd is None:
                stream.write(data.decode("utf-8"))
                stream.flush()
                return
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except (OSError, ValueError):
            pass  # stderr is gone (a closed pipe): the access log cannot be written anywhere


def client_address(peer: str, headers: Mapping[str, str], trusted: Sequence[Network]) -> str:
    """The client's address: the peer, or what trusted proxies say it is (X-Forwarded-For, X-Real-IP).

    X-Forwarded-For is read right to left, skipping our own trusted proxies; the first address not
    among them is the client. Headers from an untrusted peer are ignored entirely.
    """
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    forwarded = headers.get("X-Forwarded-For")
    if forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not _valid_ip(hop):
                return peer  # a garbled chain cannot be trusted past this point
            if not _is_trusted(hop, trusted):
                return hop
        return hops[0] if hops else peer
    real_ip = headers.get("X-Real-IP", "").strip()
    return real_ip if _valid_ip(real_ip) else peer


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class BodySize(OutputTransform):
    """Counts the body bytes a response sends into ``request.bytes_sent`` (for the access log).

    Added to a foreign application's transforms (after any compressing one, so it counts what
    goes on the wire); this project's handlers count their own (BaseHandler.bytes_sent).
    """

    def __init__(self, request: Any) -> None:
        self.request = request
        self.counted = request.method != "HEAD"  # a HEAD response's body is never sent
        request.bytes_sent = 0

    def transform_first_chunk(self, status_code: int, headers: Any, chunk: bytes,
                              finishing: bool) -> tuple[int, Any, bytes]:
        if self.counted:
            self.request.bytes_sent += len(chunk)
        return status_code, headers, chunk

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        if self.counted:
            self.request.bytes_sent += len(chunk)
        return chunk


def chain(*log_functions: Callable[[Any], None]) -> Callable[[Any], None]:
    """One log_function calling each of these in turn (the launcher's access log, then the app's)."""
    def log_request(handler: Any) -> None:
        for log_function in log_functions:
            log_function(handler)
    return log_request


class RequestObserver:
    """Tornado's log_function: records every finished request in the metrics and the access log."""

    def __init__(self, metrics: Metrics, log_format: str, flush_interval: float = 0.0) -> None:
        self.metrics = metrics
        self.log_format = log_format
        self.writer = AccessLogWriter(flush_interval) if log_format != "off" else None
        self.pid = os.getpid()
        self._stamp_second = -1
        self._stamp = ""

    def __call__(self, handler: Any) -> None:
        request = handler.request
        seconds = request.request_time()
        status = handler.get_status()
        route = getattr(handler, "route_name", None) or type(handler).__name__
        self.metrics.observe_request(route, request.method, status, seconds)
        if self.writer is not None:
            self.writer.write(self.format_line(
                request.method, request.uri, request.version, request.remote_ip, request.headers,
                status, getattr(handler, "bytes_sent", 0) or getattr(request, "bytes_sent", 0),
                seconds,
                getattr(handler, "request_id", "-"), time.time() - seconds))

    def refused(self, refusal: Refusal, size: int) -> None:
        """Record a request the HTTP server refused itself (route "refused" in the metrics)."""
        seconds = max(0.0, time.time() - refusal.started)
        self.metrics.observe_request("refused", refusal.method, refusal.status, seconds)
        if self.writer is not None:
            self.writer.write(self.format_line(
                refusal.method, refusal.target, refusal.version, refusal.remote_ip,
                refusal.headers, refusal.status, size, seconds, refusal.request_id,
                refusal.started))

    def flush(self) -> None:
        """Write the access lines still waiting (at shutdown)."""
        if self.writer is not None:
            self.writer.flush()

    def _time(self, started: float, fmt: str) -> str:
        second = int(started)
        if second != self._stamp_second:  # formatted once a second, not per request
            self._stamp_second, self._stamp = second, time.strftime(fmt, time.gmtime(second))
        return self._stamp

    def format_line(self, method: str, uri: str, version: str, client: str, headers: Any,
                    status: int, sent: int, seconds: float, request_id: str,
                    started: float) -> str:
        """One access log line in the configured format (headers None: none were readable)."""
        # get_list: no KeyError raised and caught (inside Mapping.get) for an absent header
        agent = ",".join(headers.get_list("User-Agent")) if headers is not None else ""
        if self.log_format == "json":
            return json.dumps({
                "time": self._time(started, "%Y-%m-%dT%H:%M:%S")
                + f".{int(started % 1 * 1000):03d}Z",
                "request_id": request_id, "method": method, "path": uri,
                "status": status, "bytes": sent, "duration_ms": round(seconds * 1000, 3),
                "client": client, "user_agent": agent, "pid": self.pid,
            }, ensure_ascii=False, separators=(",", ":"))
        stamp = self._time(started, "%d/%b/%Y:%H:%M:%S +0000")
        referer = (",".join(headers.get_list("Referer")) if headers is not None else "") or "-"
        line = f"{method} {uri} {version}"
        return (f'{client} - - [{stamp}] "{_quote(line)}" {status} {sent} '
                f'"{_quote(referer)}" "{_quote(agent) or "-"}" {seconds:.3f} {request_id}')


def _quote(text: str) -> str:
    """Escape what would break a combined-format field (quotes, backslashes, control bytes)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(ch if ch.isprintable() and ch not in '"\\' else f"\\x{ord(ch):02x}" for ch in text)
