"""Post-commit outputs: the seam for everything that consumes stored batches.

An output (NOC exposition, remote write, a Kafka or OTLP exporter) sees a
batch only after the store committed it, and never in the commit path: the
ingest worker acknowledges the batch to the broker regardless of what any
output does. `Outputs` gives each output its own bounded queue and its own
task, so a slow output lags (and, once its queue is full, drops and counts)
without slowing ingest or any other output, and a raising output is counted
and logged per batch without a redelivery that would turn the batch into a
duplicate the outputs never see.

Counted per output (label `output`): `privtel_output_delivered_total`,
`privtel_output_failures_total` (deliver raised), `privtel_output_dropped_total`
(queue full, or still queued at shutdown), `privtel_output_queue_depth`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Gauge

from pipelines.envelope import Header
from pipelines.lifecycle import Component, Lifecycle
from pipelines.record import Record

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Committed:
    """One batch as the store committed it."""

    header: Header
    records: Sequence[Record]


@runtime_checkable
class Output(Protocol):
    """`name` labels its metrics; `deliver` is awaited once per committed batch, one
    at a time, on the event loop (blocking work belongs in `asyncio.to_thread`).
    An output that also has `start`/`close` is started and closed with the set."""

    name: str

    async def deliver(self, batch: Committed) -> None: ...


class _OutputMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.delivered = Counter("privtel_output_delivered", "Committed batches an output "
                                 "took", ["output"], registry=r)
        self.failures = Counter("privtel_output_failures", "Committed batches an output "
                                "raised on", ["output"], registry=r)
        self.dropped = Counter("privtel_output_dropped", "Committed batches an output never "
                               "saw: its queue was full, or still held them at shutdown",
                               ["output"], registry=r)
        self.depth = Gauge("privtel_output_queue_depth", "Committed batches waiting for an "
                           "output", ["output"], registry=r)


class Outputs(Lifecycle):
    """The set of post-commit outputs; `offer` never blocks and never raises."""

    close_grace_s = 5.0

    def __init__(self, outputs: Sequence[Output], *, registry: CollectorRegistry | None,
                 queue_size: int = 1000) -> None:
        names = [o.name for o in outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"output names must be unique: {names}")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.outputs = tuple(outputs)
        self.metrics = _OutputMetrics(registry)
        self._queues = {o.name: asyncio.Queue[Committed](queue_size) for o in self.outputs}
        self._tasks: list[asyncio.Task[None]] = []
        for o in self.outputs:
            for series in (self.metrics.delivered, self.metrics.failures, self.metrics.dropped):
                series.labels(o.name)

    def offer(self, header: Header, records: Sequence[Record]) -> None:
        """Hand a committed batch to every output; a full queue drops it for that output only."""
        batch = Committed(header, records)
        for name, q in self._queues.items():
            try:
                q.put_nowait(batch)
            except asyncio.QueueFull:
                self.metrics.dropped.labels(name).inc()
                continue
            self.metrics.depth.labels(name).set(q.qsize())

    async def _start(self) -> None:
        started: list[Component] = []
        try:
            for o in self.outputs:
                if isinstance(o, Component):
                    await o.start()
                    started.append(o)
        except BaseException:
            for c in reversed(started):
                with contextlib.suppress(Exception):
                    await c.close()
            raise
        self._tasks = [asyncio.create_task(self._feed(o), name=f"privtel-output-{o.name}")
                       for o in self.outputs]

    async def _feed(self, output: Output) -> None:
        q, m = self._queues[output.name], self.metrics
        while True:
            batch = await q.get()
            m.depth.labels(output.name).set(q.qsize())
            try:
                await output.deliver(batch)
            except Exception as e:
                m.failures.labels(output.name).inc()
                log.warning("output %s failed on a committed batch (%s); the batch stays "
                            "stored", output.name, type(e).__name__)
            else:
                m.delivered.labels(output.name).inc()
            finally:
                q.task_done()

    async def _close(self) -> None:
        """Let outputs drain for up to `close_grace_s`, then stop; what is left is counted."""
        if self._tasks:
            drained = [asyncio.ensure_future(q.join()) for q in self._queues.values()]
            await asyncio.wait(drained, timeout=self.close_grace_s)
            for d in drained:
                d.cancel()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for name, q in self._queues.items():
            if q.qsize():
                self.metrics.dropped.labels(name).inc(q.qsize())
        for o in reversed(self.outputs):
            if isinstance(o, Component):
                try:
                    await o.close()
                except Exception as e:
                    log.error("closing output %s failed: %s", o.name, type(e).__name__)
