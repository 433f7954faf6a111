"""Request and response models of the JSON API: validation in, serialisation out."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class HelloIn(_Model):
    """POST /api/hello"""

    name: str = Field(description="who to greet; empty means Anonymous")


class HelloOut(_Model):
    """A greeting."""

    message: str


class SlowOut(_Model):
    """How long /api/slow waited."""

    requested_ms: int
    waited_ms: float


class ComputeIn(_Model):
    """POST /api/compute: count the primes ≤ n."""

    n: int


class ComputeOut(_Model):
    """A finished compute job."""

    n: int
    primes: int
    elapsed_ms: float = Field(description="wall time in the server, queueing included")
    cpu_ms: float = Field(description="CPU time the worker process spent")


class FetchIn(_Model):
    """POST /api/fetch: fetch these URLs concurrently."""

    urls: list[Any] = Field(description="http(s) URLs; a bad entry gets an error in its result")
    method: Literal["GET", "HEAD"] = "GET"


class FetchResultOut(_Model):
    """What happened to one URL."""

    url: Any
    ok: bool
    status: int | None = None
    reason: str | None = None
    time_ms: float = 0.0
    size: int = 0
    final_url: str | None = None
    headers: dict[str, str] = {}
    title: str | None = None
    error: str | None = None


class FetchOut(_Model):
    """Results of /api/fetch, one per URL in request order."""

    results: list[FetchResultOut]
    elapsed_ms: float


class HealthOut(_Model):
    """Liveness or readiness."""

    status: Literal["ok", "ready", "draining", "unavailable"]
    version: str
    uptime_s: float
    checks: dict[str, str] = Field(default={}, description="readiness of each dependency")


class MessageIn(_Model):
    """POST /api/messages: sign the guestbook."""

    name: str = Field(description="1 to 64 characters")
    text: str = Field(description="1 to 2000 characters")


class MessageOut(_Model):
    """A guestbook message."""

    id: int
    name: str
    text: str
    created_at: str = Field(description="ISO 8601, UTC")


class MessageListOut(_Model):
    """A page of messages, newest first."""

    messages: list[MessageOut]
    next_before: int | None = Field(description="pass as ?before= for the next (older) page")
    count: int = Field(description="messages in the guestbook")
