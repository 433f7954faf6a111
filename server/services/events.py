"""Live events (new and deleted messages): in-process fan-out, through Redis pub/sub when configured."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from .cache import redis_client

log = logging.getLogger("server.events")
PUBLISH_WAIT = 2.0  # seconds to connect to Redis or to wait for a free connection to publish

Subscriber = Callable[[str], None]


class EventBus:
    """Publishes JSON events to every subscriber of every instance that shares the Redis channel.

    Without Redis, events reach this process's subscribers only. With Redis, a publisher sends to
    the channel and every instance (itself included) delivers what it hears; if Redis is down the
    event is delivered locally so at least this instance's pages stay live.
    """

    def __init__(self, redis_url: str | None, channel: str = "tornado-hps:events",
                 pool_size: int = 20) -> None:
        self.channel = channel
        self._subscribers: set[Subscriber] = set()
        self._redis: Any = None
        self._listener: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        if redis_url:
            # pool_size connections for publishing, one more for the subscription's listener
            self._redis = redis_client(redis_url, pool_size + 1, PUBLISH_WAIT,
                                       socket_connect_timeout=PUBLISH_WAIT)

    @property
    def subscriber_count(self) -> int:
        """Local subscribers (open live pages of this process)."""
        return len(self._subscribers)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(json_text)` for every event; returns the function that unsubscribes."""
        self._subscribers.add(callback)
        return lambda: self._subscribers.discard(callback)

    def _deliver(self, payload: str) -> None:
        for callback in list(self._subscribers):
            try:
                callback(payload)
            except Exception:  # one broken subscriber must not starve the others
                log.exception("live event subscriber failed")

    async def publish(self, event: dict[str, Any]) -> None:
        """Send an event to all subscribers (of all instances, with Redis)."""
        payload = json.dumps(event, separators=(",", ":"))
        if self._redis is None:
            self._deliver(payload)
            return
        try:
            await self._redis.publish(self.channel, payload)
        except Exception as exc:  # Redis down: keep this instance live at least
            log.warning("redis publish failed (%s); delivering locally only", exc)
            self._deliver(payload)

    async def start(self) -> None:
        """Start listening to the Redis channel (no-op without Redis)."""
        if self._redis is not None:
            self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.connected.set()
                backoff = 0.2
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        self._deliver(data.decode() if isinstance(data, bytes) else data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected.is_set():
                    log.warning("redis subscription lost (%s); reconnecting", exc)
                self.connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        """Stop listening and close the Redis connection."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._redis is not None:
            await self._redis.aclose()
        self._subscribers.clear()

