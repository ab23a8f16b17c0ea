"""Store self-metrics: write path inline (`InstrumentedStore`), sizes and counts on a schedule.

`StoreMetricsRefresh` is the lifecycle component that reads sizes and counts
every minute off the event loop; counting a large table on every scrape would
be the heaviest query the collector runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.store.base import BatchMeta, Store, TaggedRecord
from pipelines.lifecycle import TaskComponent

log = logging.getLogger(__name__)


class StoreMetrics:
    """Store self-metrics. Write-path series are updated inline; table sizes and
    counts per class are refreshed by `refresh(store)` on the caller's schedule,
    because counting a large table on every scrape would be the heaviest query
    the collector runs."""

    def __init__(self, registry: CollectorRegistry, backend: str) -> None:
        self.backend = backend
        self.write_seconds = Histogram(
            "privtel_store_write_seconds", "Time to store one batch.", ["backend"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry).labels(backend)
        self.batches = Counter("privtel_store_batches", "Batches offered to the store by "
                               "result (stored, duplicate, error).", ["backend", "result"],
                               registry=registry)
        self.records = Counter("privtel_store_records_written", "Records stored, by retention "
                               "class.", ["backend", "retention_class"], registry=registry)
        self.quarantined = Counter("privtel_store_quarantined", "Rejected batches kept in "
                                   "quarantine, by reason.", ["backend", "reason"],
                                   registry=registry)
        self.size = Gauge("privtel_store_size_bytes", "On-disk size of the store.", ["backend"],
                          registry=registry).labels(backend)
        self.rows = Gauge("privtel_store_records", "Records held, by retention class.",
                          ["backend", "retention_class"], registry=registry)
        self.lag = Histogram(
            "privtel_store_batch_lag_seconds", "From the agent sealing a batch to its commit.",
            ["backend"], buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400),
            registry=registry).labels(backend)
        self._classes: set[str] = set()
        self.refreshed = Gauge("privtel_store_refresh_timestamp_seconds", "When size and "
                               "counts were last read.", ["backend"],
                               registry=registry).labels(backend)

    def observe_write(self, records: Sequence[TaggedRecord], stored: bool | None,
                      seconds: float, created: float | None = None) -> None:
        self.write_seconds.observe(seconds)
        if stored and created is not None:
            self.lag.observe(max(0.0, time.time() - created))
        result = "error" if stored is None else "stored" if stored else "duplicate"
        self.batches.labels(self.backend, result).inc()
        if stored:
            per: dict[str, int] = {}
            for t in records:
                per[t.retention_class] = per.get(t.retention_class, 0) + 1
            for klass, n in per.items():
                self.records.labels(self.backend, klass).inc(n)

    async def run(self, store: Store, stop: asyncio.Event, every_s: float = 60.0) -> None:
        """Refresh size and counts every `every_s` until `stop`, off the event loop."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.refresh, store)
            except Exception as e:
                log.warning("store metrics refresh failed: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every_s)

    def refresh(self, store: Store) -> None:
        self.size.set(store.size_bytes())
        counts = store.counts_by_class()
        for klass, n in counts.items():
            self.rows.labels(self.backend, klass).set(n)
        for klass in self._classes - set(counts):
            self.rows.remove(self.backend, klass)
        self._classes = set(counts)
        self.refreshed.set(time.time())


class InstrumentedStore:
    """A `Store` that reports to `StoreMetrics`; every other call passes through."""

    def __init__(self, store: Store, metrics: StoreMetrics) -> None:
        self.inner, self.metrics = store, metrics
        self.backend = store.backend

    def write_batch(self, batch: BatchMeta, records: Sequence[TaggedRecord]) -> bool:
        started = time.perf_counter()
        stored: bool | None = None
        try:
            stored = self.inner.write_batch(batch, records)
            return stored
        finally:
            self.metrics.observe_write(records, stored, time.perf_counter() - started,
                                       batch.created)

    def quarantine(self, reason: str, topic: str, agent_id: str | None, batch_id: str | None,
                   size: int, digest: str) -> None:
        self.inner.quarantine(reason, topic, agent_id, batch_id, size, digest)
        self.metrics.quarantined.labels(self.backend, reason).inc()

    def migrate(self) -> int:
        return self.inner.migrate()

    def count_records(self, **filters: Any) -> int:
        return self.inner.count_records(**filters)

    def count_batches(self, **filters: Any) -> int:
        return self.inner.count_batches(**filters)

    def count_quarantined(self, reason: str | None = None) -> int:
        return self.inner.count_quarantined(reason)

    def purge_expired(self, now: float, dry_run: bool = False) -> dict[str, int]:
        return self.inner.purge_expired(now, dry_run)

    def counts_by_class(self) -> dict[str, int]:
        return self.inner.counts_by_class()

    def size_bytes(self) -> int:
        return self.inner.size_bytes()

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class StoreMetricsRefresh(TaskComponent):
    """`StoreMetrics.run` as a component: refresh every `every_s` until closed."""

    def __init__(self, metrics: StoreMetrics, store: Store, every_s: float = 60.0) -> None:
        super().__init__(name="privtel-store-metrics")
        self.metrics, self.store, self.every_s = metrics, store, every_s

    async def _main(self, stop: asyncio.Event) -> None:
        await self.metrics.run(self.store, stop, self.every_s)
