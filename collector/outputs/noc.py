"""The NOC exporter as a post-commit output: committed batches feed the NOC view.

With a shared store (`collector.liveness.SharedNoc`) each committed batch is
merged into the store's NOC rows, in a worker thread, and the exposition reads
them back, so every worker serves the same state for the devices it owns.
Without one (tests, benchmarks) records go straight into `NocMetrics`.
"""

from __future__ import annotations

import asyncio
import contextlib

from collector.liveness import SharedNoc
from collector.metrics.noc import NocMetrics
from collector.outputs.base import Committed
from pipelines.lifecycle import Lifecycle


class NocOutput(Lifecycle):
    """Registers this worker for device assignment while it runs; leaves on close."""

    name = "noc"

    def __init__(self, noc: NocMetrics, shared: SharedNoc | None = None) -> None:
        self.noc, self.shared = noc, shared

    async def deliver(self, batch: Committed) -> None:
        if self.shared is None:
            self.noc.observe(batch.records)
            return
        await asyncio.to_thread(self.shared.commit, batch.header.agent_id,
                                batch.header.tenant, batch.records, self.noc)

    async def _start(self) -> None:
        if self.shared is not None:
            await asyncio.to_thread(self.shared.register)

    async def _close(self) -> None:
        if self.shared is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.shared.deregister)
            self.shared.db.close()
