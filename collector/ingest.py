"""MQTT ingest: verify, decrypt, dedupe, commit, and only then acknowledge.

One `IngestWorker` holds one MQTT session. Several workers (processes or
machines) share the load through a shared subscription
(``$share/<group>/privtel/v1/+/+/batches``). Each message goes through:

size and framing -> topic matches the signed header -> known agent and valid
signature -> a collector key with that id -> decrypt and decode -> created
within the replay window -> per-agent sequence window -> sink commit -> PUBACK.

The PUBACK is the broker's signal that the batch is ours, so it is sent only
after the sink (the store transaction) returned, or after a rejection was
quarantined. A worker killed in between never acknowledged: the broker keeps
the message in the worker's persistent session and delivers it again, and the
store's (agent id, batch id) key turns the second delivery into a duplicate
that is acknowledged without a second copy.

Why a subclass: aiomqtt 2.5 queues each message for the application and lets
paho-mqtt acknowledge it on receipt, with no switch to defer that
(aiomqtt issue #345; its PR #346 is unmerged). paho-mqtt 2.x itself supports
application acknowledgement (``manual_ack_set`` / ``ack``), so
`_AckAfterCommitClient` turns that on for the wrapped paho client and exposes
`ack(message)`: the one place this module reaches below aiomqtt's public API.
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
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipelines import envelope
from pipelines.config import require_private
from pipelines.envelope import AgentKeys, EnvelopeError, Header
from pipelines.keys import CollectorPrivateKey
from pipelines.record import Record

log = logging.getLogger(__name__)

Sink = Callable[[Header, list[Record]], Awaitable[bool]]
Quarantine = Callable[[str, str, Header | None, bytes], Awaitable[None]]
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
        for r in envelope.REASONS:
            self.rejected.labels(r)


class _AckAfterCommitClient(aiomqtt.Client):
    """aiomqtt client whose QoS 1 messages are acknowledged by `ack`, not on receipt."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client.manual_ack_set(True)

    def ack(self, message: aiomqtt.Message) -> None:
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)


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


def tls_context(ca_file: Path | None, cert_file: Path | None,
                 key_file: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                     cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        if key_file is not None:
            require_private(str(key_file), key_file.stat().st_mode)
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx


class IngestWorker:
    """Subscribes, checks, commits through `sink`, quarantines rejections; async context manager.

    `agent_tenants` (agent id -> tenant), when given, binds each agent to its
    tenant: a correctly signed batch claiming another tenant is `unknown_agent`.
    `sink(header, records)` returns True when stored, False when the batch was
    already stored (a duplicate). `quarantine(reason, topic, header, payload)`
    keeps a rejected batch; `header` is None when none could be parsed, and is
    unauthenticated for rejections before the signature check. If either
    raises, the message is left unacknowledged and the worker reconnects so the
    broker delivers it again.
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
                 backoff_max_s: float = 30.0) -> None:
        u = urlsplit(broker_url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise IngestError(f"broker_url must be mqtt://host[:port] or mqtts://host[:port], "
                              f"not {broker_url!r}")
        if protocol not in ("5", "3.1.1"):
            raise IngestError(f"protocol must be '5' or '3.1.1', not {protocol!r}")
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
        self._host = u.hostname
        self._tls = u.scheme == "mqtts"
        self._port = u.port or (8883 if self._tls else 1883)
        self._tls_ctx = tls_context(ca_file, cert_file, key_file) if self._tls else None
        self._sink, self._quarantine = sink, quarantine
        self._agent_keys, self._collector_keys = agent_keys, collector_keys
        self._agent_tenants = agent_tenants
        self.metrics = metrics or IngestMetrics(registry)  # type: ignore[arg-type]
        self._protocol = protocol
        self.subscription = (f"$share/{shared_group}/{topic_filter}" if shared_group
                             else topic_filter)
        self._client_id = client_id or f"privtel-ingest-{socket.gethostname()}"
        self._keepalive, self._timeout, self._expiry = keepalive_s, timeout_s, session_expiry_s
        self._max_batch, self._max_body = max_batch_bytes, max_body_bytes
        self._replay_window, self._skew, self._seq_window = replay_window_s, max_skew_s, seq_window
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._seqs: dict[str, _SeqWindow] = {}
        self._ahead: _Checked | None = None
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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        if self._task is not None:
            raise IngestError("an ingest worker starts once")
        self._task = asyncio.create_task(self._run(), name=f"privtel-ingest-{self._client_id}")

    async def close(self) -> None:
        """Disconnect; anything received and not yet committed stays unacknowledged."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _client(self) -> _AckAfterCommitClient:
        v5 = self._protocol == "5"
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self._expiry
        return _AckAfterCommitClient(
            self._host, self._port, identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else False,
            clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=props,
            keepalive=self._keepalive, timeout=self._timeout, tls_context=self._tls_ctx,
            logger=logging.getLogger("privtel.mqtt.ingest"))

    async def _run(self) -> None:
        lo, hi = self._backoff
        delay = lo
        while True:
            try:
                async with self._client() as client:
                    await client.subscribe(self.subscription, qos=1, timeout=self._timeout)
                    self.metrics.connected.set(1)
                    self.subscribed.set()
                    delay = lo
                    log.info("ingest subscribed to %s", self.subscription)
                    await self._pump(client)
            except aiomqtt.MqttError as e:
                log.warning("ingest connection failed or lost (%s); retrying in %.1f s",
                            type(e).__name__, delay)
            except SinkFailed as e:
                log.warning("store failed (%s); reconnecting so the batch is delivered again",
                            e)
            except (OSError, ValueError) as e:
                log.error("ingest cannot connect (%s: %s); retrying in %.1f s",
                          type(e).__name__, e, delay)
            finally:
                self.metrics.connected.set(0)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, hi)

    async def _pump(self, client: _AckAfterCommitClient) -> None:
        """Check the next message while the previous one settles; settle and
        acknowledge one at a time, in arrival order."""
        queue: asyncio.Queue[tuple[aiomqtt.Message, _Checked] | Exception] = asyncio.Queue(1)

        async def read() -> None:
            try:
                async for message in client.messages:
                    await queue.put((message, self._check(str(message.topic),
                                                          bytes(message.payload))))
                raise aiomqtt.MqttError("the broker closed the message stream")
            except Exception as e:  # handed to the settling loop, which raises it
                await queue.put(e)

        reader = asyncio.create_task(read(), name=f"privtel-ingest-read-{self._client_id}")
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                message, checked = item
                self._ahead = checked
                await self.handle(checked.topic, checked.payload)
                client.ack(message)
        finally:
            self._ahead = None
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def handle(self, topic: str, payload: bytes) -> str:
        """Process one message: 'accepted', or the reason it was not stored.

        Raises `SinkFailed` when the sink or quarantine
        raised, meaning the message must not be acknowledged. Inside the
        worker's own loop the stateless checks of this very message (same
        payload object) were already made ahead of time and are not repeated.
        """
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead.payload is not payload or ahead.topic != topic:
            ahead = self._check(topic, payload)
        return await self._settle(ahead)

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


class SinkFailed(Exception):
    """The sink or quarantine raised: do not acknowledge, reconnect, get it again."""


__all__ = ["DEFAULT_TOPIC", "IngestError", "IngestMetrics", "IngestWorker", "Quarantine", "Sink",
           "SinkFailed"]
