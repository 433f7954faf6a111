"""The server's view of itself: Prometheus /metrics, /api/stats, its live stream, the dashboard."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from tornado.iostream import StreamClosedError
from tornado.web import url

from server import __version__
from server.metrics import Metrics

from .base import ApiHandler, BaseHandler, PageHandler
from .openapi import Response, documented


def _stats(handler: BaseHandler) -> dict[str, Any]:
    cluster = handler.application.settings.get("cluster")
    metrics: Metrics = handler.application.settings["metrics"]
    summary = cluster.summary() if cluster is not None else metrics.summary()
    summary["version"] = __version__
    summary["draining"] = handler.server_state.draining
    return summary


class MetricsHandler(BaseHandler):
    """GET /metrics: Prometheus text exposition of this process."""

    async def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        cluster = self.application.settings.get("cluster")
        source = cluster if cluster is not None else self.application.settings["metrics"]
        self.finish(source.prometheus_text())


class StatsHandler(ApiHandler):
    """GET /api/stats: a JSON summary of the metrics (requests/s, latency, connections...)."""

    def prepare(self) -> None:
        BaseHandler.prepare(self)  # never refused by the concurrency cap: it is how you see it

    @documented("A JSON summary of this process's metrics", capped=False,
                responses={200: Response("requests per second, latency percentiles, connections, "
                                         "event-loop lag, process, per-route table, last 60 s",
                                         body={"type": "object"})})
    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write_json(_stats(self))


class StatsStreamHandler(BaseHandler):
    """GET /api/stats/stream: the same summary once per second as Server-Sent Events."""

    @documented("The metrics summary once per second, as Server-Sent Events",
                responses={200: Response("an endless event stream; each event's data is the "
                                         "/api/stats object", body={"type": "string"},
                                         media_type="text/event-stream")})
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")  # nginx: pass events through at once
        interval = self.config.stats_interval
        try:
            self.write("retry: 1000\n\n")
            while not self.server_state.draining:
                self.write(f"data: {json.dumps(_stats(self), separators=(',', ':'))}\n\n")
                await self.flush()
                await asyncio.sleep(interval)
        except StreamClosedError:
            return
        self.finish()  # draining: end the stream so shutdown is not held up; clients reconnect


class DashboardHandler(PageHandler):
    """GET /dashboard: live charts of the server's own metrics."""

    async def get(self) -> None:
        self.render("dashboard.html", stats=_stats(self))


default_handlers = [
    url(r"/metrics", MetricsHandler, name="metrics"),
    url(r"/api/stats", StatsHandler, name="api-stats"),
    url(r"/api/stats/stream", StatsStreamHandler, name="api-stats-stream"),
    url(r"/dashboard", DashboardHandler, name="dashboard"),
]
