"""Batch ingest: verify, decrypt, dedupe, commit, and only then acknowledge.

One `IngestWorker` holds one broker session. Several workers (processes or
machines) share the load through a shared subscription
(``$share/<group>/privtel/v1/+/+/batches``). Each message goes through:

size and framing -> topic matches the signed header -> known agent and valid
signature -> agent bound to the tenant, tenant allowed in this region -> a
collector key with that id -> decrypt and decode (record ids unique) -> records
within the agent's sites and kinds -> created within the replay window ->
per-agent sequence window (in the store) -> sink commit -> PUBACK ->
`on_outcome` (the end-to-end receipt to the agent, `collector.receipts`).

Each refusal is final and acknowledged. A cause an operator can fix (a wrong
key, an unregistered agent, residency, a sequence jump, a site or kind the
agent is not bound to, the store refusing the batch for good) parks the batch
with its sealed bytes (`collector.parking`); garbage and forgeries are
quarantined as a digest. A store error that may pass (`StoreRetryableError`,
or anything not known to be permanent) leaves the batch unacknowledged.

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
next messages (`_check`) run on a thread pool sized to the cores
(`collector.ingest_pool`), handed back in arrival order, while the previous
batch commits in a worker thread, which spends most of its time waiting for
the database; the stateful
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
from dataclasses import dataclass, replace
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from collector.admission import Admission
from collector.ingest_pool import CheckAhead
from collector.parking import PARK_REASONS, PARKED_ENVELOPE_REASONS, UNAUTHENTICATED, Refused
from collector.recheck import Held, held_back, screen
from collector.sequence import DEFAULT_MAX_JUMP, MemorySequences, Sequences
from collector.store.errors import StorePermanentError
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
Park = Callable[[str, str, Header | None, bytes, str], Awaitable[None]]
OutcomeHook = Callable[[str, str, str, str], None]
"""(tenant, agent id, batch id, outcome: an `Outcome` value) once a batch reached a
final outcome the agent may be told of (stored after the commit, duplicate,
parked, quarantined): the end-to-end receipt's feed. Must not block or raise."""
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
        self.parked = Counter("privtel_batches_parked", "Batches parked with their sealed "
                              "bytes for an operator to fix and replay, by reason",
                              ["reason"], registry=registry)
        self.records_rejected = Counter("privtel_records_rejected", "Records of parked "
                                        "batches outside what their agent is bound to",
                                        ["reason"], registry=registry)
        for r in envelope.REASONS:
            self.rejected.labels(r)
        for r in PARK_REASONS:
            self.parked.labels(r)
        for r in ("site", "kind"):
            self.records_rejected.labels(r)


@dataclass(frozen=True, slots=True)
class _Checked:
    """A message after the stateless checks: its records, or the first failed check."""

    topic: str
    payload: bytes
    header: Header | None
    records: list[Record]
    error: EnvelopeError | Refused | None
    held: Held | None = None  # `recheck.held_back(records)`, worked out on the pool


