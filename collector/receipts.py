"""End-to-end receipts: tell each agent, signed, which of its batches reached a final outcome.

The ingest worker calls `ReceiptPublisher.offer` after a batch was committed
(or judged a duplicate, parked or quarantined) and acknowledged to the broker.
Outcomes wait a short linger so that one signed message (`pipelines.receipt`)
carries the outcomes of many batches of one agent, then go out QoS 1 to that
agent's receipt topic, which the broker's ACL lets only collectors write and
only that agent read. They go out on the ingest worker's own broker connection
(`ReceiveTransport.sender()`): a second connection under the same certificate
identity would, with the shipped Mosquitto config (identity = client id), take
over the ingest session.

Nothing here can lose data: a receipt that is dropped (queue full, broker
gone, collector killed before it went out) only means the agent resends the
batch after its receipt timeout, the store turns the resend into a duplicate,
and the duplicate earns a receipt of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client import CollectorRegistry, Counter

from pipelines import keys
from pipelines.lifecycle import Lifecycle
from pipelines.receipt import (
    MAX_ITEMS,
    Outcome,
    Receipts,
    group_by_agent,
    receipt_topic,
    sign_receipts,
)
from plumbing.backoff import Backoff
from plumbing.files import read_private
from plumbing.transport import BatchSender, TransportError

log = logging.getLogger(__name__)

Row = tuple[str, str, str, Outcome]


def load_receipt_key(path: Path, passphrase_file: Path | None) -> ed25519.Ed25519PrivateKey:
    """The collector's Ed25519 receipt key; refused if others can read the file."""
    phrase = (None if passphrase_file is None
              else keys.parse_passphrase(read_private(passphrase_file)))
    return keys.load_signing_key(read_private(path), phrase)


class ReceiptMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter("privtel_receipts_sent", "Batch outcomes sent to agents in signed "
                            "receipts", ["outcome"], registry=registry)
        self.messages = Counter("privtel_receipt_messages_sent", "Signed receipt messages "
                                "published", registry=registry)
        self.dropped = Counter("privtel_receipts_dropped", "Batch outcomes not sent (queue "
                               "full or closed); the agent resends and gets a receipt then",
                               registry=registry)
        self.failures = Counter("privtel_receipt_publish_failures", "Failed receipt publishes "
                                "and connection losses", registry=registry)
        for o in Outcome:
            self.sent.labels(str(o))


class ReceiptPublisher(Lifecycle):
    """A component fed by `offer` (non-blocking, never raises); its own task publishes
    through `sender()` (the ingest connection's publishing side, None while it is
    down), so a slow receipt never delays ingest."""

    def __init__(self, sender: Callable[[], BatchSender | None],
                 key: ed25519.Ed25519PrivateKey, *,
                 registry: CollectorRegistry, linger_s: float = 0.02, max_queue: int = 100_000,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self._sender, self._key, self._linger = sender, key, linger_s
        self.metrics = ReceiptMetrics(registry)
        self._queue: asyncio.Queue[Row] = asyncio.Queue(max_queue)
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._task: asyncio.Task[None] | None = None
        self._unsent: list[Row] = []

    def offer(self, tenant: str, agent_id: str, batch_id: str, outcome: Outcome | str) -> None:
        if not self.started:
            self.metrics.dropped.inc()
            return
        try:
            self._queue.put_nowait((tenant, agent_id, batch_id, Outcome(outcome)))
        except asyncio.QueueFull:
            self.metrics.dropped.inc()

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="privtel-receipts")

    async def _close(self) -> None:
        """Stop; outcomes not yet sent are dropped (their agents resend)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.metrics.dropped.inc(len(self._unsent) + self._queue.qsize())

    async def _run(self) -> None:
        failing = False
        while True:
            if not self._unsent:
                self._unsent = await self._collect()
            sender = self._sender()
            try:
                if sender is None:
                    raise TransportError("the ingest connection is down")
                await self._publish(sender, self._unsent)
            except TransportError as e:
                self.metrics.failures.inc()
                delay = self._backoff.next()
                if not failing:
                    log.warning("receipts not sent (%s); retrying with backoff", e)
                failing = True
                await asyncio.sleep(delay)
                continue
            self._unsent = []
            if failing:
                log.info("receipts flowing again")
            failing = False
            self._backoff.reset()

    async def _collect(self) -> list[Row]:
        """The next outcome, and whatever else arrives within the linger."""
        rows = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self._linger
        while len(rows) < MAX_ITEMS:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    rows.append(await self._queue.get())
            except TimeoutError:
                break
        while len(rows) < MAX_ITEMS and not self._queue.empty():
            rows.append(self._queue.get_nowait())
        return rows

    async def _publish(self, sender: BatchSender, rows: list[Row]) -> None:
        now = time.time()
        msgs = [(receipt_topic(t, a), sign_receipts(Receipts(t, a, now, tuple(items)), self._key))
                for (t, a), items in group_by_agent(rows).items()]
        results = await asyncio.gather(*(sender.send(topic, data)
                                         for topic, data in msgs), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:  # resend all: an agent ignores a receipt for a batch it already forgot
            raise errors[0] if isinstance(errors[0], TransportError) else TransportError(
                f"receipt publish failed: {type(errors[0]).__name__}")
        self.metrics.messages.inc(len(msgs))
        for *_, o in rows:
            self.metrics.sent.labels(str(o)).inc()
