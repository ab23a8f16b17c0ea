"""Batch ingest: verify, decrypt, dedupe, commit, and only then acknowledge.

One `IngestWorker` holds one broker session. Several workers (processes or
machines) share the load through a shared subscription
(``$share/<group>/privtel/v1/+/+/batches``). Each message goes through:

size and framing -> topic matches the signed header -> known agent and valid
signature -> a collector key with that id -> decrypt and decode -> created
within the replay window -> per-agent sequence window -> sink commit -> PUBACK ->
`on_outcome` (the end-to-end receipt to the agent, `collector.receipts`).

The PUBACK is the broker's signal that the batch is ours, so it is sent only
after the sink (the store transaction) returned, or after a rejection was
quarantined. A worker killed in between never acknowledged: the broker keeps
the message in the worker's persistent session and delivers it again, and the
store's (agent id, batch id) key turns the second delivery into a duplicate
that is acknowledged without a second copy.

The broker connection is a `plumbing.transport` receiver chosen by the URL's
scheme (MQTT, acknowledgement after commit: `plumbing/mqtt.py`). When the sink
fails (a store outage) the worker stays connected and subscribed and retries
the same batch with backoff, logging once per outage: reconnecting would only
make the broker send the same batch again, and a crowd of workers doing so is
a reconnect storm.

Each worker runs two stages. The stateless checks and the decryption of the
next message (`_check`) run while the previous batch commits in a worker
thread, which spends most of its time waiting for the database; the stateful
part (replay window, sequence window, sink, PUBACK: `_settle`) stays strictly
sequential and in arrival order, so the sequence window is exactly what a
one-message-at-a-time worker would see, and a batch is acknowledged only
after its own commit. Throughput scales further by adding workers to the
share group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from pipelines import envelope
from pipelines.envelope import AgentKeys, EnvelopeError, Header
from pipelines.keys import CollectorPrivateKey
from pipelines.lifecycle import Lifecycle
from pipelines.receipt import Outcome
from pipelines.record import Record
from plumbing.backoff import Backoff
from plumbing.transport import (
    Delivery,
    ReceiverOptions,
    ReceiveTransport,
    TlsFiles,
    TransportError,
    open_receiver,
)

log = logging.getLogger(__name__)

Sink = Callable[[Header, list[Record]], Awaitable[bool]]
Quarantine = Callable[[str, str, Header | None, bytes], Awaitable[None]]
# (tenant, agent id, batch id, outcome) once a batch reached a final outcome (stored
# after the commit, duplicate, quarantined): the end-to-end receipt's feed. Must not
# block or raise.
OutcomeListener = Callable[[str, str, str, Outcome], None]
DEFAULT_TOPIC = "privtel/v1/+/+/batches"


class IngestError(RuntimeError):
    """The worker was misconfigured or used out of order; the message says which argument."""


class IngestMetrics:
    """Collector self-metrics; share one instance between workers on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter("privtel_batches_received", "Batches received from the broker",
                                registry=registry)
        self.accepted = Counter("privtel_batches_accepted", "Batches verified and stored",
                                registry=registry)
        self.rejected = Counter("privtel_batches_rejected", "Batches not stored, by reason "
                                "(duplicates are acknowledged, not quarantined)", ["reason"],
                                registry=registry)
        self.records = Counter("privtel_records_accepted", "Records stored from accepted "
                               "batches", registry=registry)
        self.connected = Gauge("privtel_ingest_connected", "1 while the worker is connected",
                               registry=registry)
        self.reconnects = Counter("privtel_ingest_reconnects", "Broker connections made after "
                                  "the first", registry=registry)
        self.sink_retries = Counter("privtel_ingest_sink_retries", "Batches offered to the "
                                    "store again after it failed (the worker stays "
                                    "subscribed)", registry=registry)
        self.store_outages = Counter("privtel_ingest_store_outages", "Runs of store failures "
                                     "that paused ingest", registry=registry)
        for r in envelope.REASONS:
            self.rejected.labels(r)


