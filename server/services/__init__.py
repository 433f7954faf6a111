"""Long-lived resources that know nothing of HTTP, opened together and closed in reverse."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import AsyncIterator

from ..config import Settings
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
    cookie_secret: str  # --cookie-secret, or the one every instance on this database shares


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
                           metrics)
        stack.push_async_callback(_closing(f"{cache.kind} cache", cache.close))
        db = Database(settings.database_url, settings.db_pool_size, settings.db_timeout, metrics)
        stack.push_async_callback(_closing("database", db.close))
        await db.open(wait=settings.db_startup_wait)
        redis_url = None if settings.cache_url.startswith("memory:") else settings.cache_url
        events = EventBus(redis_url)
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
        cookie_secret = settings.cookie_secret or await db.secret("cookie_secret")
        yield Services(greeting=greeting, compute=compute, outbound=outbound, cache=cache, db=db,
                       events=events, guestbook=guestbook, cookie_secret=cookie_secret)


def _closing(name, close):
    """Wrap a close coroutine so the order of closing shows in the debug log."""
    async def run() -> None:
        log.debug("closing %s", name)
        await close()
    return run
