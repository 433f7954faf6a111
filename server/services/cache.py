"""Caches behind one small interface: an in-process TTL/LRU cache, or Redis for many instances."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from cachetools import TLRUCache

log = logging.getLogger("server.cache")


class CacheError(Exception):
    """The cache could not be reached; callers fall back to the source of truth."""


class Cache(Protocol):
    """What the server needs from a cache."""

    kind: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...
    async def add(self, key: str, value: bytes) -> bool: ...
    async def incr(self, key: str, ttl: float) -> int: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class MemoryCache:
    """A size-bounded LRU with per-entry expiry, local to this process (cachetools' TLRUCache).

    Each entry is stored as (expires, value): TLRUCache asks _expires for an entry's deadline, so
    an entry set without a TTL never expires and a counter keeps its window's first deadline. Every
    store drops the entries whose deadline has passed (a heap, each deadline popped once), so pages
    keyed by a generation that has moved on leave at their TTL, not when the LRU reaches them.
    """

    kind = "memory"

    def __init__(self, max_entries: int, timer: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._entries: TLRUCache[str, tuple[float, Any]] = TLRUCache(max_entries, _expires,
                                                                     timer=timer)

    def _deadline(self, ttl: float | None) -> float:
        return self._entries.timer() + ttl if ttl else math.inf

    def _entry(self, key: str) -> tuple[float, Any] | None:
        try:  # one clock read (TLRUCache.get reads it twice, and costs 5x as much on a hit)
            return self._entries[key]
        except KeyError:
            return None

    async def get(self, key: str) -> bytes | None:
        entry = self._entry(key)
        return None if entry is None else entry[1]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._entries[key] = (self._deadline(ttl), value)

    async def add(self, key: str, value: bytes) -> bool:
        if self._entry(key) is not None:
            return False
        self._entries[key] = (math.inf, value)
        return True

    async def incr(self, key: str, ttl: float) -> int:
        entry = self._entry(key)
        # the first count of a window sets its expiry; the later ones keep it
        expires, count = (self._deadline(ttl), 1) if entry is None else (entry[0], entry[1] + 1)
        self._entries[key] = (expires, count)
        return count

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()


def _expires(key: str, entry: tuple[float, Any], now: float) -> float:
    """TLRUCache's time-to-use: the deadline stored with the entry."""
    return entry[0]


def redis_client(url: str, pool_size: int, wait: float | None, **options: Any) -> Any:
    """A redis-py asyncio client that opens at most pool_size connections.

    redis-py's default pool has no bound: a burst of ten thousand requests would open as many
    connections to Redis. Here a call that finds every connection busy waits up to ``wait``
    seconds for one, then fails with redis' ConnectionError ("No connection available.").
    """
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=wait,
                                                    health_check_interval=30, **options)
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


class RedisCache:
    """Redis through redis-py's asyncio client; after a failure it stays away for a moment.

    A call that waits longer than ``timeout`` for one of the ``pool_size`` connections fails like
    a slow Redis does: the database answers instead, and Redis is skipped for RETRY_AFTER.
    """

    kind = "redis"
    RETRY_AFTER = 1.0  # seconds to skip Redis after it failed, so an outage costs no latency

    def __init__(self, url: str, timeout: float, metrics: Any = None, pool_size: int = 20) -> None:
        from redis.exceptions import RedisError

        self._errors = (RedisError, OSError, TimeoutError)
        self.client = redis_client(url, pool_size, timeout, socket_timeout=timeout,
                                   socket_connect_timeout=timeout)
        self._down_until = 0.0
        self.metrics = metrics

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() < self._down_until:
            raise CacheError("redis unavailable (recent failure)")
        started = time.perf_counter()
        try:
            result = await getattr(self.client, method)(*args, **kwargs)
            if self.metrics is not None:
                self.metrics.observe_cache(method, True, time.perf_counter() - started)
            return result
        except self._errors as exc:
            if self.metrics is not None:
                self.metrics.observe_cache(method, False, time.perf_counter() - started)
            if self._down_until == 0.0 or time.monotonic() >= self._down_until + 10:
                log.warning("redis unavailable: %s", exc)
            self._down_until = time.monotonic() + self.RETRY_AFTER
            raise CacheError(str(exc)) from None

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._call("get", key)
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._call("set", key, value, px=int(ttl * 1000) if ttl else None)

    async def add(self, key: str, value: bytes) -> bool:
        return bool(await self._call("set", key, value, nx=True))

    # one atomic step, so a counter can never be left without its expiry
    _INCR_WITH_EXPIRY = ("local n = redis.call('INCR', KEYS[1]) "
                         "if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n")

    async def incr(self, key: str, ttl: float) -> int:
        return int(await self._call("eval", self._INCR_WITH_EXPIRY, 1, key, int(ttl * 1000)))

    async def ping(self) -> bool:
        try:
            return bool(await self._call("ping"))
        except CacheError:
            return False

    async def close(self) -> None:
        await self.client.aclose()


def open_cache(url: str, timeout: float, max_entries: int, metrics: Any = None,
               pool_size: int = 20) -> MemoryCache | RedisCache:
    """The cache a --cache-url names: memory:// or redis://host:port/db (Redis calls are timed)."""
    if url.startswith("memory:"):
        return MemoryCache(max_entries)
    return RedisCache(url, timeout, metrics, pool_size)
