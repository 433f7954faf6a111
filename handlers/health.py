"""Liveness (/healthz) and readiness (/readyz) probes for supervisors and load balancers."""
from __future__ import annotations

import time

from tornado.web import url

from server import __version__

from .base import ApiHandler, BaseHandler
from .openapi import Response, documented
from .schemas import HealthOut, HealthStatus


class _ProbeHandler(ApiHandler):
    """A JSON probe that is never refused by the API concurrency cap."""

    def prepare(self) -> None:
        BaseHandler.prepare(self)

    def _report(self, status: HealthStatus, code: int, checks: dict[str, str] | None = None) -> None:
        self.set_header("Cache-Control", "no-store")
        uptime = round(time.time() - self.server_state.started_at, 3)
        self.write_model(HealthOut(status=status, version=__version__, uptime_s=uptime,
                                   checks=checks or {}), code)


class HealthHandler(_ProbeHandler):
    """GET /healthz: 200 while the process runs its event loop."""

    @documented("Liveness: 200 while the process runs its event loop", capped=False,
                responses={200: HealthOut})
    async def get(self) -> None:
        self._report("ok", 200)

    head = get


class ReadyHandler(_ProbeHandler):
    """GET /readyz: 200 when serving and the database answers; 503 when draining or it does not."""

    @documented("Readiness: 200 when serving and the database answers", capped=False,
                responses={200: HealthOut,
                           503: Response("draining after SIGTERM, or the database does not answer "
                                         "(status says which)", body=HealthOut,
                                         headers=("Retry-After",))})
    async def get(self) -> None:
        if self.server_state.draining:
            self.set_header("Retry-After", "5")
            self._report("draining", 503)
            return
        services = self.services
        database_up = await services.db.ping()
        checks = {"database": "ok" if database_up else "unavailable",
                  # the cache is optional: without it answers come from the database
                  "cache": "ok" if await services.cache.ping() else "unavailable (degraded)"}
        if database_up:
            self._report("ready", 200, checks)
        else:
            self.set_header("Retry-After", "2")
            self._report("unavailable", 503, checks)

    head = get


default_handlers = [
    url(r"/healthz", HealthHandler, name="healthz"),
    url(r"/readyz", ReadyHandler, name="readyz"),
]
