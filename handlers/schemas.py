"""Request and response models of the JSON API: validation in, serialisation out."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from server.services.greeting import NAME_PATTERN
from server.services.guestbook import TEXT_PATTERN

from .openapi import from_settings


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


def _integral(value: Any) -> Any:
    """1.0 and 1e5 as the int they are (JSON Schema's "integer" is any number with no fraction)."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


# a JSON integer: strict (no "1", no true) but, as JSON Schema counts, 51613.0 is one
JsonInteger = Annotated[int, BeforeValidator(_integral)]


class HelloIn(_Model):
    """POST /api/hello"""

    name: str = Field(description="who to greet; empty means Anonymous",
                      json_schema_extra={"pattern": NAME_PATTERN,
                                         **from_settings(maxLength="max_name_length")})


class HelloOut(_Model):
    """A greeting."""

    message: str


class SlowOut(_Model):
    """How long /api/slow waited."""

    requested_ms: int
    waited_ms: float


class ComputeIn(_Model):
    """POST /api/compute: count the primes ≤ n."""

    n: JsonInteger = Field(json_schema_extra={"minimum": 0, **from_settings(maximum="compute_max_n")})


class ComputeOut(_Model):
    """A finished compute job."""

    n: int
    primes: int
    elapsed_ms: float = Field(description="wall time in the server, queueing included")
    cpu_ms: float = Field(description="CPU time the worker process spent")


class FetchIn(_Model):
    """POST /api/fetch: fetch these URLs concurrently."""

    urls: list[Any] = Field(description="http(s) URLs; a bad entry gets an error in its result",
                            json_schema_extra={"minItems": 1, **from_settings(maxItems="outbound_max_urls")})
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


HealthStatus = Literal["ok", "ready", "draining", "unavailable"]


class HealthOut(_Model):
    """Liveness or readiness."""

    status: HealthStatus
    version: str
    uptime_s: float
    checks: dict[str, str] = Field(default={}, description="readiness of each dependency")


class MessageIn(_Model):
    """POST /api/messages: sign the guestbook."""

    name: str = Field(description="not only spaces; runs of spaces are stored as one",
                      json_schema_extra={"minLength": 1, "pattern": TEXT_PATTERN,
                                         **from_settings(maxLength="max_name_length")})
    text: str = Field(description="not only spaces; stored trimmed, line ends as \\n",
                      json_schema_extra={"minLength": 1, "pattern": TEXT_PATTERN,
                                         **from_settings(maxLength="message_max_length")})


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
