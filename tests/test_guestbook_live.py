"""Live guestbook updates over WebSocket: this instance, and across instances through Redis."""
import asyncio
import json

import pytest
import tornado.websocket
from tornado.netutil import bind_sockets

from helpers import Api, json_of
from server.lifecycle import ServerRuntime

pytestmark = pytest.mark.gen_test(timeout=60)


async def next_event(conn, timeout=1.0):
    """The next live event, which must arrive within `timeout` seconds."""
    raw = await asyncio.wait_for(conn.read_message(), timeout)
    assert raw is not None, "the live connection closed"
    return json.loads(raw)


async def test_new_messages_are_pushed(api, base_url):
    conn = await tornado.websocket.websocket_connect(base_url.replace("http", "ws") + "/guestbook/live")
    created = json_of(await api.post("/api/messages", {"name": "Live", "text": "pushed"}))
    event = await next_event(conn)
    assert event == {"type": "message", "message": created}
    conn.close()


@pytest.mark.server_settings(admin_token="t0k")
async def test_deletes_are_pushed(api, base_url):
    conn = await tornado.websocket.websocket_connect(base_url.replace("http", "ws") + "/guestbook/live")
    created = json_of(await api.post("/api/messages", {"name": "Gone", "text": "soon"}))
    assert (await next_event(conn))["type"] == "message"
    await api.call("DELETE", f"/api/messages/{created['id']}", headers={"Authorization": "Bearer t0k"})
    assert await next_event(conn) == {"type": "deleted", "id": created["id"]}
    conn.close()


async def test_shutdown_closes_live_connections_with_going_away(base_url, http_server):
    conn = await tornado.websocket.websocket_connect(base_url.replace("http", "ws") + "/guestbook/live")
    stopping = asyncio.ensure_future(http_server.stop())
    assert await asyncio.wait_for(conn.read_message(), 5) is None
    assert conn.close_code == 1001
    conn.close()
    await stopping


async def start_instances(settings, count=2):
    """Start `count` servers with the same settings; returns (runtimes, base URLs)."""
    runtimes, urls = [], []
    for _ in range(count):
        sock = bind_sockets(0, "127.0.0.1")[0]
        runtime = ServerRuntime(settings)
        await runtime.start([sock])
        runtimes.append(runtime)
        urls.append(f"http://127.0.0.1:{sock.getsockname()[1]}")
    return runtimes, urls


async def test_a_message_posted_on_one_instance_reaches_pages_of_another(
        http_client, postgres_url, redis_url, server_settings):
    """Two servers sharing PostgreSQL and Redis: post through A, the live page on B sees it."""
    settings = server_settings.replace(db_url=postgres_url, cache_url=redis_url)
    runtimes, urls = await start_instances(settings)
    try:
        for runtime in runtimes:
            await asyncio.wait_for(runtime.services.events.connected.wait(), 5)
        live_b = await tornado.websocket.websocket_connect(urls[1].replace("http", "ws") + "/guestbook/live")
        live_a = await tornado.websocket.websocket_connect(urls[0].replace("http", "ws") + "/guestbook/live")
        created = json_of(await Api(http_client, urls[0]).post(
            "/api/messages", {"name": "Cross", "text": "from A"}))
        assert (await next_event(live_b))["message"] == created
        assert (await next_event(live_a))["message"] == created  # once, not twice
        with pytest.raises(asyncio.TimeoutError):
            await next_event(live_a, timeout=0.3)
        # and B reads it from the shared database, with no stale cache
        page = json_of(await Api(http_client, urls[1]).get("/api/messages"))
        assert page["messages"][0] == created
        live_a.close()
        live_b.close()
    finally:
        for runtime in runtimes:
            await runtime.stop()


async def test_rate_limit_is_shared_by_instances_through_redis(http_client, postgres_url, redis_url,
                                                               server_settings):
    settings = server_settings.replace(db_url=postgres_url, cache_url=redis_url, post_rate=(2, 60.0))
    runtimes, urls = await start_instances(settings)
    try:
        a, b = Api(http_client, urls[0]), Api(http_client, urls[1])
        assert (await a.post("/api/messages", {"name": "R", "text": "1"})).code == 201
        assert (await b.post("/api/messages", {"name": "R", "text": "2"})).code == 201
        assert (await a.post("/api/messages", {"name": "R", "text": "3"})).code == 429
        assert (await b.post("/api/messages", {"name": "R", "text": "4"})).code == 429
    finally:
        for runtime in runtimes:
            await runtime.stop()
