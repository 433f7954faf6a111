"""The TechEmpower Framework Benchmarks (TFB) test types as a Tornado application of its own.

``python -m server --app bench.techempower:make_app`` (either engine, ``--processes N``) or, for
stock Tornado, ``python -m bench.baselines.tornado_tfb`` (the same application on ``app.listen()``).
The routes follow TFB's "Framework Tests Overview":

- ``/json``: ``{"message":"Hello, World!"}`` serialized per request, ``application/json``;
- ``/plaintext``: ``Hello, World!``, ``text/plain`` (TFB loads it with 16-deep pipelining);
- ``/db``: one random ``World`` row as ``{"id","randomNumber"}``;
- ``/queries?queries=N``: N rows, one query each (N clamped to 1..500; missing or not a number: 1);
- ``/fortunes``: every ``Fortune`` row plus "Additional fortune added at request time." (id 0),
  sorted by message, in TFB's HTML table through an autoescaping template;
- ``/updates?queries=N``: N rows read one by one, each given a new random number, written back
  (one batch, ordered by id so concurrent batches cannot deadlock);
- ``/cached-queries?count=N``: N ``World`` objects from an in-memory cache filled at start-up.

Tornado adds ``Server`` and ``Date`` to every response and computes ``Content-Length``. The
database is PostgreSQL through asyncpg, its URL in ``TFB_DB_URL`` (``postgresql://...``; a
SQLAlchemy ``postgresql+asyncpg://`` URL works too). ``create_tables`` creates and fills TFB's
``World`` and ``Fortune`` tables when they are missing or differ (idempotent). ``make_app`` is an
async context manager: the pool is opened before the first request and closed after the last
(the launcher's shutdown runs what follows its ``yield``).
"""
from __future__ import annotations

import contextlib
import json
import operator
import os
import random
from collections.abc import AsyncIterator

import asyncpg
import tornado.template
import tornado.web

DB_ENV = "TFB_DB_URL"
POOL_ENV = "TFB_POOL_SIZE"
DEFAULT_POOL = 8
WORLD_ROWS = 10_000
MAX_QUERIES = 500
HELLO = "Hello, World!"
ADDED_FORTUNE = (0, "Additional fortune added at request time.")
# TFB's toolset/databases/postgres/create-postgres.sql, row for row
FORTUNES = (
    (1, "fortune: No such file or directory"),
    (2, "A computer scientist is someone who fixes things that aren't broken."),
    (3, "After enough decimal places, nobody gives a damn."),
    (4, "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1"),
    (5, "A computer program does what you tell it to do, not what you want it to do."),
    (6, "Emacs is a nice operating system, but I prefer UNIX. — Tom Christaensen"),
    (7, "Any program that runs right is obsolete."),
    (8, "A list is only as strong as its weakest link. — Donald Knuth"),
    (9, "Feature: A bug with seniority."),
    (10, "Computers make very fast, very accurate mistakes."),
    (11, '<script>alert("This should not be displayed in a browser alert box.");</script>'),
    (12, "フレームワークのベンチマーク"),
)
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain"
HTML_TYPE = "text/html; charset=utf-8"
SELECT_WORLD = "SELECT id, randomnumber FROM world WHERE id = $1"
UPDATE_WORLD = "UPDATE world SET randomnumber = $1 WHERE id = $2"
SELECT_FORTUNES = "SELECT id, message FROM fortune"
# TFB's fortunes markup; the same page as Tornado and Jinja2 templates (the baselines use Jinja2)
FORTUNES_TORNADO = ("<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
                    "<tr><th>id</th><th>message</th></tr>"
                    "{% for id, message in fortunes %}"
                    "<tr><td>{{ id }}</td><td>{{ message }}</td></tr>{% end %}"
                    "</table></body></html>")
FORTUNES_JINJA = FORTUNES_TORNADO.replace("{% end %}", "{% endfor %}")
# json.dumps(value, separators=...) builds a JSONEncoder per call; one encoder serializes each
# response just the same (every server here uses it)
to_json = json.JSONEncoder(separators=(",", ":")).encode
_random = random.random


