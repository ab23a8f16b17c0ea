"""The glue between `collector.ingest.IngestWorker` and a `Store`.

`IngestWorker` wants two coroutines: `sink(header, records) -> bool` and
`quarantine(reason, topic, header, payload)`. `StoreSink` provides them: it
stamps retention and runs the blocking store call in a worker thread. Only
after the commit returned, and only for a batch actually stored (not a
duplicate), it offers the batch to the post-commit outputs
(`collector.outputs.Outputs`), which never block and never raise, so no
output can delay the PUBACK or cause a redelivery. Only a digest and size of
a rejected payload are kept: a batch that failed verification is not trusted
enough to store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from collector.store.base import BatchMeta, Store, TaggedRecord
from pipelines.digest import sha256_hex
from pipelines.envelope import Header
from pipelines.record import Record

Tagger = Callable[[Sequence[Record]], list[TaggedRecord]]


class CommitListener(Protocol):
    """What the sink tells about each stored batch (`collector.outputs.Outputs`)."""

    def offer(self, header: Header, records: Sequence[Record]) -> None: ...


class StoreSink:
    def __init__(self, store: Store, tag: Tagger, outputs: CommitListener | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self._tag, self._outputs, self._clock = store, tag, outputs, clock

    def write(self, header: Header, records: Sequence[Record]) -> bool:
        """The blocking half, for callers already on a worker thread; outputs are not fed."""
        meta = BatchMeta(agent_id=header.agent_id, batch_id=header.batch_id, seq=header.seq,
                         tenant=header.tenant, created=float(header.created),
                         received_at=self._clock())
        return self.store.write_batch(meta, self._tag(records))

    async def sink(self, header: Header, records: list[Record]) -> bool:
        stored = await asyncio.to_thread(self.write, header, records)
        if stored and self._outputs is not None:
            self._outputs.offer(header, records)
        return stored

    async def quarantine(self, reason: str, topic: str, header: Header | None,
                         payload: bytes) -> None:
        digest = sha256_hex(payload)
        await asyncio.to_thread(
            self.store.quarantine, reason, topic[:256],
            header.agent_id if header is not None else None,
            header.batch_id if header is not None else None, len(payload), digest)
