"""The guestbook: validated messages in the database, the first page and count from the cache."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from .cache import Cache, CacheError
from .database import Database, messages
from .errors import Invalid, NotFound, RateLimited
from .events import EventBus

log = logging.getLogger("server.guestbook")

# the characters a name or text may not hold (every control character but \t, \n and \r) and
# the one it must hold (not a space), written once for the check here and the OpenAPI document
CONTROL_CLASS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
SPACE_CLASS = r"\s\x85\ufeff"  # Python's and ECMA-262's \s together
TEXT_PATTERN = f"^[^{CONTROL_CLASS}]*[^{SPACE_CLASS}{CONTROL_CLASS}][^{CONTROL_CLASS}]*$"
_CONTROL = re.compile(f"[{CONTROL_CLASS}]")
_VISIBLE = re.compile(f"[^{SPACE_CLASS}]")
GENERATION_KEY = "gb:generation"


@dataclass(frozen=True)
class Message:
    """One signed entry of the guestbook."""

    id: int
    name: str
    text: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The public form of a message (the client hash is never shown)."""
        return {"id": self.id, "name": self.name, "text": self.text,
                "created_at": self.created_at.astimezone(UTC).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")}

    @classmethod
    def from_row(cls, row: Any) -> Message:
        created = row.created_at
        if created.tzinfo is None:  # SQLite stores naive UTC
            created = created.replace(tzinfo=UTC)
        return cls(id=row.id, name=row.name, text=row.text, created_at=created)


@dataclass(frozen=True)
class MessagePage:
    """Messages newest first, the cursor of the next (older) page, and the total count."""

    messages: list[dict[str, Any]]
    next_before: int | None
    count: int
    encoded: bytes | None = None  # the same page as JSON, when it came from (or went to) the cache

    def to_json(self) -> dict[str, Any]:
        """The page as the API shows it."""
        return {"messages": self.messages, "next_before": self.next_before, "count": self.count}


def rate_limit_unit(address: str) -> str:
    """What one rate-limit budget belongs to: an IPv4 address, or the /64 of an IPv6 address.

    One IPv6 client is handed a whole /64 and can pick a fresh address per request; counting
    single addresses would give it 2**64 budgets. ::ffff:a.b.c.d is counted as a.b.c.d.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class RateLimiter:
    """A fixed-window counter per client in the cache (so every instance shares it with Redis).

    Not the `limits` library: its windows are whole seconds (a 0.5 s --post-rate would lose its
    limit, 1.5 s would become 1 s), its Redis storage would bypass RedisCache's timing and its
    stay-away after a failure, and a refusal's Retry-After would cost two more Redis calls; the
    windows here line up with the clock, so one atomic INCR (+ PEXPIRE) per post says it all.
    """

    def __init__(self, cache: Cache, limit: int | None, window: float) -> None:
        self.cache = cache
        self.limit = limit
        self.window = window

    async def check(self, client_key: str) -> None:
        """Count one action of the client; raise RateLimited when over the limit."""
        if self.limit is None:
            return
        now = time.time()
        window_index = int(now // self.window)
        try:
            count = await self.cache.incr(f"rl:{client_key}:{window_index}", self.window)
        except CacheError:
            return  # fail open: a cache outage must not stop people from posting
        if count > self.limit:
            retry_after = max(1, math.ceil((window_index + 1) * self.window - now))
            raise RateLimited(f"too many messages: at most {self.limit} per "
                              f"{self.window:g} s; try again in {retry_after} s", retry_after)


class GuestbookService:
    """Posting, reading and deleting messages; readers never see a stale list after a write."""

    def __init__(self, db: Database, cache: Cache, events: EventBus, limiter: RateLimiter, *,
                 max_name_length: int, max_text_length: int, page_size: int, max_page_size: int,
                 cache_ttl: float) -> None:
        self.db = db
        self.cache = cache
        self.events = events
        self.limiter = limiter
        self.max_name_length = max_name_length
        self.max_text_length = max_text_length
        self.page_size = page_size
        self.max_page_size = max_page_size
        self.cache_ttl = cache_ttl
        self._hash_key = b""

    async def open(self) -> None:
        """Load the key that hashes client addresses (kept in the database)."""
        self._hash_key = (await self.db.secret("client_hash_key")).encode()

    def client_hash(self, address: str) -> str:
        """A keyed hash of a client address: stable per database, the raw IP is never stored."""
        return hmac.new(self._hash_key, address.encode(), hashlib.sha256).hexdigest()[:32]

    # --- validation ---

    def clean(self, name: Any, text: Any) -> tuple[str, str]:
        """Validated (name, text), or Invalid naming the first field at fault."""
        if not isinstance(name, str):
            raise Invalid("name", "must be a string")
        if not isinstance(text, str):
            raise Invalid("text", "must be a string")
        # the rules hold for the text as sent (the OpenAPI document states them exactly), then
        # the name's runs of spaces are collapsed and the text's line ends made \n and trimmed
        for field, value, longest in (("name", name, self.max_name_length),
                                      ("text", text, self.max_text_length)):
            if not 1 <= len(value) <= longest:
                raise Invalid(field, f"must be 1 to {longest} characters")
            if _CONTROL.search(value):
                raise Invalid(field, "must not contain control characters")
            if not _VISIBLE.search(value):
                raise Invalid(field, "must not be only spaces")
        name = " ".join(name.split())
        text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
        return name, text

    def page_bounds(self, limit: Any, before: Any) -> tuple[int, int | None]:
        """Validated (limit, before) for a page request."""
        if limit is None:
            limit = self.page_size
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= self.max_page_size:
            raise Invalid("limit", f"must be a whole number from 1 to {self.max_page_size}")
        if before is not None and (isinstance(before, bool) or not isinstance(before, int) or before < 1):
            raise Invalid("before", "must be a message id (a whole number ≥ 1)")
        return limit, before

    # --- cache generation: a token that changes on every write; cached data is keyed by it ---

    async def _generation(self) -> str | None:
        try:
            token = await self.cache.get(GENERATION_KEY)
            if token is None:
                await self.cache.add(GENERATION_KEY, secrets.token_hex(8).encode())
                token = await self.cache.get(GENERATION_KEY)
            return token.decode() if token else None
        except CacheError:
            return None

    async def _invalidate(self) -> None:
        try:
            await self.cache.set(GENERATION_KEY, secrets.token_hex(8).encode())
        except CacheError:
            # cached entries expire after cache_ttl; nothing newer than that can be stale
            log.warning("cache unavailable: list cache not invalidated (entries expire in %ss)",
                        self.cache_ttl)

    async def _cached(self, key: str) -> Any:
        try:
            raw = await self.cache.get(key)
        except CacheError:
            return None
        return json.loads(raw) if raw is not None else None

    async def _store(self, key: str, value: Any) -> None:
        try:
            await self.cache.set(key, json.dumps(value, separators=(",", ":")).encode(), self.cache_ttl)
        except CacheError:
            pass

    # --- reads ---

    async def count(self) -> int:
        """How many messages there are (from the cache when it has it)."""
        generation = await self._generation()
        key = f"gb:{generation}:count"
        if generation is not None:
            cached = await self._cached(key)
            if cached is not None:
                return int(cached)
        async with self.db.connect() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(messages))).scalar_one()
        if generation is not None:
            await self._store(key, total)
        return int(total)

    async def list_messages(self, limit: Any = None, before: Any = None) -> MessagePage:
        """A page of messages, newest first; the first page comes from the cache when it can."""
        limit, before = self.page_bounds(limit, before)
        generation = await self._generation() if before is None else None
        key = f"gb:{generation}:first:{limit}"
        if generation is not None:
            try:
                raw = await self.cache.get(key)
            except CacheError:
                raw = None
            if raw is not None:
                return MessagePage(**json.loads(raw), encoded=raw)
        query = (sa.select(messages.c.id, messages.c.name, messages.c.text, messages.c.created_at)
                 .order_by(messages.c.id.desc()).limit(limit + 1))
        if before is not None:
            query = query.where(messages.c.id < before)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        items = [Message.from_row(row).to_json() for row in rows[:limit]]
        next_before = items[-1]["id"] if len(rows) > limit else None
        page = MessagePage(messages=items, next_before=next_before, count=await self.count())
        if generation is not None:
            await self._store(key, page.to_json())
        return page

    async def get_message(self, message_id: int) -> Message:
        """One message by id, or NotFound."""
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(messages).where(messages.c.id == message_id))).first()
        if row is None:
            raise NotFound(f"no message {message_id}")
        return Message.from_row(row)

    # --- writes ---

    async def post_message(self, name: Any, text: Any, client_address: str) -> Message:
        """Validate, rate-limit, store durably, invalidate the cache, announce. Returns the message."""
        name, text = self.clean(name, text)
        client = self.client_hash(client_address)
        await self.limiter.check(self.client_hash(rate_limit_unit(client_address)))
        created = datetime.now(UTC)
        async with self.db.transaction() as conn:
            result = await conn.execute(messages.insert().values(
                name=name, text=text, created_at=created, client_hash=client).returning(messages.c.id))
            message_id = result.scalar_one()
        message = Message(id=message_id, name=name, text=text, created_at=created)
        await self._invalidate()
        await self.events.publish({"type": "message", "message": message.to_json()})
        return message

    async def delete_message(self, message_id: int) -> None:
        """Delete a message (NotFound if there is none), invalidate the cache, announce."""
        async with self.db.transaction() as conn:
            result = await conn.execute(messages.delete().where(messages.c.id == message_id))
        if result.rowcount == 0:
            raise NotFound(f"no message {message_id}")
        await self._invalidate()
        await self.events.publish({"type": "deleted", "id": message_id})
