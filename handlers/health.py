"""Liveness (/healthz) and readiness (/readyz) probes for supervisors and load balancers."""
from __future__ import annotations

import time

from tornado.web import url

from server import __version__

from .base import ApiHandler, BaseHandler
from .schemas import HealthOut


class _ProbeHandler(ApiHandler):
    """A JSON probe that is never refused by the API concurrency cap."""

    def prepare(self) -> None:
        BaseHandler.prepare(self)

    def _report(self, status: str, code: int) -> None:
        self.set_header("Cache-Control", "no-store")
        uptime = round(time.time() - self.server_state.started_at, 3)
        self.write_model(HealthOut(status=status, version=__version__, uptime_s=uptime), code)


class HealthHandler(_ProbeHandler):
    """GET /healthz: 200 while the process runs its event loop."""

    async def get(self) -> None:
        self._report("ok", 200)

    head = get


class ReadyHandler(_ProbeHandler):
    """GET /readyz: 200 when serving, 503 once draining for shutdown."""

    async def get(self) -> None:
        if self.server_state.draining:
            self.set_header("Retry-After", "5")
            self._report("draining", 503)
        else:
            self._report("ready", 200)

    head = get


default_handlers = [
    url(r"/healthz", HealthHandler, name="healthz"),
    url(r"/readyz", ReadyHandler, name="readyz"),
]
