"""The fast HTTP/1.1 engine: asyncio protocols and llhttp (httptools) under a Tornado Application."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import FastHTTPServer

__all__ = ["FastHTTPServer"]


def __getattr__(name: str) -> Any:
    # loaded on first use: the TCP service and the stock engine need only engine.listeners and
    # engine.limits, and must not load httptools (an optional speed-up of this engine alone)
    if name == "FastHTTPServer":
        from .server import FastHTTPServer
        return FastHTTPServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
