"""With --processes N, every worker shows the whole server: workers share metrics through files.

Each worker writes its metrics snapshot and Prometheus exposition to the parent's runtime
directory (lifecycle.run makes it with mkdtemp and removes it at exit) once per second
(atomically, by rename); whichever worker answers /metrics or /api/stats merges its own live
numbers with its siblings' latest files; prometheus_client parses the expositions and writes the
merged one.

Not prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR + MultiProcessCollector): it
exports no custom collector (the request counts kept in plain dicts and folded at scrape time, the
function gauges, the process, GC and GC-pause collectors), and it sums counters and histograms
over pids where /metrics here keeps one series per worker (worker="<slot>").
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from .metrics import Metrics, merge_snapshots

STALE_AFTER = 5.0  # seconds: a file older than this belongs to a worker that is gone


class ClusterView:
    """This worker's window on its siblings' metrics."""

    def __init__(self, directory: Path, index: int, metrics: Metrics, interval: float = 1.0) -> None:
        self.directory = directory
        self.index = index
        self.metrics = metrics
        self.interval = interval
        self.path = directory / f"worker-{index}-{os.getpid()}.json"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Publish now and then every interval."""
        self.publish()
        self._task = asyncio.create_task(self._publish_periodically())

    async def _publish_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.publish()

    def publish(self) -> None:
        """Write this worker's numbers for the others (write to a temp file, then rename)."""
        data = {"index": self.index, "snapshot": self.metrics.snapshot(),
                "prometheus": self.metrics.prometheus_text().decode()}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(temporary, self.path)

    def siblings(self) -> list[dict[str, Any]]:
        """The latest numbers of every other live worker."""
        found = []
        now = time.time()
        for path in self.directory.glob("worker-*.json"):
            if path == self.path:
                continue
            try:
                if now - path.stat().st_mtime > STALE_AFTER:
                    continue
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # it was being replaced or removed: skip this round
        return found

    def summary(self) -> dict[str, Any]:
        """/api/stats for the whole server."""
        snapshots = [self.metrics.snapshot()] + [s["snapshot"] for s in self.siblings()]
        return merge_snapshots(snapshots)

    def prometheus_text(self) -> bytes:
        """/metrics for the whole server: every worker's samples, labelled worker="<slot>"."""
        texts = {self.index: self.metrics.prometheus_text().decode()}
        for sibling in self.siblings():
            texts.setdefault(sibling["index"], sibling["prometheus"])
        return relabel(texts)

    async def close(self) -> None:
        """Stop publishing and withdraw this worker's file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.path.unlink(missing_ok=True)


class _Families:
    """A collector that yields metric families it was given (for generate_latest)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families

    def describe(self) -> list[Metric]:
        return []


def relabel(texts: dict[int, str]) -> bytes:
    """Merge Prometheus expositions into one, each sample with a worker label.

    prometheus_client parses every worker's text and writes the merged families, so the
    escaping, the counter and ``_created`` naming and the number format are its own.
    """
    families: dict[str, Metric] = {}
    for worker, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
            merged.samples.extend(sample._replace(labels={**sample.labels, "worker": str(worker)})
                                  for sample in family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)
