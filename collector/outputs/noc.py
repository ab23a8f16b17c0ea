"""The NOC exporter as a post-commit output: committed records feed `NocMetrics`."""

from __future__ import annotations

from collector.metrics.noc import NocMetrics
from collector.outputs.base import Committed


class NocOutput:
    """`NocMetrics.observe` is a few dict updates per record, so it runs on the loop."""

    name = "noc"

    def __init__(self, noc: NocMetrics) -> None:
        self.noc = noc

    async def deliver(self, batch: Committed) -> None:
        self.noc.observe(batch.records)