@dataclass(frozen=True, slots=True)
class _Checked:
    """A message after the stateless checks: its records, or the first failed check."""

    topic: str
    payload: bytes
    header: Header | None
    records: list[Record]
    error: EnvelopeError | None


@dataclass
class _SeqWindow:
    highest: int = -1
    seen: dict[int, str] = field(default_factory=dict)


class IngestWorker(Lifecycle):
    """Subscribes, checks, commits through `sink`, quarantines rejections; async context manager.

    `agent_tenants` (agent id -> tenant), when given, binds each agent to its
    tenant: a correctly signed batch claiming another tenant is `unknown_agent`.
    `sink(header, records)` returns True when stored, False when the batch was
    already stored (a duplicate). `quarantine(reason, topic, header, payload)`
    keeps a rejected batch; `header` is None when none could be parsed, and is
    unauthenticated for rejections before the signature check. If either
    raises, the message is left unacknowledged and offered again after a backoff
    while the worker stays subscribed.
    """

    def __init__(self, *, broker_url: str, sink: Sink, quarantine: Quarantine,
                 agent_keys: AgentKeys, collector_keys: Mapping[str, CollectorPrivateKey],
                 registry: CollectorRegistry | None = None, metrics: IngestMetrics | None = None,
                 agent_tenants: Mapping[str, str] | None = None,
                 protocol: str = "5", shared_group: str | None = None,
                 topic_filter: str = DEFAULT_TOPIC, client_id: str | None = None,
                 ca_file: Path | None = None, cert_file: Path | None = None,
                 key_file: Path | None = None, keepalive_s: int = 30, timeout_s: float = 10.0,
                 session_expiry_s: int = 7 * 86400,
                 max_batch_bytes: int = envelope.MAX_BATCH_BYTES,
                 max_body_bytes: int = envelope.MAX_BODY_BYTES,
                 replay_window_s: float = 8 * 86400.0, max_skew_s: float = 300.0,
                 seq_window: int = 10_000, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0,
                 on_outcome: OutcomeListener | None = None) -> None:
        if shared_group is not None and (not shared_group or any(c in shared_group
                                                                  for c in "/+#")):
            raise IngestError("shared_group must be a non-empty name without '/', '+' or '#'")
        if (registry is None) == (metrics is None):
            raise IngestError("pass exactly one of registry or metrics")
        for name, v in (("max_batch_bytes", max_batch_bytes), ("max_body_bytes", max_body_bytes),
                        ("replay_window_s", replay_window_s), ("seq_window", seq_window),
                        ("timeout_s", timeout_s)):
            if v <= 0:
                raise IngestError(f"{name} must be positive, not {v}")
        self._sink, self._quarantine = sink, self._telling(quarantine)
        self._on_outcome = on_outcome
        self._agent_keys, self._collector_keys = agent_keys, collector_keys
        self._agent_tenants = agent_tenants
        self.metrics = metrics or IngestMetrics(registry)  # type: ignore[arg-type]
        self.subscription = (f"$share/{shared_group}/{topic_filter}" if shared_group
                             else topic_filter)
        self._client_id = client_id or f"privtel-ingest-{socket.gethostname()}"
        try:
            self._transport = open_receiver(broker_url, ReceiverOptions(
                client_id=self._client_id, subscription=self.subscription, protocol=protocol,
                keepalive_s=keepalive_s, timeout_s=timeout_s,
                tls=TlsFiles(ca_file, cert_file, key_file), session_expiry_s=session_expiry_s))
        except ValueError as e:
            raise IngestError(f"broker_url or protocol: {e}") from None
        self._max_batch, self._max_body = max_batch_bytes, max_body_bytes
        self._replay_window, self._skew, self._seq_window = replay_window_s, max_skew_s, seq_window
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._sink_backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._seqs: dict[str, _SeqWindow] = {}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def update_keys(self, *, agent_keys: AgentKeys | None = None,
                    collector_keys: Mapping[str, CollectorPrivateKey] | None = None,
                    agent_tenants: Mapping[str, str] | None = None) -> None:
        """Swap key registries (agent added, collector key rotated) without reconnecting."""
        if agent_tenants is not None:
            self._agent_tenants = agent_tenants
        if agent_keys is not None:
            self._agent_keys = agent_keys
        if collector_keys is not None:
            self._collector_keys = collector_keys

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"privtel-ingest-{self._client_id}")

    async def _close(self) -> None:
        """Disconnect; anything received and not yet committed stays unacknowledged."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def transport(self) -> ReceiveTransport:
        """The broker connection; `transport.sender()` publishes on it (receipts)."""
        return self._transport

    async def _run(self) -> None:
        connected_before = False
        while True:
            try:
                async with self._transport.session() as deliveries:
                    if connected_before:
                        self.metrics.reconnects.inc()
                    connected_before = True
                    self.metrics.connected.set(1)
                    self.subscribed.set()
                    self._backoff.reset()
                    log.info("ingest subscribed to %s", self.subscription)
                    await self._pump(deliveries)
            except TransportError as e:
                delay = self._backoff.next()
                log.warning("ingest connection failed or lost (%s); retrying in %.1f s",
                            e, delay)
            except (OSError, ValueError) as e:
                delay = self._backoff.next()
                log.error("ingest cannot connect (%s: %s); retrying in %.1f s",
                          type(e).__name__, e, delay)
            finally:
                self.metrics.connected.set(0)
            await asyncio.sleep(delay)

    async def _pump(self, deliveries: AsyncIterator[Delivery]) -> None:
        """Check the next message while the previous one settles; settle and
        acknowledge one at a time, in arrival order."""
        queue: asyncio.Queue[tuple[Delivery, _Checked] | Exception] = asyncio.Queue(1)

        async def read() -> None:
            try:
                async for d in deliveries:
                    await queue.put((d, self._check(d.topic, d.payload)))
                raise TransportError("the message stream ended")
            except Exception as e:  # handed to the settling loop, which raises it
                await queue.put(e)

        reader = asyncio.create_task(read(), name=f"privtel-ingest-read-{self._client_id}")
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                delivery, checked = item
                result = await self._settle_until_done(checked)
                delivery.ack()
                if (outcome := _SETTLED.get(result)) is not None:
                    self._tell(checked.topic, checked.header, outcome)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    def _tell(self, topic: str, h: Header | None, outcome: Outcome) -> None:
        """Feed `on_outcome`; only for a batch whose header names the agent that the
        broker let publish on this topic, so no one earns a receipt for another agent."""
        if self._on_outcome is None or h is None or h.topic != topic:
            return
        self._on_outcome(h.tenant, h.agent_id, h.batch_id, outcome)

    def _telling(self, quarantine: Quarantine) -> Quarantine:
        """`quarantine`, and once it kept the batch, the quarantined outcome."""
        async def kept(reason: str, topic: str, header: Header | None, payload: bytes) -> None:
            await quarantine(reason, topic, header, payload)
            self._tell(topic, header, Outcome.QUARANTINED)
        return kept

    async def _settle_until_done(self, checked: _Checked) -> str:
        """Settle one batch, retrying a failing sink with backoff while the connection
        stays up: one warning when a store outage begins, one info line when it ends."""
        failed_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                outcome = await self._settle(checked)
            except SinkFailed as e:
                delay = self._sink_backoff.next()
                if failed_since is None:
                    failed_since = loop.time()
                    self.metrics.store_outages.inc()
                    log.warning("store failed (%s); ingest paused, still subscribed, retrying "
                                "the batch with backoff (at most %.0f s apart)", e,
                                self._sink_backoff.cap_s)
                self.metrics.sink_retries.inc()
                await asyncio.sleep(delay)
                continue
            if failed_since is not None:
                self._sink_backoff.reset()
                log.info("store back after %.1f s; ingest resumed", loop.time() - failed_since)
            return outcome

    async def handle(self, topic: str, payload: bytes) -> str:
        """Process one message: 'accepted', or the reason it was not stored.

        Raises `SinkFailed` when the sink or quarantine raised, meaning the
        message must not be acknowledged. The worker's own loop does not come
        through here: it checks the next message ahead of time and settles it
        with retries (`_settle_until_done`).
        """
        return await self._settle(self._check(topic, payload))

    def _check(self, topic: str, payload: bytes) -> _Checked:
        """The stateless checks, decryption and decoding: safe to run ahead of the
        commit of an earlier message, because nothing here reads or changes
        per-agent state."""
        self.metrics.received.inc()
        header: Header | None = None
        try:
            header = envelope.peek_header(payload, max_size=self._max_batch)
            if topic != header.topic:
                raise EnvelopeError("wrong_topic", f"topic does not match the header's "
                                    f"tenant/agent ({header.tenant}/{header.agent_id})")
            header, records = envelope.open_sealed(
                payload, self._agent_keys, self._collector_keys, max_size=self._max_batch,
                max_body=self._max_body)
            if (self._agent_tenants is not None
                    and self._agent_tenants.get(header.agent_id) != header.tenant):
                raise EnvelopeError("unknown_agent", f"agent {header.agent_id!r} is not "
                                    f"registered for tenant {header.tenant!r}")
        except EnvelopeError as e:
            return _Checked(topic, payload, header, [], e)
        return _Checked(topic, payload, header, records, None)

    async def _settle(self, c: _Checked) -> str:
        """The stateful checks and the commit, for one message at a time."""
        error, header = c.error, c.header
        if error is None and header is not None:
            try:
                envelope.check_fresh(header, max_age_s=self._replay_window,
                                     max_skew_s=self._skew)
                self._check_sequence(header)
            except EnvelopeError as e:
                error = e
        if error is not None:
            if error.reason == "duplicate":
                self.metrics.rejected.labels("duplicate").inc()
                return "duplicate"
            await self._reject(error, c.topic, header, c.payload)
            return error.reason
        assert header is not None  # no error means the header was opened
        try:
            stored = await self._sink(header, c.records)
        except Exception as e:
            raise SinkFailed(type(e).__name__) from e
        self._remember(header)
        if not stored:
            self.metrics.rejected.labels("duplicate").inc()
            log.info("duplicate batch from agent %s acknowledged, not stored", header.agent_id)
            return "duplicate"
        self.metrics.accepted.inc()
        self.metrics.records.inc(len(c.records))
        return "accepted"

    async def _reject(self, e: EnvelopeError, topic: str, header: Header | None,
                      payload: bytes) -> None:
        log.warning("batch rejected on %s: %s", topic if header else "(unparsed)", e)
        try:
            await self._quarantine(e.reason, topic, header, payload)
        except Exception as qe:
            raise SinkFailed(f"quarantine: {type(qe).__name__}") from qe
        self.metrics.rejected.labels(e.reason).inc()

    def _check_sequence(self, h: Header) -> None:
        w = self._seqs.get(h.agent_id)
        if w is None:
            return
        if h.seq <= w.highest - self._seq_window:
            raise EnvelopeError("replayed", f"sequence {h.seq} is behind the window "
                                f"(highest seen {w.highest})")
        seen = w.seen.get(h.seq)
        if seen == h.batch_id:
            raise EnvelopeError("duplicate", f"batch {h.batch_id} already committed")
        if seen is not None:
            raise EnvelopeError("replayed", f"sequence {h.seq} was already used by another "
                                "batch of this agent")

    def _remember(self, h: Header) -> None:
        w = self._seqs.setdefault(h.agent_id, _SeqWindow())
        w.seen[h.seq] = h.batch_id
        if h.seq > w.highest:
            w.highest = h.seq
            floor = w.highest - self._seq_window
            if len(w.seen) > 2 * self._seq_window:
                w.seen = {s: b for s, b in w.seen.items() if s > floor}


_SETTLED = {"accepted": Outcome.STORED, "duplicate": Outcome.DUPLICATE}


class SinkFailed(Exception):
    """The sink or quarantine raised: do not acknowledge, reconnect, get it again."""


__all__ = ["DEFAULT_TOPIC", "IngestError", "IngestMetrics", "IngestWorker", "OutcomeListener",
           "Quarantine", "Sink", "SinkFailed"]
