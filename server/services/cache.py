"""Caches behind one small interface: an in-process TTL/LRU cache, or Redis for many instances."""
from __future__ import annotations

import heapq
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

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
    """A size-bounded LRU with per-entry expiry, local to this process."""

    kind = "memory"

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        # (expires, key) of every entry stored with a TTL: entries keyed by a generation that has
        # moved on are never read again, so they must go when they expire, not wait for the LRU
        self._expiry: list[tuple[float, str]] = []

    def _live(self, key: str) -> Any:
        item = self._entries.get(key)
        if item is None:
            return None
        expires, value = item
        if expires and expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def _store(self, key: str, value: Any, ttl: float | None) -> None:
        now = time.monotonic()
        self._purge_expired(now)
        expires = now + ttl if ttl else 0.0
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        if expires:
            heapq.heappush(self._expiry, (expires, key))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _purge_expired(self, now: float) -> None:
        """Drop every entry whose TTL has passed (amortised: each stored TTL is popped once)."""
        expiry, entries = self._expiry, self._entries
        while expiry and expiry[0][0] <= now:
            expires, key = heapq.heappop(expiry)
            item = entries.get(key)
            if item is not None and item[0] == expires:  # not re-stored with another expiry since
                del entries[key]

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._store(key, value, ttl)

    async def add(self, key: str, value: bytes) -> bool:
        if self._live(key) is not None:
            return False
        self._store(key, value, None)
        return True

    async def incr(self, key: str, ttl: float) -> int:
        count = (self._live(key) or 0) + 1
        if count == 1:
            self._store(key, count, ttl)
        else:  # keep the window's original expiry
            expires, _ = self._entries[key]
            self._entries[key] = (expires, count)
        return count

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()
        self._expiry.clear()


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
        return await self._call("get", key)

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