def asyncpg_dsn(url: str) -> str:
    """``postgresql://...`` for asyncpg (a SQLAlchemy ``postgresql+asyncpg://`` URL is accepted)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def db_url() -> str:
    """The database URL from ``TFB_DB_URL``; a one-line error when it is not set."""
    url = os.environ.get(DB_ENV)
    if not url:
        raise RuntimeError(f"set {DB_ENV} to the PostgreSQL database (postgresql://user@host:port/db)")
    return asyncpg_dsn(url)


def pool_size() -> int:
    """Connections per process (``TFB_POOL_SIZE``, default 8)."""
    return int(os.environ.get(POOL_ENV) or DEFAULT_POOL)


def clamp(text: str | None) -> int:
    """TFB's query count: a number clamped to 1..500; missing, empty or not a number is 1."""
    try:
        n = int(text) if text is not None else 1
    except ValueError:
        return 1
    return min(max(n, 1), MAX_QUERIES)


def random_id() -> int:
    """A World row id, 1..10,000 (``random.random`` scaled: a fifth of ``randint``'s cost)."""
    return int(_random() * WORLD_ROWS) + 1


def new_number(old: int) -> int:
    """A new random number 1..10,000, different from ``old`` (so every update changes the row)."""
    n = int(_random() * (WORLD_ROWS - 1)) + 1
    return n + 1 if n >= old else n


def world(row) -> dict:
    """A World row as TFB's JSON object."""
    return {"id": row[0], "randomNumber": row[1]}


def sorted_fortunes(rows) -> list[tuple[int, str]]:
    """The table's rows plus the one added at request time, sorted by message."""
    fortunes = [(r[0], r[1]) for r in rows]
    fortunes.append(ADDED_FORTUNE)
    fortunes.sort(key=operator.itemgetter(1))
    return fortunes


