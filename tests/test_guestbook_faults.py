"""Guestbook faults with real components: SIGKILL after writes, PostgreSQL and Redis stopped and restarted."""
import asyncio
import json
import re
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
import tornado.httpclient
import tornado.websocket

from helpers import Api, in_executor, json_of


def post_message(base_url, i):
    """POST one message over a new connection; returns its id when the server said 201."""
    request = urllib.request.Request(
        base_url + "/api/messages", method="POST",
        data=json.dumps({"name": f"k{i}", "text": f"durable {i}"}).encode(),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["id"] if response.status == 201 else None
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


def all_ids(base_url):
    ids, before = set(), ""
    while True:
        with urllib.request.urlopen(f"{base_url}/api/messages?limit=100{before}", timeout=30) as r:
            page = json.loads(r.read())
        ids |= {m["id"] for m in page["messages"]}
        if page["next_before"] is None:
            return ids
        before = f"&before={page['next_before']}"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_writes_that_returned_201_survive_sigkill(live_server_factory, tmp_path, request, backend):
    storage = (["--data-dir", str(tmp_path / "data")] if backend == "sqlite"
               else ["--db-url", request.getfixturevalue("postgres_url")])
    server = live_server_factory(*storage, "--post-rate", "off")
    with ThreadPoolExecutor(max_workers=50) as pool:
        ids = [i for i in pool.map(lambda i: post_message(server.url, i), range(200)) if i is not None]
    server.signal(signal.SIGKILL)  # right after the last 201: no chance to flush anything more
    assert server.wait() == -signal.SIGKILL
    assert len(ids) == 200
    restarted = live_server_factory(*storage)
    assert set(ids) <= all_ids(restarted.url)


pytestmark_async = pytest.mark.gen_test(timeout=90)
REDIS_POOL = 3  # --cache-pool-size of the Redis tests here
DB_POOL = 2  # --db-pool-size of the database pool test here


@pytest.fixture
def server_settings(request, server_settings):
    """PostgreSQL for the database-outage tests, SQLite + Redis for the cache-outage tests."""
    if "redis" in request.node.name:
        return server_settings.replace(cache_url=request.getfixturevalue("redis_url"),
                                       cache_pool_size=REDIS_POOL, post_rate=None)
    if "db_pool_size" in request.node.name:  # a burst of posts from one client: no post rate
        return server_settings.replace(db_url=request.getfixturevalue("postgres_url"),
                                       db_pool_size=DB_POOL, post_rate=None)
    if "database" in request.node.name:
        return server_settings.replace(db_url=request.getfixturevalue("postgres_url"))
    return server_settings


@pytestmark_async
async def test_database_outage_is_503_and_recovers_by_itself(api, postgres_server):
    created = json_of(await api.post("/api/messages", {"name": "Before", "text": "the outage"}))
    form = await api.get("/guestbook")  # the page's form, signed while the database is up
    token = re.search(r'name="_xsrf" value="([^"]+)"', form.body.decode()).group(1)
    cookie = form.headers["Set-Cookie"].split(";", 1)[0]
    await in_executor(postgres_server.stop)
    try:
        signed = await api.post("/guestbook", urllib.parse.urlencode(
            {"name": "During", "text": "the outage", "_xsrf": token}).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
        assert signed.code == 503 and '<p class="status">503</p>' in signed.body.decode()
        assert "database is unavailable" in signed.body.decode()
        assert int(signed.headers["Retry-After"]) >= 1
        refused = await api.post("/api/messages", {"name": "During", "text": "the outage"})
        assert refused.code == 503
        assert "database is unavailable" in json_of(refused)["error"]["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert (await api.get(f"/api/messages/{created['id']}")).code == 503
        assert (await api.get("/api/messages?before=999")).code == 503
        page = await api.get("/guestbook?before=999")
        assert page.code == 503 and "database is unavailable" in page.body.decode()
        assert '<p class="status">503</p>' in page.body.decode()
        ready = await api.get("/readyz")
        assert ready.code == 503 and json_of(ready)["checks"]["database"] == "unavailable"
        assert (await api.get("/healthz")).code == 200  # alive, just not ready
    finally:
        await in_executor(postgres_server.start)
    deadline = time.monotonic() + 20
    while True:
        response = await api.post("/api/messages", {"name": "After", "text": "the outage"})
        if response.code == 201 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert response.code == 201, "did not recover after the database came back"
    assert (await api.get("/readyz")).code == 200
    page = json_of(await api.get("/api/messages"))
    assert [m["text"] for m in page["messages"]] == ["the outage", "the outage"]
    assert page["count"] == 2


@pytestmark_async
async def test_redis_outage_answers_from_the_database_and_recovers(api, base_url, redis_server):
    await api.post("/api/messages", {"name": "A", "text": "cached"})
    assert json_of(await api.get("/api/messages"))["count"] == 1
    await in_executor(redis_server.stop)
    try:
        created = await api.post("/api/messages", {"name": "B", "text": "while redis is down"})
        assert created.code == 201
        page = json_of(await api.get("/api/messages"))
        assert page["count"] == 2 and page["messages"][0]["text"] == "while redis is down"
        ready = json_of(await api.get("/readyz"))
        assert ready["status"] == "ready" and ready["checks"]["cache"].startswith("unavailable")
    finally:
        await in_executor(redis_server.start)
    await asyncio.sleep(1.2)  # the cache client stays away for a second after a failure
    ready = json_of(await api.get("/readyz"))
    assert ready["checks"]["cache"] == "ok"
    # live events resume through the re-established subscription
    conn = await tornado.websocket.websocket_connect(base_url.replace("http", "ws") + "/guestbook/live")
    deadline = time.monotonic() + 15
    event = None
    while event is None and time.monotonic() < deadline:
        await api.post("/api/messages", {"name": "C", "text": "after redis is back"})
        try:
            event = json.loads(await asyncio.wait_for(conn.read_message(), 1.0))
        except TimeoutError:
            continue
    assert event is not None and event["message"]["text"] == "after redis is back"
    conn.close()
    page = json_of(await api.get("/api/messages"))
    assert page["messages"][0]["text"] == "after redis is back"


@pytestmark_async
async def test_database_connections_stay_within_db_pool_size_under_a_burst(api, base_url,
                                                                           server_settings):
    database = server_settings.db_url.replace("postgresql+asyncpg://", "postgresql://")
    observer = await asyncpg.connect(database)
    opened = []
    done = asyncio.Event()

    async def count_connections():
        """What PostgreSQL sees of the server: its open connections to this database."""
        while not done.is_set():
            opened.append(await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"))
            await asyncio.sleep(0.005)

    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=200)
    burst = Api(client, base_url)
    counting = asyncio.ensure_future(count_connections())
    try:  # 200 at once, each needing a connection: posts, and reads of pages no cache holds
        answers = await asyncio.gather(
            *(burst.post("/api/messages", {"name": "B", "text": f"burst {i}"}) for i in range(100)),
            *(burst.get(f"/api/messages?limit=5&before={i + 1}") for i in range(100)))
    finally:
        done.set()
        await counting
        client.close()
        await observer.close()
    assert sorted({a.code for a in answers}) == [200, 201]
    assert max(opened) == DB_POOL, opened  # used to the full, and never past it
    assert json_of(await api.get("/api/messages"))["count"] == 100


@pytestmark_async
async def test_redis_connections_stay_within_cache_pool_size_under_a_burst(api, base_url,
                                                                          redis_server):
    created = json_of(await api.post("/api/messages", {"name": "A", "text": "cached"}))
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=300)
    burst = Api(client, base_url)
    try:  # 300 at once: reads of the cached list and count, one message, and posts (publishing)
        answers = await asyncio.gather(
            *(burst.get("/api/messages") for _ in range(100)),
            *(burst.get(f"/api/messages/{created['id']}") for _ in range(100)),
            *(burst.post("/api/messages", {"name": "B", "text": f"burst {i}"}) for i in range(100)))
    finally:
        client.close()
    assert sorted({a.code for a in answers}) == [200, 201]
    # at most the cache's pool, the publishing pool and the live-event subscription
    assert 1 <= await in_executor(redis_server.clients) <= 2 * REDIS_POOL + 1
    assert json_of(await api.get("/api/messages"))["count"] == 101
