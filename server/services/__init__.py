"""Long-lived resources that know nothing of HTTP, opened together and closed in reverse."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import AsyncIterator

from ..config import Settings
from .compute import ComputeService
from .errors import Invalid, NotFound, ServiceError, Unavailable
from .greeting import GreetingService
from .outbound import OutboundService

__all__ = ["Services", "open_services", "Invalid", "NotFound", "ServiceError", "Unavailable"]

log = logging.getLogger("server.services")


@dataclass(frozen=True)
class Services:
    """Everything handlers may call; handed to the Application, never imported as a global."""

    greeting: GreetingService
    compute: ComputeService
    outbound: OutboundService


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open every service in dependency order and close them in reverse on the way out."""
    async with contextlib.AsyncExitStack() as stack:
        greeting = GreetingService(settings.max_name_length)
        compute = ComputeService(settings.compute_workers, settings.compute_max_pending,
                                 settings.compute_max_n)
        stack.push_async_callback(_closing("compute pool", compute.close))
        outbound = OutboundService(settings.outbound_max_clients, settings.outbound_timeout,
                                   settings.outbound_allow, settings.outbound_max_urls,
                                   settings.outbound_max_bytes)
        stack.push_async_callback(_closing("outbound client", outbound.close))
        yield Services(greeting=greeting, compute=compute, outbound=outbound)


def _closing(name, close):
    """Wrap a close coroutine so the order of closing shows in the debug log."""
    async def run() -> None:
        log.debug("closing %s", name)
        await close()
    return run
