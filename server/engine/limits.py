"""Limits both HTTP engines share against hostile clients: the connection cap and the sweep period.

Kept free of httptools and of either engine, so the Tornado engine can use it too.
"""
from __future__ import annotations

import logging
import socket
import struct
from time import monotonic

log = logging.getLogger("server.http")

# seconds: refusals are logged at most this often (an attack must not flood the log)
REFUSAL_LOG_INTERVAL = 1.0


class RateLimitedLog:
    """Lines of one kind logged at most once per interval, each saying how many it stands for.

    For events a client can cause at will (refused connections, failed TLS handshakes): an
    attack must not flood the log, yet the first one is logged at once.
    """

    __slots__ = ("logger", "level", "interval", "count", "_logged_at", "_unlogged")

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING,
                 interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.count = 0  # events since start
        self._logged_at = -interval
        self._unlogged = 0

    def log(self, message: str, *args: object) -> None:
        """Count one event; log it unless a line went out less than an interval ago."""
        self.count += 1
        self._unlogged += 1
        now = monotonic()
        if now - self._logged_at < self.interval:
            return
        if self._unlogged > 1:
            message += f" ({self._unlogged} like it since the last such line)"
        self.logger.log(self.level, message, *args)
        self._logged_at = now
        self._unlogged = 0


class ConnectionCap:
    """--max-connections: whether a new connection fits, and how many were refused.

    A refused connection is closed right after accept, before anything is read from it, so
    connections already open (and the requests in flight on them) are never touched. Refusals
    are counted for /metrics and logged at most once a second.
    """

    __slots__ = ("limit", "_log")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit or 0  # 0: no cap
        self._log = RateLimitedLog(log)

    @property
    def refused(self) -> int:
        """Connections refused since start."""
        return self._log.count

    def full(self, open_connections: int) -> bool:
        """True when one more connection would go over the cap."""
        return 0 < self.limit <= open_connections

    def refuse(self) -> None:
        """Count one refused connection (and log, at most once a second)."""
        self._log.log("--max-connections %d reached: refused a new connection (%d since start)",
                      self.limit, self._log.count + 1)


def sweep_period(*timeouts: float | None) -> float:
    """How often to look for expired timers: a tenth of the shortest timeout, within 50 ms .. 1 s."""
    given = [t for t in timeouts if t]
    if not given:
        return 1.0
    return max(0.05, min(1.0, min(given) / 10))


AUTO_RESERVE = 256  # descriptors kept for files, database and cache connections, the loop...


def fit_file_limit(max_connections: int | None, reserve: int = 100) -> int | None:
    """The connection cap to use, with the soft open-file limit raised to fit it.

    The soft limit goes up to what --max-connections needs (at most the hard limit, like nginx's
    worker_rlimit_nofile); a warning when even the hard limit is too low. Every connection is a
    file descriptor; past the limit accept() fails (EMFILE) before the cap can refuse anything
    cleanly. With no --max-connections (auto) the soft limit is raised to the hard one and the cap
    is that less AUTO_RESERVE; None (no cap) when the limit is unknown or infinite.
    """
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if max_connections is None:
            if hard == resource.RLIM_INFINITY:
                return None
            if soft == resource.RLIM_INFINITY or soft < hard:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return max(1, hard - AUTO_RESERVE)
        wanted = max_connections + reserve
        if soft != resource.RLIM_INFINITY and soft < wanted:
            soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (ImportError, OSError, ValueError):
        return max_connections
    if soft != resource.RLIM_INFINITY and max_connections + reserve > soft:
        log.warning("--max-connections %d is above what the open-file limit (%d) allows; raise "
                    "it (ulimit -n, LimitNOFILE=) or lower --max-connections", max_connections, soft)
    return max_connections


def reset_on_close(sock: socket.socket | None) -> None:
    """Make the next close of this socket a reset (RST) that drops unsent data at once.

    A connection cut for send_timeout has output queued in the kernel for a client that does not
    read; a plain close would leave the kernel retrying it (memory held, for minutes) as an
    orphan. Like nginx's reset_timedout_connection.
    """
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, AttributeError):
        pass
