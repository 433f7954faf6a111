"""Per-request bookkeeping at the end of every request: metrics and the access log line."""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import sys
import time
from typing import Any, Sequence

from .metrics import Metrics

ACCESS_LOGGER = "server.access"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def access_logger() -> logging.Logger:
    """A logger that writes bare access lines to stderr (no level/time prefix, so lines parse)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger


def client_address(peer: str, headers: Any, trusted: Sequence[Network]) -> str:
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


class RequestObserver:
    """Tornado's log_function: records every finished request in the metrics and the access log."""

    def __init__(self, metrics: Metrics, log_format: str) -> None:
        self.metrics = metrics
        self.log_format = log_format
        self.logger = access_logger() if log_format != "off" else None
        self.pid = os.getpid()

    def __call__(self, handler: Any) -> None:
        request = handler.request
        seconds = request.request_time()
        status = handler.get_status()
        route = getattr(handler, "route_name", None) or type(handler).__name__
        self.metrics.observe_request(route, request.method, status, seconds)
        if self.logger is not None:
            self.logger.info(self.format_line(handler, status, seconds))

    def format_line(self, handler: Any, status: int, seconds: float) -> str:
        """One access log line in the configured format."""
        request = handler.request
        sent = getattr(handler, "bytes_sent", 0)
        request_id = getattr(handler, "request_id", "-")
        agent = request.headers.get("User-Agent", "")
        if self.log_format == "json":
            return json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(request._start_time))
                + f".{int(request._start_time % 1 * 1000):03d}Z",
                "request_id": request_id, "method": request.method, "path": request.uri,
                "status": status, "bytes": sent, "duration_ms": round(seconds * 1000, 3),
                "client": request.remote_ip, "user_agent": agent, "pid": self.pid,
            }, ensure_ascii=False, separators=(",", ":"))
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(request._start_time))
        referer = request.headers.get("Referer", "-")
        line = f"{request.method} {request.uri} {request.version}"
        return (f'{request.remote_ip} - - [{stamp}] "{_quote(line)}" {status} {sent} '
                f'"{_quote(referer)}" "{_quote(agent) or "-"}" {seconds:.3f} {request_id}')


def _quote(text: str) -> str:
    """Escape what would break a combined-format field (quotes, backslashes, control bytes)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(ch if ch.isprintable() and ch not in '"\\' else f"\\x{ord(ch):02x}" for ch in text)
