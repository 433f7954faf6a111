"""The TechEmpower test types (bench/techempower.py) on ``python -m server --app``, both engines.

A real PostgreSQL (the session's cluster, a database of this module's own) filled by the
application itself; every rule is checked by ``bench.techempower_verify``, the code the bench's
verification pass runs on every server it measures.
"""
import asyncio
import email.utils
import json
import signal
import uuid

import asyncpg
import pytest

from bench import techempower
from bench.suite_servers import Server
from bench.techempower_verify import (
    CHECKS,
    Connection,
    Response,
    _tokens,
    check_response,
    check_world,
    expected_fortunes_page,
    verify,
)

ENGINES = ["fast", "tornado"]
APP = ("--app", "bench.techempower:make_app", "--access-log", "off")


@pytest.fixture(scope="module")
def tfb_db(postgres_server):
    """A database of this module's; the first server creates and fills TFB's tables in it."""
    if not postgres_server.running:
        postgres_server.start()
    return postgres_server.create_database("tfb_" + uuid.uuid4().hex[:12])


def serve(live_server_factory, tfb_db, engine, *extra):
    return live_server_factory(*APP, "--engine", engine, *extra,
                               env={techempower.DB_ENV: tfb_db, techempower.POOL_ENV: "4"})


def table(db_url, sql):
    async def read():
        conn = await asyncpg.connect(techempower.asyncpg_dsn(db_url))
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return asyncio.run(read())


@pytest.mark.parametrize("engine", ENGINES)
def test_every_test_type_follows_every_rule(live_server_factory, tfb_db, engine):
    server = serve(live_server_factory, tfb_db, engine)
    assert verify(server.url, tfb_db) == []
    # the tables the factory created are TFB's
    assert table(tfb_db, "SELECT id, message FROM fortune ORDER BY id") == list(techempower.FORTUNES)
    worlds = table(tfb_db, "SELECT count(*), min(id), max(id), min(randomnumber), "
                           "max(randomnumber) FROM world")
    count, low, high, smallest, largest = worlds[0]
    assert (count, low, high) == (10000, 1, 10000) and 1 <= smallest <= largest <= 10000
    # the pool is closed by the launcher's shutdown (the factory's context manager exits)
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert "Traceback" not in server.stderr


def test_create_tables_is_idempotent_and_repairs(tfb_db):
    async def damage_and_create():
        conn = await asyncpg.connect(techempower.asyncpg_dsn(tfb_db))
        try:
            await techempower.create_tables(conn)
            before = await conn.fetch("SELECT id, randomnumber FROM world ORDER BY id")
            await techempower.create_tables(conn)  # nothing to do: the rows stay as they are
            assert await conn.fetch("SELECT id, randomnumber FROM world ORDER BY id") == before
            await conn.execute("DELETE FROM fortune WHERE id = 11")
            await conn.execute("DELETE FROM world WHERE id > 9000")
            await techempower.create_tables(conn)
            assert await conn.fetchval("SELECT count(*) FROM world") == 10000
            assert [tuple(r) for r in await conn.fetch(
                "SELECT id, message FROM fortune ORDER BY id")] == list(techempower.FORTUNES)
        finally:
            await conn.close()
    asyncio.run(damage_and_create())


def test_the_rules_catch_what_breaks_them():
    """The verifier is strict: each broken rule is reported (no server needed)."""
    good = {"server": "x", "date": email.utils.formatdate(usegmt=True),
            "content-type": "application/json", "content-length": "2"}
    assert check_response("t", Response(200, good, b"{}"), "json") == []
    assert check_response("t", Response(200, {**good, "content-type": "text/html"}, b"{}"), "json")
    assert check_response("t", Response(200, {k: v for k, v in good.items() if k != "server"},
                                        b"{}"), "json")
    assert check_response("t", Response(200, {**good, "date": "Mon, 01 Jan 2001 00:00:00 GMT"},
                                        b"{}"), "json")
    assert check_response("t", Response(200, {**good, "content-length": "3"}, b"{}"), "json")
    assert check_world("t", {"id": 1, "randomNumber": 10001})
    assert check_world("t", {"id": 1, "randomnumber": 5})
    assert check_world("t", {"id": True, "randomNumber": 5})
    assert check_world("t", {"id": 10000, "randomNumber": 1}) == []
    page = expected_fortunes_page()
    assert "&lt;script&gt;" in page and "フレームワークのベンチマーク" in page
    assert page.index("<td>0</td>") > page.index("A computer program")  # sorted by message
    unescaped = page.replace("&lt;script&gt;", "<script>")
    assert _tokens(unescaped) != _tokens(page)


@pytest.mark.parametrize("engine", ENGINES)
def test_plaintext_pipelined_16_deep_in_order_and_two_workers(live_server_factory, tfb_db, engine):
    server = serve(live_server_factory, tfb_db, engine, "--processes", "2")
    conn = Connection(server.url)
    try:
        assert CHECKS["plaintext"](conn) == []
        conn.send([f"/queries?queries={n}" for n in range(1, 17)])
        counts = [len(json.loads(conn.read().body)) for _ in range(16)]
        assert counts == list(range(1, 17))  # DB answers pipelined: still in request order
    finally:
        conn.close()
    assert verify(server.url, tfb_db, types=("db", "updates")) == []


BASELINES = {"stock-tornado": "bench.baselines.tfb_tornado", "aiohttp": "bench.baselines.tfb_aiohttp",
             "starlette": "bench.baselines.tfb_starlette"}


@pytest.mark.parametrize("name", list(BASELINES))
def test_the_baselines_follow_the_same_rules(tfb_db, name, tmp_path, monkeypatch):
    """The servers the bench compares against pass the same verification (and stop cleanly)."""
    monkeypatch.setenv(techempower.DB_ENV, tfb_db)
    monkeypatch.setenv(techempower.POOL_ENV, "4")
    server = Server(name, ["-m", BASELINES[name]], tmp_path / "server.log", None)
    try:
        assert verify(server.wait_ready(), tfb_db) == []
    finally:
        server.stop()
    assert "Traceback" not in (tmp_path / "server.log").read_text()
