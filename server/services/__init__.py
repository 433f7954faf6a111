"""Long-lived resources that know nothing of HTTP, opened together and closed in reverse."""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, Settings
from ..metrics import Metrics
from .cache import Cache, open_cache
from .compute import ComputeService
from .database import Database
from .errors import Invalid, NotFound, RateLimited, ServiceError, Unavailable
from .events import EventBus
from .greeting import GreetingService
from .guestbook import GuestbookService, RateLimiter
from .outbound import OutboundService

__all__ = ["Services", "open_services", "Invalid", "NotFound", "RateLimited", "ServiceError",
           "Unavailable"]

log = logging.getLogger("server.services")


@dataclass(frozen=True)
class Services:
    """Everything handlers may call; handed to the Application, never imported as a global."""

    greeting: GreetingService
    compute: ComputeService
    outbound: OutboundService
    cache: Cache
    db: Database
    events: EventBus
    guestbook: GuestbookService
    cookie_secret: str  # --cookie-secret, or the one in --cookie-secret-file (shared by instances)


@contextlib.asynccontextmanager
async def open_services(settings: Settings, metrics: Metrics | None = None) -> AsyncIterator[Services]:
    """Open every service in dependency order and close them in reverse on the way out."""
    metrics = metrics or Metrics(enabled=False)
    async with contextlib.AsyncExitStack() as stack:
        greeting = GreetingService(settings.max_name_length)
        compute = ComputeService(settings.compute_workers, settings.compute_max_pending,
                                 settings.compute_max_n)
        stack.push_async_callback(_closing("compute pool", compute.close))
        outbound = OutboundService(settings.outbound_max_clients, settings.outbound_timeout,
                                   settings.outbound_allow, settings.outbound_max_urls,
                                   settings.outbound_max_bytes, metrics)
        stack.push_async_callback(_closing("outbound client", outbound.close))

        cache = open_cache(settings.cache_url, settings.cache_timeout, settings.cache_max_entries,
                           metrics, settings.cache_pool_size)
        stack.push_async_callback(_closing(f"{cache.kind} cache", cache.close))
        db = Database(settings.database_url, settings.db_pool_size, settings.db_timeout, metrics)
        stack.push_async_callback(_closing("database", db.close))
        await db.open(wait=settings.db_startup_wait)
        redis_url = None if settings.cache_url.startswith("memory:") else settings.cache_url
        events = EventBus(redis_url, pool_size=settings.cache_pool_size)
        await events.start()
        stack.push_async_callback(_closing("live events", events.close))

        limit, window = settings.post_rate or (None, 60.0)
        guestbook = GuestbookService(
            db, cache, events, RateLimiter(cache, limit, window),
            max_name_length=settings.max_name_length, max_text_length=settings.message_max_length,
            page_size=settings.page_size, max_page_size=settings.max_page_size,
            cache_ttl=settings.cache_ttl)
        await guestbook.open()
        log.info("database %s, %s cache", db.display_url, cache.kind)
        cookie_secret = settings.cookie_secret or load_or_create_secret(
            settings.secret_file, create_directory=settings.cookie_secret_file is None)
        yield Services(greeting=greeting, compute=compute, outbound=outbound, cache=cache, db=db,
                       events=events, guestbook=guestbook, cookie_secret=cookie_secret)


MIN_SECRET_LENGTH = 32


def load_or_create_secret(path: Path, create_directory: bool = False) -> str:
    """The secret kept in a file only its owner may read; created (0600, atomically) when missing.

    Several instances may start at once on one shared file: each writes a candidate to a private
    temporary file and links it into place; the first link wins and every instance reads that one.
    A file that group or others can read (or write) is refused: the secret signs every cookie.
    """
    if create_directory:
        path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create_secret_file(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"cookie secret {path}: not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(f"cookie secret {path}: readable or writable by group or others "
                              f"(mode {stat.S_IMODE(info.st_mode):04o}); run chmod 600 {path}")
        secret = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cookie secret {path}: cannot read it: {reason}") from None
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"cookie secret {path}: shorter than {MIN_SECRET_LENGTH} characters; "
                          "delete it to have a new one generated")
    return secret


def _create_secret_file(path: Path) -> None:
    candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                     0o600)
    except OSError as exc:
        raise ConfigError(f"cookie secret {path}: cannot create it: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(candidate, path)  # fails if another instance got there first: use theirs
            log.info("generated a cookie secret in %s", path)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cookie secret {path}: cannot create it: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(candidate)


def _closing(name: str, close: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """Wrap a close coroutine so the order of closing shows in the debug log."""
    async def run() -> None:
        log.debug("closing %s", name)
        await close()
    return run
