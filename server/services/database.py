"""The async database: SQLAlchemy 2 Core over aiosqlite (default) or asyncpg, with migrations."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .errors import Unavailable

log = logging.getLogger("server.db")

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

server_secrets = sa.Table(
    "server_secrets", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)

messages = sa.Table(
    "guestbook_messages", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("client_hash", sa.String(64), nullable=False),
    # SQLite: never reuse the id of a deleted message, so cursors stay stable
    sqlite_autoincrement=True,
)

# Errors that mean "the database cannot be reached or answered in time", never a bug of ours
DATABASE_DOWN = (SQLAlchemyError, OSError, ConnectionError, asyncio.TimeoutError)


def _migration_1(conn: Connection) -> None:
    """Messages and the secret that keys client address hashes."""
    messages.create(conn, checkfirst=True)
    server_secrets.create(conn, checkfirst=True)
    exists = conn.execute(sa.select(server_secrets.c.name)
                          .where(server_secrets.c.name == "client_hash_key")).first()
    if exists is None:
        conn.execute(server_secrets.insert().values(name="client_hash_key",
                                                    value=secrets.token_hex(32)))


def _migration_2(conn: Connection) -> None:
    """A cookie-signing secret shared by every instance on this database."""
    exists = conn.execute(sa.select(server_secrets.c.name)
                          .where(server_secrets.c.name == "cookie_secret")).first()
    if exists is None:
        conn.execute(server_secrets.insert().values(name="cookie_secret",
                                                    value=secrets.token_urlsafe(48)))


# (version, description, step): append only; a step must be safe on a database that has it
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "guestbook messages and server secrets", _migration_1),
    (2, "shared cookie secret", _migration_2),
]


def default_sqlite_url(data_dir: Path) -> str:
    """The SQLite file used when no --db-url is given."""
    return f"sqlite+aiosqlite:///{data_dir / 'guestbook.db'}"


class Database:
    """An AsyncEngine with the pragmas, timeouts and pool a server needs, and its migrations."""

    def __init__(self, url: str, pool_size: int, timeout: float, metrics: Any = None) -> None:
        self.url = make_url(url)
        self.metrics = metrics
        self.timeout = timeout
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        # pool_size is the most connections a process opens (max_overflow=0): SQLAlchemy's
        # default of 10 more would double what capacity planning counts on (PostgreSQL's
        # max_connections), and its overflow connections, opened for a burst and closed after,
        # would each cost SQLite a thread and a page cache rebuilt from cold. A request beyond
        # the pool waits up to `timeout` for a connection.
        kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_size": pool_size, "max_overflow": 0,
                                  "pool_timeout": timeout}
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": timeout}
        else:
            kwargs["connect_args"] = {"timeout": timeout, "command_timeout": timeout}
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", self._sqlite_pragmas)
        # SQLite has one writer at a time; queueing writers here beats its sleep-and-retry lock
        self.write_lock = asyncio.Lock() if self.is_sqlite else contextlib.nullcontext()

    def _sqlite_pragmas(self, dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit that returned is on disk, even if the machine loses power right after
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        cursor.close()

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for logs."""
        return self.url.render_as_string(hide_password=True)

    @contextlib.asynccontextmanager
    async def _use(self, operation: str, opener: Any) -> AsyncIterator[AsyncConnection]:
        """Run a block on a connection: timed, and 'cannot reach the database' as Unavailable."""
        started, ok = time.perf_counter(), False
        try:
            async with opener() as conn:
                yield conn
            ok = True
        except DATABASE_DOWN as exc:
            raise Unavailable(f"the database is unavailable: {type(exc).__name__}", 2) from exc
        finally:
            if self.metrics is not None:
                self.metrics.observe_db(operation, ok, time.perf_counter() - started)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads."""
        async with self._use("read", self.engine.connect) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (serialised on SQLite), committed when the block ends."""
        async with self.write_lock:
            async with self._use("write", self.engine.begin) as conn:
                yield conn

    async def migrate(self) -> list[int]:
        """Bring the schema up to date; safe to run twice and concurrently. Returns applied versions."""
        applied_now = []
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                # concurrent instances starting together take turns
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7420114)"))
            await conn.run_sync(lambda c: schema_migrations.create(c, checkfirst=True))
            done = set((await conn.execute(sa.select(schema_migrations.c.version))).scalars())
            for version, description, step in MIGRATIONS:
                if version in done:
                    continue
                await conn.run_sync(step)
                await conn.execute(schema_migrations.insert().values(
                    version=version, description=description, applied_at=datetime.now(UTC)))
                applied_now.append(version)
        if applied_now:
            log.info("database %s: applied migrations %s", self.display_url, applied_now)
        return applied_now

    async def open(self, wait: float) -> None:
        """Migrate, retrying for up to `wait` seconds while the database is not reachable yet."""
        deadline = time.monotonic() + wait
        while True:
            try:
                await self.migrate()
                return
            except DATABASE_DOWN as exc:
                if time.monotonic() >= deadline:
                    raise Unavailable(f"cannot open the database {self.display_url}: {exc}") from exc
                await asyncio.sleep(0.5)

    async def ping(self) -> bool:
        """True when a trivial query answers within the timeout."""
        try:
            async with self.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(sa.text("SELECT 1")), self.timeout)
            return True
        except DATABASE_DOWN:
            return False

    async def secret(self, name: str) -> str:
        """A secret kept in the database (shared by every instance that uses it)."""
        async with self.connect() as conn:
            value: str = (await conn.execute(sa.select(server_secrets.c.value)
                                             .where(server_secrets.c.name == name))).scalar_one()
            return value

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