async def create_tables(conn: asyncpg.Connection) -> None:
    """Create TFB's ``world`` (10,000 rows) and ``fortune`` (12 rows) unless already there."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(16)")  # several workers at start-up
        await conn.execute("CREATE TABLE IF NOT EXISTS world (id integer PRIMARY KEY, "
                           "randomnumber integer NOT NULL DEFAULT 0)")
        await conn.execute("CREATE TABLE IF NOT EXISTS fortune (id integer PRIMARY KEY, "
                           "message varchar(2048) NOT NULL)")
        if await conn.fetchval("SELECT count(*) FROM world WHERE id BETWEEN 1 AND $1",
                               WORLD_ROWS) != WORLD_ROWS:
            await conn.execute("DELETE FROM world")
            await conn.execute("INSERT INTO world (id, randomnumber) SELECT x, "
                               "least(floor(random() * 10000 + 1), 10000) "
                               "FROM generate_series(1, $1) AS x", WORLD_ROWS)
        if sorted(tuple(r) for r in await conn.fetch(SELECT_FORTUNES)) != list(FORTUNES):
            await conn.execute("DELETE FROM fortune")
            await conn.executemany("INSERT INTO fortune (id, message) VALUES ($1, $2)", FORTUNES)


async def read_worlds(conn: asyncpg.Connection, count: int) -> list:
    """``count`` random World rows, one query each."""
    return [await conn.fetchrow(SELECT_WORLD, random_id()) for _ in range(count)]


async def update_worlds(conn: asyncpg.Connection, count: int) -> list[dict]:
    """``count`` random rows read one by one, each with a new number, written in one batch."""
    worlds = [{"id": r[0], "randomNumber": new_number(r[1])} for r in await read_worlds(conn, count)]
    # by id: two requests updating the same rows lock them in the same order; for a row drawn
    # twice the later draw is written last, as in the answer
    await conn.executemany(UPDATE_WORLD, sorted(((w["randomNumber"], w["id"]) for w in worlds),
                                                key=lambda p: p[1]))
    return worlds


class Handler(tornado.web.RequestHandler):
    """Shared by the test types: the pool and the cache live in the application's settings.

    No ETag: TFB asks for none, and Tornado's default hashes every body (and the other servers
    here send none); ``compute_etag`` returning None is Tornado's documented way to turn it off.
    With no ETag there is nothing for If-None-Match to match, so ``check_etag_header`` (a regular
    expression over that header on every GET) answers False at once.
    """

    def compute_etag(self) -> None:
        return None

    def check_etag_header(self) -> bool:
        return False

    @property
    def pool(self) -> asyncpg.Pool:
        return self.settings["tfb_pool"]

    def send_json(self, value) -> None:
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(to_json(value))


class JsonHandler(Handler):
    async def get(self) -> None:
        self.send_json({"message": HELLO})


class PlaintextHandler(Handler):
    async def get(self) -> None:
        self.set_header("Content-Type", TEXT_TYPE)
        self.finish(b"Hello, World!")


class DbHandler(Handler):
    async def get(self) -> None:
        self.send_json(world(await self.pool.fetchrow(SELECT_WORLD, random_id())))


class QueriesHandler(Handler):
    async def get(self) -> None:
        async with self.pool.acquire() as conn:
            rows = await read_worlds(conn, clamp(self.get_query_argument("queries", None)))
        self.send_json([world(r) for r in rows])


class UpdatesHandler(Handler):
    async def get(self) -> None:
        async with self.pool.acquire() as conn:
            worlds = await update_worlds(conn, clamp(self.get_query_argument("queries", None)))
        self.send_json(worlds)


class CachedQueriesHandler(Handler):
    async def get(self) -> None:
        cache = self.settings["tfb_cache"]
        count = clamp(self.get_query_argument("count", None))
        self.send_json([cache[random_id()] for _ in range(count)])


class FortunesHandler(Handler):
    async def get(self) -> None:
        fortunes = sorted_fortunes(await self.pool.fetch(SELECT_FORTUNES))
        self.set_header("Content-Type", HTML_TYPE)
        self.finish(self.settings["tfb_template"].generate(fortunes=fortunes))


ROUTES = [(r"/json", JsonHandler), (r"/plaintext", PlaintextHandler), (r"/db", DbHandler),
          (r"/queries", QueriesHandler), (r"/fortunes", FortunesHandler),
          (r"/updates", UpdatesHandler), (r"/cached-queries", CachedQueriesHandler)]


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset: nothing (no handler sets session state, LISTENs, locks or keeps cursors).

    asyncpg's default resets every released connection with a query (``RESET ALL``, ``UNLISTEN
    *``...), a second round trip to PostgreSQL per request; an open transaction is still rolled
    back before this is called.
    """


async def open_pool(url: str | None = None) -> asyncpg.Pool:
    """A pool on the TFB database, the tables created and filled if needed."""
    size = pool_size()
    pool = await asyncpg.create_pool(url or db_url(), min_size=size, max_size=size,
                                     reset=keep_session)
    try:
        async with pool.acquire() as conn:
            await create_tables(conn)
    except BaseException:
        await pool.close()
        raise
    return pool


async def load_cache(pool: asyncpg.Pool) -> dict[int, dict]:
    """Every World row as its JSON object, by id (the cached-queries test's cache)."""
    return {r[0]: world(r) for r in await pool.fetch("SELECT id, randomnumber FROM world")}


@contextlib.asynccontextmanager
async def make_app() -> AsyncIterator[tornado.web.Application]:
    """The TFB application with its pool open; the pool is closed when the server stops."""
    pool = await open_pool()
    try:
        template = tornado.template.Template(FORTUNES_TORNADO, autoescape="xhtml_escape")
        yield tornado.web.Application(ROUTES, tfb_pool=pool, tfb_cache=await load_cache(pool),
                                      tfb_template=template)
    finally:
        await pool.close()
