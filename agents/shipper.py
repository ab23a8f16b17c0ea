"""The agent's outbound half: pseudonymised records in, sealed batches out over MQTT.

Every hand-over is durable before it is acknowledged: `submit` returns once
the records are committed to the spool. Submits that arrive together (many
pollers, the syslog receiver) are committed together, one transaction and one
fsync per group (`[spool] linger_s`, `group_max_records`), and a failed group
commit raises in every caller of the group. The batcher seals due records into
batches on a thread of its own (so sealing neither blocks the event loop nor
waits behind an fsync) and commits many batches in the transaction that removes
their records. With end-to-end acknowledgements on
(`[keys] collector_receipt_key`), the broker's PUBACK only frees the in-flight
window: a batch leaves the spool when the collector's signed receipt for it
arrives on the agent's receipt topic (`pipelines.receipt`), and a batch with
no receipt `[spool] receipt_timeout_s` after it was published is published
again, so a broker that loses its state loses nothing. Without the key the
PUBACK frees the batch (the broker is trusted to keep it). A SIGKILL at any
moment costs at most a re-publication, which the collector recognises by
batch id.

The transport is whatever `plumbing.transport` registers for the broker URL's
scheme (MQTT today); the same session carries batches out and receipts in.
Reconnects back off with full jitter inside the cap (`plumbing.backoff`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client import CollectorRegistry, Counter, Gauge

from agents.config import AgentConfig, MqttConfig
from agents.spool import Pending, Sealed, Spool, key_id_of
from pipelines import keys
from pipelines.config import ConfigError
from pipelines.envelope import EnvelopeError, Header, seal_body, topic_for
from pipelines.lifecycle import Lifecycle
from pipelines.receipt import Outcome, ReceiptError, open_receipts, receipt_topic
from pipelines.record import Record, encode_one, join_encoded, new_id
from plumbing.backoff import Backoff
from plumbing.files import read_private
from plumbing.transport import (
    BatchSender,
    Incoming,
    SenderOptions,
    TlsFiles,
    TransportError,
    open_sender,
)

log = logging.getLogger(__name__)

_ROUND_RECORDS = 50_000  # records one sealing round takes (whole batches, at least one)
_SPOOL_THREADS = 4
_GAUGE_EVERY_S = 0.25  # the spool gauges are read at most this often while busy

_Row = tuple[bytes, str | None]


class ShipperError(RuntimeError):
    """The shipper was used out of order (submit before start or after close)."""


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.submitted = Counter("privtel_agent_records_submitted", "Records accepted into the "
                                 "spool", registry=r)
        self.sealed = Counter("privtel_agent_batches_sealed", "Batches sealed", registry=r)
        self.published = Counter("privtel_agent_batches_published", "Batches acknowledged by "
                                 "the broker (PUBACK)", registry=r)
        self.failures = Counter("privtel_agent_publish_failures", "Failed publish attempts and "
                                "connection losses", registry=r)
        self.reconnects = Counter("privtel_agent_reconnects", "Connections made after the "
                                  "first", registry=r)
        self.dropped_batches = Counter("privtel_agent_spool_dropped_batches", "Batches dropped "
                                       "because the spool was over its size or age bound",
                                       registry=r)
        self.dropped_records = Counter("privtel_agent_records_dropped", "Records dropped",
                                       ["reason"], registry=r)
        self.depth = Gauge("privtel_agent_spool_batches", "Batches waiting for a PUBACK",
                           registry=r)
        self.bytes = Gauge("privtel_agent_spool_bytes", "Bytes of sealed batches in the spool",
                           registry=r)
        self.pending = Gauge("privtel_agent_spool_pending_records", "Records waiting to be "
                             "sealed", registry=r)
        self.oldest = Gauge("privtel_agent_spool_oldest_age_seconds", "Age of the oldest "
                            "unacknowledged batch", registry=r)
        self.connected = Gauge("privtel_agent_mqtt_connected", "1 while connected to the "
                               "broker", registry=r)
        self.unreceipted = Gauge("privtel_agent_unreceipted_batches", "Batches the broker "
                                 "acknowledged and the collector has not receipted yet",
                                 registry=r)
        self.unreceipted_age = Gauge("privtel_agent_unreceipted_oldest_age_seconds", "Time "
                                     "since the oldest unreceipted batch was published",
                                     registry=r)
        self.receipts = Counter("privtel_agent_receipts_received", "Batch outcomes received "
                                "in verified collector receipts", ["outcome"], registry=r)
        self.receipts_rejected = Counter("privtel_agent_receipts_rejected", "Receipt messages "
                                         "ignored (bad signature, malformed, another agent's)",
                                         registry=r)
        self.resent = Counter("privtel_agent_batches_resent", "Batches published again "
                              "because no receipt came within receipt_timeout_s", registry=r)
        for o in Outcome:
            self.receipts.labels(str(o))


class Shipper(Lifecycle):
    """Batches, seals, spools and publishes; a `Lifecycle` component.

    ``async with Shipper(cfg, registry=reg) as s: await s.submit(records)``.
    Keys come from the files named in `cfg.keys` unless given explicitly.
    `flush_on_close_s` > 0 makes `close` first wait that long for the broker to
    acknowledge everything pending (the agent's orderly shutdown). Receipts are
    verified with `collector_receipt_key` or the file `cfg.keys.collector_receipt_key`.
    """

    def __init__(self, config: AgentConfig, *, registry: CollectorRegistry,
                 signing_key: ed25519.Ed25519PrivateKey | None = None,
                 collector_public_key: keys.CollectorPublicKey | None = None,
                 pseudonym_key_ids: Sequence[str] = (),
                 collector_receipt_key: ed25519.Ed25519PublicKey | None = None,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 flush_on_close_s: float = 0.0,
                 listeners: Mapping[str, Callable[[bytes], object]] | None = None) -> None:
        """`listeners`: other topics this agent reads (its tenant's suppression list), by
        handler; they ride on the publishing session, since the broker makes the
        certificate identity the client id and a second connection would take it over."""
        self.config = config
        self._listeners = dict(listeners or {})
        self.spool_config = config.spool
        phrase = config.keys.passphrase_file
        self._signing_key = signing_key or keys.load_signing_key(
            read_private(config.keys.signing_key),
            None if phrase is None else keys.parse_passphrase(read_private(phrase)))
        self._collector_key = collector_public_key or keys.load_collector_public_key(
            config.keys.collector_public_key.read_bytes())
        if self._collector_key.suite != config.suite:
            raise ConfigError(config.file, "agent.suite", f"is {config.suite} but the collector "
                              f"public key is for {self._collector_key.suite}")
        self._pkids = tuple(pseudonym_key_ids)
        self._receipt_key = collector_receipt_key
        if self._receipt_key is None and config.keys.collector_receipt_key is not None:
            try:
                self._receipt_key = keys.load_verify_key(
                    config.keys.collector_receipt_key.read_bytes())
            except keys.KeyFormatError as e:
                raise ConfigError(config.file, "keys.collector_receipt_key", str(e)) from None
        self.receipt_topic = receipt_topic(config.tenant, config.agent_id)
        try:
            self._transport = open_sender(config.mqtt.url, self._sender_options(config.mqtt))
        except ValueError as e:
            raise ConfigError(config.file, "mqtt.url", str(e)) from None
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._flush_on_close_s = flush_on_close_s
        self.topic = topic_for(config.tenant, config.agent_id)
        self.metrics = _Metrics(registry)
        self._executor: ThreadPoolExecutor | None = None
        self._sealer: ThreadPoolExecutor | None = None
        self._group: list[tuple[list[_Row], asyncio.Future[None]]] = []
        self._group_records = 0
        self._group_concurrent = False  # the last group had several callers: linger
        self._wake_committer = asyncio.Event()
        self._group_full = asyncio.Event()
        self._gauges_at = 0.0
        self._sealing = asyncio.Lock()
        self._spool: Spool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_batcher = asyncio.Event()
        self._wake_publisher = asyncio.Event()
        self._freed = asyncio.Event()  # batches left the spool (PUBACK or receipt): for flush
        self._closed = False
        self._last_receipt = self._next_probe = 0.0

    def _sender_options(self, mq: MqttConfig) -> SenderOptions:
        return SenderOptions(
            client_id=mq.client_id or f"privtel-agent-{self.config.agent_id}",
            protocol=mq.protocol, keepalive_s=mq.keepalive_s, timeout_s=mq.timeout_s,
            tls=TlsFiles(mq.ca_file, mq.cert_file, mq.key_file),
            inflight=self.spool_config.inflight,
            listen=((() if self._receipt_key is None else (self.receipt_topic,))
                    + tuple(self._listeners)))

    @property
    def receipts_on(self) -> bool:
        """End-to-end acknowledgements: batches leave the spool on the collector's receipt."""
        return self._receipt_key is not None

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            raise ShipperError("the shipper is not started; use `async with Shipper(...)`")
        return self._spool

    def set_collector_key(self, key: keys.CollectorPublicKey) -> None:
        """Seal new batches to a rotated collector key; spooled batches keep their old one."""
        self._collector_key = key

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def _start(self) -> None:
        # several threads: writes queue for the spool's group commit while one commits,
        # and reads (its own connection) never wait behind an fsync
        self._executor = ThreadPoolExecutor(_SPOOL_THREADS, thread_name_prefix="privtel-spool")
        self._sealer = ThreadPoolExecutor(1, thread_name_prefix="privtel-seal")
        path = self.spool_config.path or self.config.state_dir / "spool.db"
        sc = self.spool_config
        self._spool = await self._run(lambda: Spool(
            path, max_bytes=sc.max_bytes, max_age_s=sc.max_age_s, on_drop=self._on_drop))
        await self._run(self.spool.enforce_bounds)
        self._last_receipt = time.time()
        if not self.receipts_on:
            log.warning("end-to-end acknowledgements are off ([keys] collector_receipt_key is "
                        "not set): a batch leaves the spool on the broker's PUBACK, so a broker "
                        "that loses its state loses the batches it held")
        await self._refresh_gauges()
        self._tasks = [asyncio.create_task(self._committer(), name="privtel-committer"),
                       asyncio.create_task(self._batcher(), name="privtel-batcher"),
                       asyncio.create_task(self._publisher(), name="privtel-publisher")]

    async def _close(self) -> None:
        """Stop; pending records and unacknowledged batches stay in the spool for next time."""
        if self._flush_on_close_s > 0 and self._spool is not None:
            log.info("stopping: flushing the spool (up to %.0f s)", self._flush_on_close_s)
            try:
                if not await self.flush(self._flush_on_close_s):
                    log.warning("broker did not acknowledge everything before shutdown; "
                                "the rest stays in the spool for the next start")
            except Exception as e:
                log.error("flush before shutdown failed (%s); the spool keeps it all",
                          type(e).__name__)
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        while self._group and self._spool is not None:
            # submits that arrived as the committer stopped: store them, do not drop them
            await self._commit_group()
        if self._spool is not None:
            await self._run(self._spool.close)
        for ex in (self._sealer, self._executor):
            if ex is not None:
                ex.shutdown(wait=True)

    def _on_drop(self, batches: int, records: int, why: str) -> None:
        self.metrics.dropped_batches.inc(batches)
        self.metrics.dropped_records.labels("spool_full" if "bytes" in why else "too_old").inc(
            records)

    async def submit(self, records: Sequence[Record]) -> None:
        """Durably accept records (already pseudonymised) for shipping.

        Returns once they are committed to the spool, in one transaction with
        whatever other callers submitted meanwhile; if that commit fails, every
        caller of the group gets its exception. Each record is encoded here, once:
        the spool keeps the JSON and batches are joined from it. This is where the
        agent binds its tenant (the one its config names): a record of any other
        tenant is refused here, and nothing later on the agent checks again."""
        if self._closed or self._spool is None:
            raise ShipperError("submit on a shipper that is not running")
        if not records:
            return
        tenant, rows = self.config.tenant, []
        for r in records:
            if r.tenant != tenant:
                raise ValueError(f"record tenant {r.tenant!r} is not this agent's tenant "
                                 f"{tenant!r}")
            rows.append((encode_one(r), key_id_of(r)))
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._group.append((rows, stored))
        self._group_records += len(rows)
        if self._group_records >= self.spool_config.group_max_records:
            self._group_full.set()
        self._wake_committer.set()
        await stored
        self.metrics.submitted.inc(len(rows))

    async def _committer(self) -> None:
        """Group commit: whatever was submitted while the previous commit ran goes into
        the next transaction. When the last group had several callers (pollers are
        submitting at the same time) it also waits up to `linger_s` for more, unless
        `group_max_records` are already waiting; a lone caller never waits."""
        sc = self.spool_config
        while True:
            await self._wake_committer.wait()
            self._wake_committer.clear()
            if not self._group:
                continue
            if (sc.linger_s > 0 and self._group_concurrent
                    and self._group_records < sc.group_max_records):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sc.linger_s):
                        await self._group_full.wait()
            await self._commit_group()
            if self._group:
                self._wake_committer.set()

    async def _commit_group(self) -> None:
        """Commit the waiting submits (whole ones, up to `group_max_records` unless one
        alone is larger) in one transaction and settle every caller's future."""
        limit, n, count = self.spool_config.group_max_records, 0, 0
        for rows, _ in self._group:
            if n and count + len(rows) > limit:
                break
            n, count = n + 1, count + len(rows)
        group, self._group = self._group[:n], self._group[n:]
        self._group_records -= count
        if self._group_records < limit:
            self._group_full.clear()
        self._group_concurrent = n > 1
        rows = [row for rs, _ in group for row in rs]
        commit = asyncio.ensure_future(self._run(self.spool.add, rows))
        try:
            await asyncio.wait([commit])  # its failure is for the callers, below
        finally:
            if not commit.done():
                # stopping: the commit runs to its end in the spool thread all the same,
                # and its callers must learn how it ended, not that the shipper stopped
                await asyncio.wait([commit])
            err = commit.exception()
            for _, stored in group:
                if stored.done():
                    continue  # the caller gave up waiting (cancelled)
                if err is None:
                    stored.set_result(None)
                else:
                    stored.set_exception(err)
        if err is None:
            self._wake_batcher.set()
        else:
            log.error("spool commit of %d records from %d submits failed: %s", len(rows),
                      len(group), type(err).__name__)

    async def flush(self, timeout: float) -> bool:
        """Seal everything pending and wait until every batch is acknowledged (receipted by
        the collector when receipts are on, else PUBACKed); True if it was."""
        deadline = time.monotonic() + timeout
        await self._seal_all(force=True)
        while time.monotonic() < deadline:
            st = await self._run(self.spool.stats)
            if st.batches == 0 and st.pending_records == 0:
                await self._refresh_gauges()  # the publisher may not have got to it yet
                return True
            self._wake_publisher.set()
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self._freed.wait()
        return False

    def _key_ids(self, pkids: list[str | None]) -> tuple[str, ...]:
        """The key ids that made this batch's pseudonyms, as the spool kept them off the
        records: a batch sealed across a key rotation names both epochs. Records
        without a `pkid` fall back to the ids the shipper was given."""
        found = {p for p in pkids if p is not None}
        if not found or None in pkids:
            found.update(self._pkids)
        return tuple(sorted(found))

    def _seal_one(self, seq: int, data: list[bytes], pkids: list[str | None]) -> Sealed:
        h = Header(tenant=self.config.tenant, agent_id=self.config.agent_id, batch_id=new_id(),
                   seq=seq, created=time.time(), pseudonym_key_ids=self._key_ids(pkids))
        sealed = seal_body(h, join_encoded(data), len(data), self._collector_key,
                           self._signing_key)
        return Sealed(seq, h.batch_id, h.created, len(data), sealed)

    def _seal_chunks(self, p: Pending, chunks: list[tuple[int, int]]) -> tuple[list[Sealed], int]:
        """Seal each chunk (a range of `p`'s records) under consecutive sequence numbers
        from `p.seq`; a chunk too large for one batch is halved until it fits, a single
        record that never fits is given up (counted). Returns the batches and how many
        records were given up."""
        out: list[Sealed] = []
        dropped = 0

        def one(a: int, b: int) -> None:
            nonlocal dropped
            try:
                out.append(self._seal_one(p.seq + len(out), p.data[a:b], p.pkids[a:b]))
            except EnvelopeError as e:
                if e.reason != "oversized":
                    raise
                if b - a == 1:
                    dropped += 1
                    return
                one(a, (a + b) // 2)
                one((a + b) // 2, b)

        for a, b in chunks:
            one(a, b)
        return out, dropped

    def _due(self, p: Pending, force: bool) -> list[tuple[int, int]]:
        """Full batches, and the last partial one if forced or its oldest record is due."""
        limit = self.config.batch_max_records
        chunks = [(i, min(i + limit, len(p))) for i in range(0, len(p), limit)]
        if chunks and chunks[-1][1] - chunks[-1][0] < limit and not (
                force or time.time() - p.added_at(chunks[-1][0]) >= self.config.batch_max_age_s):
            chunks.pop()
        return chunks

    async def _seal_round(self, force: bool) -> int:
        """Seal what is due, up to `_ROUND_RECORDS`, off the event loop and beside the
        spool's commits, then commit every batch in one transaction; returns the
        records taken from the pending queue (sealed or given up)."""
        limit = self.config.batch_max_records
        p = await self._run(self.spool.take_pending, limit * max(1, _ROUND_RECORDS // limit))
        chunks = self._due(p, force)
        if not chunks:
            return 0
        loop = asyncio.get_running_loop()
        batches, dropped = await loop.run_in_executor(self._sealer, self._seal_chunks, p, chunks)
        await self._run(self.spool.commit_sealed, p.seq, batches, p.position(chunks[-1][1] - 1))
        self.metrics.sealed.inc(len(batches))
        if dropped:
            self.metrics.dropped_records.labels("oversized").inc(dropped)
            log.warning("dropped %d record(s) too large for any batch", dropped)
        return chunks[-1][1]

    async def _seal_all(self, force: bool) -> None:
        async with self._sealing:  # the batcher and `flush` both seal; one at a time
            while await self._seal_round(force):
                self._wake_publisher.set()
        await self._refresh_gauges(force=force)

    async def _batcher(self) -> None:
        tick = max(0.01, min(self.config.batch_max_age_s / 4, 1.0))
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake_batcher.wait()
            self._wake_batcher.clear()
            try:
                await self._seal_all(force=False)
            except Exception:
                log.exception("sealing failed; records stay pending")
                await asyncio.sleep(1.0)

    async def _refresh_gauges(self, force: bool = True) -> None:
        """Read the spool's gauges; while busy (`force` false) at most every
        `_GAUGE_EVERY_S`, since each read is four queries on the spool's thread."""
        if not force and time.monotonic() - self._gauges_at < _GAUGE_EVERY_S:
            return
        self._gauges_at = time.monotonic()
        st = await self._run(self.spool.stats)
        m = self.metrics
        m.depth.set(st.batches)
        m.bytes.set(st.bytes)
        m.pending.set(st.pending_records)
        now = time.time()
        m.oldest.set(0 if st.oldest_created is None else max(0.0, now - st.oldest_created))
        m.unreceipted.set(st.unreceipted)
        m.unreceipted_age.set(0 if st.oldest_published is None
                              else max(0.0, now - st.oldest_published))

    async def _publisher(self) -> None:
        connected_before = False
        while True:
            try:
                async with self._transport.session() as sender:
                    if connected_before:
                        self.metrics.reconnects.inc()
                    connected_before = True
                    self._backoff.reset()
                    self.metrics.connected.set(1)
                    log.info("connected to broker")
                    await self._serve(sender)
            except TransportError as e:
                self.metrics.failures.inc()
                delay = self._backoff.next()
                log.warning("broker connection failed or lost (%s); retrying in %.1f s",
                            e, delay)
            except Exception:
                self.metrics.failures.inc()
                delay = self._backoff.next()
                log.exception("publisher error; retrying in %.1f s", delay)
            finally:
                self.metrics.connected.set(0)
            await asyncio.sleep(delay)

    async def _serve(self, sender: BatchSender) -> None:
        """Publish and (with receipts on, or other topics listened to) take what comes in,
        in one session; the first of the two to fail ends the session."""
        if not self.receipts_on and not self._listeners:
            await self._drain(sender)
            return
        tasks = {asyncio.create_task(self._drain(sender), name="privtel-drain"),
                 asyncio.create_task(self._take_receipts(sender), name="privtel-receipts")}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        for t in done:
            t.result()
        raise TransportError("the session ended")

    async def _take_receipts(self, sender: BatchSender) -> None:
        """Verify receipts as they come; the spool forgets their batches in group commits
        (one transaction for whatever arrived while the previous one ran). Messages on a
        listened topic go to their handler."""
        ids: list[str] = []
        ready = asyncio.Event()

        async def apply() -> None:
            while True:
                await ready.wait()
                ready.clear()
                batch, ids[:] = list(ids), []
                await self._run(self.spool.receipted, batch)
                self._last_receipt = time.time()
                self._freed.set()

        applier = asyncio.create_task(apply(), name="privtel-receipted")
        try:
            async for msg in sender.incoming():
                handler = self._listeners.get(msg.topic)
                if handler is not None:
                    handler(msg.payload)
                    continue
                got = self._verify_receipt(msg)
                if got:
                    ids.extend(got)
                    ready.set()
                if applier.done():
                    applier.result()
        finally:
            applier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await applier

    def _verify_receipt(self, msg: Incoming) -> list[str]:
        """The batch ids a receipt message settles; none if it cannot be trusted."""
        try:
            if self._receipt_key is None or msg.topic != self.receipt_topic:
                raise ReceiptError("receipt on another topic")
            r = open_receipts(msg.payload, self._receipt_key, tenant=self.config.tenant,
                              agent_id=self.config.agent_id)
        except ReceiptError as e:
            self.metrics.receipts_rejected.inc()
            log.warning("receipt ignored: %s", e)
            return []
        bad = 0
        for _, o in r.items:
            self.metrics.receipts.labels(str(o)).inc()
            bad += o in (Outcome.PARKED, Outcome.QUARANTINED)
        if bad:
            log.warning("the collector parked or quarantined %d of our batches (see its "
                        "privtel_batches_rejected_total)", bad)
        return [b for b, _ in r.items]

    def _resend_due(self, timeout: float) -> tuple[float | None, int | None]:
        """(published before, below seq) for `Spool.peek`: which unreceipted batches go
        out again. A batch is resent once its timeout passed and the collector receipted
        a later batch (it moved past this one, so this one was lost); while the collector
        is silent (no receipt for `timeout`: it, its store or the broker's state is
        gone) one window of overdue batches goes out per timeout as a probe. So neither
        an outage nor the backlog after it fills the broker with copies of every batch."""
        if not self.receipts_on:
            return None, None
        now = time.time()
        if now - self._last_receipt >= timeout and now >= self._next_probe:
            self._next_probe = now + timeout
            return now - timeout, None
        return now - timeout, self.spool.highest_receipted

    async def _drain(self, sender: BatchSender) -> None:
        rate = self.spool_config.drain_rate
        window = self.spool_config.inflight
        timeout = self.spool_config.receipt_timeout_s
        next_slot = time.monotonic()
        while True:
            batches = await self._run(self.spool.peek, window, frozenset(),
                                      *self._resend_due(timeout))
            if not batches:
                await self._refresh_gauges()
                with contextlib.suppress(TimeoutError):
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                    # that races the event, and close would then wait forever
                    async with asyncio.timeout(1.0):
                        await self._wake_publisher.wait()
                self._wake_publisher.clear()
                await self._run(self.spool.enforce_bounds)
                continue
            if rate > 0:
                batches = batches[: max(1, int(rate))]
            results = await asyncio.gather(*(sender.send(self.topic, b.data) for b in batches),
                                           return_exceptions=True)
            acked = [b.seq for b, r in zip(batches, results, strict=True) if r is None]
            await self._run(self.spool.mark_published if self.receipts_on else self.spool.delete,
                            acked)
            self._freed.set()
            self.metrics.published.inc(len(acked))
            self.metrics.resent.inc(sum(b.published is not None for b, r
                                        in zip(batches, results, strict=True) if r is None))
            await self._refresh_gauges(force=False)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0] if isinstance(errors[0], TransportError) else TransportError(
                    f"publish failed: {type(errors[0]).__name__}")
            if rate > 0:
                next_slot = max(next_slot, time.monotonic()) + len(batches) / rate
                await asyncio.sleep(max(0.0, next_slot - time.monotonic()))

