"""The cache interface the guestbook relies on, held by the memory cache and by Redis alike."""
import asyncio

import pytest

from server.services.cache import MemoryCache, open_cache


@pytest.fixture(params=["memory", "redis"])
def cache(request):
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    return lambda: open_cache(url, timeout=2.0, max_entries=100, pool_size=2)


def test_get_set_add_incr_mean_the_same_on_both_caches(cache):
    async def main():
        store = cache()
        try:
            assert await store.get("k") is None
            await store.set("k", b"one", ttl=60)
            assert await store.get("k") == b"one"
            await store.set("k", b"two")  # a later set replaces the value
            assert await store.get("k") == b"two"
            assert await store.add("new", b"first") is True
            assert await store.add("new", b"second") is False  # only when absent
            assert await store.get("new") == b"first"
            assert [await store.incr("n", ttl=60) for _ in range(3)] == [1, 2, 3]
            assert await store.incr("other", ttl=60) == 1  # counters are per key
            assert await store.ping() is True
        finally:
            await store.close()

    asyncio.run(main())


def test_memory_entries_expire_by_their_own_ttl_and_counters_keep_their_window():
    now = [0.0]
    store = MemoryCache(max_entries=100, timer=lambda: now[0])

    async def main():
        await store.set("short", b"s", ttl=10)
        await store.set("long", b"l", ttl=100)
        await store.set("forever", b"f")
        assert await store.add("added", b"a")
        assert await store.incr("window", ttl=30) == 1
        now[0] = 20.0
        assert await store.incr("window", ttl=30) == 2  # a later count does not move the expiry
        assert await store.get("short") is None
        assert await store.add("short", b"again") is True  # an expired entry counts as absent
        assert (await store.get("long"), await store.get("forever")) == (b"l", b"f")
        now[0] = 31.0
        assert await store.incr("window", ttl=30) == 1  # the window expired at 30: a new one
        now[0] = 10_000.0
        assert await store.get("long") is None
        assert (await store.get("forever"), await store.get("added")) == (b"f", b"a")

    asyncio.run(main())


def test_memory_cache_holds_at_most_max_entries_dropping_the_least_recently_used():
    store = MemoryCache(max_entries=3)

    async def main():
        for key in "abc":
            await store.set(key, key.encode(), ttl=60)
        assert await store.get("a") == b"a"  # now b is the least recently used
        await store.set("d", b"d", ttl=60)
        assert [await store.get(key) for key in "abcd"] == [b"a", None, b"c", b"d"]
        await store.close()
        assert await store.get("a") is None

    asyncio.run(main())
