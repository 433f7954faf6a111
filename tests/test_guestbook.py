"""The guestbook API and service through a real server, on SQLite + memory cache and on real
PostgreSQL + Redis (started by the tests from Debian's packages)."""
import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from helpers import json_of
from server.services.database import Database, messages, schema_migrations

pytestmark = pytest.mark.gen_test(timeout=90)


@pytest.fixture(params=["sqlite+memory", "postgres+redis"])
def server_settings(request, server_settings):
    """Every test here runs on both backends."""
    if request.param == "postgres+redis":
        return server_settings.replace(db_url=request.getfixturevalue("postgres_url"),
                                       cache_url=request.getfixturevalue("redis_url"))
    return server_settings


async def post(api, name="Ada", text="Hello there"):
    return await api.post("/api/messages", {"name": name, "text": text})


async def test_post_then_read_it_back(api):
    response = await post(api, "Ada", "First!\nSecond line")
    assert response.code == 201
    created = json_of(response)
    assert response.headers["Location"] == f"/api/messages/{created['id']}"
    assert created["name"] == "Ada" and created["text"] == "First!\nSecond line"
    stamp = datetime.fromisoformat(created["created_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 30
    fetched = await api.get(response.headers["Location"])
    assert json_of(fetched) == created
    page = json_of(await api.get("/api/messages"))
    assert page == {"messages": [created], "next_before": None, "count": 1}


@pytest.mark.parametrize("body, field", [
    ({"name": "", "text": "x"}, "name"),
    ({"name": "   ", "text": "x"}, "name"),
    ({"name": "n" * 65, "text": "x"}, "name"),
    ({"name": "Ada", "text": ""}, "text"),
    ({"name": "Ada", "text": "t" * 2001}, "text"),
    ({"name": "Ada", "text": "bell\x07"}, "text"),
    ({"name": "Ada\x00", "text": "x"}, "name"),
    ({"name": 5, "text": "x"}, "name"),
    ({"text": "x"}, "name"),
    ({"name": "Ada", "text": "x", "admin": True}, "admin"),
])
async def test_invalid_messages_are_422_and_nothing_is_stored(api, body, field):
    response = await api.post("/api/messages", body)
    assert response.code == 422
    assert json_of(response)["error"]["field"] == field
    assert json_of(await api.get("/api/messages"))["count"] == 0


async def test_limits_are_inclusive(api):
    response = await post(api, "n" * 64, "t" * 2000)
    assert response.code == 201


async def test_cursor_pagination_newest_first(api):
    ids = [json_of(await post(api, f"user{i}", f"message {i}"))["id"] for i in range(25)]
    first = json_of(await api.get("/api/messages?limit=10"))
    assert [m["id"] for m in first["messages"]] == ids[::-1][:10]
    assert first["count"] == 25
    second = json_of(await api.get(f"/api/messages?limit=10&before={first['next_before']}"))
    assert [m["id"] for m in second["messages"]] == ids[::-1][10:20]
    third = json_of(await api.get(f"/api/messages?limit=10&before={second['next_before']}"))
    assert [m["id"] for m in third["messages"]] == ids[::-1][20:]
    assert third["next_before"] is None
    default = json_of(await api.get("/api/messages"))
    assert len(default["messages"]) == 20


@pytest.mark.parametrize("query, field", [("limit=0", "limit"), ("limit=101", "limit"),
                                          ("limit=abc", "limit"), ("before=abc", "before"),
                                          ("before=0", "before")])
async def test_bad_page_requests(api, query, field):
    response = await api.get("/api/messages?" + query)
    assert response.code == 422 and json_of(response)["error"]["field"] == field


async def test_unknown_message_is_404(api):
    for path in ("/api/messages/999999", "/api/messages/abc"):
        response = await api.get(path)
        assert response.code == 404 and json_of(response)["error"]["status"] == 404


async def test_first_page_is_served_from_cache_and_no_write_leaves_it_stale(api, http_server):
    for i in range(15):
        before = json_of(await api.get("/api/messages"))
        created = json_of(await post(api, "Reader", f"write {i}"))
        after = json_of(await api.get("/api/messages"))
        assert after["messages"][0] == created, "a reader saw a stale list after a write returned"
        assert after["count"] == before["count"] + 1
    # a row that bypasses the service (and so the invalidation) is not on the cached first page,
    # which proves the first page comes from the cache; older pages come from the database
    db = http_server.services.db
    async with db.transaction() as conn:
        await conn.execute(messages.insert().values(name="Sneaky", text="direct", client_hash="x",
                                                    created_at=datetime.now(UTC)))
    cached = json_of(await api.get("/api/messages"))
    assert all(m["name"] != "Sneaky" for m in cached["messages"])
    uncached = json_of(await api.get("/api/messages?before=999999999"))
    assert uncached["messages"][0]["name"] == "Sneaky"


@pytest.mark.server_settings(admin_token="s3cret-token")
async def test_delete_needs_the_admin_token(api):
    created = json_of(await post(api))
    path = f"/api/messages/{created['id']}"
    missing = await api.call("DELETE", path)
    assert missing.code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await api.call("DELETE", path, headers={"Authorization": "Bearer nope"})
    assert wrong.code == 403
    assert (await api.get(path)).code == 200
    ok = await api.call("DELETE", path, headers={"Authorization": "Bearer s3cret-token"})
    assert ok.code == 204 and ok.body == b""
    assert (await api.get(path)).code == 404
    assert json_of(await api.get("/api/messages"))["count"] == 0
    again = await api.call("DELETE", path, headers={"Authorization": "Bearer s3cret-token"})
    assert again.code == 404


async def test_delete_is_disabled_without_a_token(api):
    created = json_of(await post(api))
    response = await api.call("DELETE", f"/api/messages/{created['id']}",
                              headers={"Authorization": "Bearer anything"})
    assert response.code == 403
    assert "disabled" in json_of(response)["error"]["message"]


@pytest.mark.server_settings(post_rate=(3, 60.0))
async def test_posting_is_rate_limited_per_client(api):
    for i in range(3):
        assert (await post(api, text=f"m{i}")).code == 201
    refused = await post(api, text="one too many")
    assert refused.code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "too many messages" in json_of(refused)["error"]["message"]
    assert json_of(await api.get("/api/messages"))["count"] == 3


async def test_500_concurrent_posts_are_all_stored_once(api, http_server):
    responses = await asyncio.gather(*(post(api, f"u{i}", f"concurrent {i}") for i in range(500)))
    assert [r.code for r in responses] == [201] * 500
    ids = [json_of(r)["id"] for r in responses]
    assert len(set(ids)) == 500
    assert json_of(await api.get("/api/messages"))["count"] == 500
    async with http_server.services.db.connect() as conn:
        texts = (await conn.execute(sa.select(messages.c.text))).scalars().all()
    assert sorted(texts) == sorted(f"concurrent {i}" for i in range(500))


async def test_client_address_is_stored_as_a_keyed_hash(api, http_server):
    await post(api, text="one")
    await post(api, text="two")
    async with http_server.services.db.connect() as conn:
        hashes = (await conn.execute(sa.select(messages.c.client_hash))).scalars().all()
    assert len(set(hashes)) == 1 and len(hashes[0]) == 32
    assert "127.0.0.1" not in hashes[0]
    assert "client_hash" not in json_of(await api.get("/api/messages"))["messages"][0]


async def test_migrations_are_safe_to_run_again(http_server, server_settings):
    again = Database(server_settings.database_url, 2, 5.0)
    try:
        assert await again.migrate() == []
        assert await again.migrate() == []
        async with again.connect() as conn:
            versions = (await conn.execute(sa.select(schema_migrations.c.version))).scalars().all()
        assert versions == [1, 2]
    finally:
        await again.close()


async def test_readiness_reports_the_database(api):
    ready = json_of(await api.get("/readyz"))
    assert ready["status"] == "ready"
    assert ready["checks"] == {"database": "ok", "cache": "ok"}