class IngestWorker(Lifecycle):
    """Subscribes, checks, commits through `sink`, quarantines rejections; async context manager.

    `agent_tenants` (agent id -> tenant), when given, binds each agent to its
    tenant: a correctly signed batch claiming another tenant is `unknown_agent`;
    `admission` (`collector.admission`) says the same and more (residency,
    sites, kinds) and wins over it. `park(reason, topic, header, payload,
    detail)` keeps a batch refused for a fixable cause; without it such a
    batch is quarantined like garbage. `sequences` holds the per-agent window
    (`collector.sequence.StoreSequences` in the collector; in memory by
    default). `on_outcome` hears of every batch parked with an authenticated
    header. `check_threads` sizes the pool that checks the next batches
    (`collector.ingest_pool`; default one thread per core, 0 checks on the
    event loop).
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
                 admission: Admission | None = None, park: Park | None = None,
                 sequences: Sequences | None = None,
                 max_sequence_jump: int = DEFAULT_MAX_JUMP,
                 on_outcome: OutcomeHook | None = None,
                 protocol: str = "5", shared_group: str | None = None,
                 topic_filter: str = DEFAULT_TOPIC, client_id: str | None = None,
                 ca_file: Path | None = None, cert_file: Path | None = None,
                 key_file: Path | None = None, keepalive_s: int = 30, timeout_s: float = 10.0,
                 session_expiry_s: int = 7 * 86400,
                 max_batch_bytes: int = envelope.MAX_BATCH_BYTES,
                 max_body_bytes: int = envelope.MAX_BODY_BYTES,
                 replay_window_s: float = 8 * 86400.0, max_skew_s: float = 300.0,
                 seq_window: int = 10_000, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, check_threads: int | None = None) -> None:
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
        self._agent_keys, self._collector_keys = agent_keys, collector_keys
        self._admission = admission or Admission.from_tenants(agent_tenants)
        self._park, self._on_outcome = park, on_outcome
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
        self._replay_window, self._skew = replay_window_s, max_skew_s
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._sink_backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._sequences: Sequences = sequences or MemorySequences(seq_window, max_sequence_jump)
        self._check_threads = check_threads
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def update_keys(self, *, agent_keys: AgentKeys | None = None,
                    collector_keys: Mapping[str, CollectorPrivateKey] | None = None,
                    agent_tenants: Mapping[str, str] | None = None,
                    admission: Admission | None = None) -> None:
        """Swap key registries (agent added, collector key rotated) and the collector's own
        rules without reconnecting."""
        if admission is not None:
            self._admission = admission
        elif agent_tenants is not None:
            self._admission = replace(self._admission,
                                      agents=Admission.from_tenants(agent_tenants).agents)
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
        """Check the next messages on the pool while the previous one settles; settle
        and acknowledge one at a time, in arrival order."""
        ahead: CheckAhead[Delivery, _Checked] = CheckAhead(self._check_threads)

        async def read() -> None:
            try:
                async for d in deliveries:
                    await ahead.put(d, self._check, d.topic, d.payload)
                raise TransportError("the message stream ended")
            except Exception as e:  # handed to the settling loop, which raises it
                await ahead.fail(e)

        reader = asyncio.create_task(read(), name=f"privtel-ingest-read-{self._client_id}")
        try:
            while True:
                delivery, checked = await ahead.get()
                result = await self._settle_until_done(checked)
                delivery.ack()
                if (outcome := _SETTLED.get(result)) is not None:
                    self._tell(checked.topic, checked.header, outcome)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            ahead.close()

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
        """The stateless checks, decryption, decoding and the leak re-check's verdict:
        safe to run ahead of the commit of an earlier message, because nothing here
        reads or changes per-agent state. The batch is split and its header parsed
        once (`envelope.split`), for the topic check and the signature alike; its
        records are validated once, here, where they are opened."""
        self.metrics.received.inc()
        header: Header | None = None
        try:
            frame = envelope.split(payload, max_size=self._max_batch)
            header = frame.header
            if topic != header.topic:
                raise EnvelopeError("wrong_topic", f"topic does not match the header's "
                                    f"tenant/agent ({header.tenant}/{header.agent_id})")
            verified = envelope.verify(frame, self._agent_keys)
            self._admission.before_decrypt(header)
            records = envelope.open_verified(verified, self._collector_keys,
                                             max_body=self._max_body)
            self._admission.records(header, records)
        except (EnvelopeError, Refused) as e:
            return _Checked(topic, payload, header, [], e)
        return _Checked(topic, payload, header, records, None, held_back(records))

    async def replay(self, topic: str, payload: bytes, received_at: float) -> str:
        """A parked batch through the same checks, with freshness judged at the time it
        first arrived and without the sequence window (a parked batch is late by
        design and must not move the window); the store's (agent, batch) key keeps
        it exactly once. Raises `SinkFailed` like `handle`."""
        return await self._settle(self._check(topic, payload), replay_at=received_at)

    async def _settle(self, c: _Checked, replay_at: float | None = None) -> str:
        """The stateful checks and the commit, for one message at a time."""
        error, header = c.error, c.header
        if error is None and header is not None:
            try:
                envelope.check_fresh(header, now=replay_at, max_age_s=self._replay_window,
                                     max_skew_s=self._skew)
                if replay_at is None:
                    await self._sequence(self._sequences.check(header))
            except (EnvelopeError, Refused) as e:
                error = e
        if error is not None:
            if error.reason == "duplicate":
                self.metrics.rejected.labels("duplicate").inc()
                return "duplicate"
            return await self._refuse(error, c)
        assert header is not None  # no error means the header was opened
        try:
            # a raw identifier left: that record is quarantined
            c = await screen(c, self._quarantine, held=c.held)
            stored = await self._sink(header, c.records)
        except StorePermanentError as e:
            return await self._refuse(Refused("store_refused", e.why), c)
        except Exception as e:
            raise SinkFailed(type(e).__name__) from e
        if replay_at is None:
            await self._sequence(self._sequences.remember(header))
        if not stored:
            self.metrics.rejected.labels("duplicate").inc()
            log.info("duplicate batch from agent %s acknowledged, not stored", header.agent_id)
            return "duplicate"
        self.metrics.accepted.inc()
        self.metrics.records.inc(len(c.records))
        return "accepted"

    @staticmethod
    async def _sequence(step: Awaitable[None]) -> None:
        """A sequence-window call; a store failure in it is a sink failure (retried)."""
        try:
            await step
        except (EnvelopeError, Refused):
            raise
        except Exception as e:
            raise SinkFailed(f"sequence window: {type(e).__name__}") from e

    async def _refuse(self, e: EnvelopeError | Refused, c: _Checked) -> str:
        """Park what an operator can fix, quarantine the rest; either way the batch is
        settled and will be acknowledged."""
        header, reason = c.header, e.reason
        parkable = isinstance(e, Refused) or reason in PARKED_ENVELOPE_REASONS
        where = c.topic if header else "(unparsed)"
        if self._park is None or not parkable:
            log.warning("batch rejected on %s: %s", where, e)
            try:
                await self._quarantine(reason, c.topic, header, c.payload)
            except Exception as qe:
                raise SinkFailed(f"quarantine: {type(qe).__name__}") from qe
            self._count_refused(e)
            return reason
        log.warning("batch parked on %s: %s", where, e)
        try:
            await self._park(reason, c.topic, header, c.payload, e.detail)
        except Exception as pe:
            raise SinkFailed(f"park: {type(pe).__name__}") from pe
        self.metrics.parked.labels(reason).inc()
        self._count_refused(e)
        if header is not None and reason not in UNAUTHENTICATED and self._on_outcome:
            self._on_outcome(header.tenant, header.agent_id, header.batch_id, Outcome.PARKED)
        return reason


    def _count_refused(self, e: EnvelopeError | Refused) -> None:
        """Once the refusal is kept: a failed park or quarantine is retried, not counted."""
        self.metrics.rejected.labels(e.reason).inc()
        for what, n in (e.records if isinstance(e, Refused) else {}).items():
            self.metrics.records_rejected.labels(what).inc(n)


_SETTLED = {"accepted": Outcome.STORED, "duplicate": Outcome.DUPLICATE}


class SinkFailed(Exception):
    """The sink or quarantine raised: do not acknowledge, reconnect, get it again."""


__all__ = ["DEFAULT_TOPIC", "IngestError", "IngestMetrics", "IngestWorker", "OutcomeHook",
           "Quarantine", "Sink", "SinkFailed"]
