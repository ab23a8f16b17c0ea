"""The ingest worker checks the next message while the previous one commits: the
sequence window and ack-after-commit must stay exactly as one-at-a-time."""

from __future__ import annotations

import asyncio

import aiomqtt
from prometheus_client import CollectorRegistry
from transport_helpers import Keys, header, records, uid, wait_for

from collector.ingest import IngestWorker
from pipelines.envelope import Header, seal, topic_for
from pipelines.record import Record


class HeldSink:
    """Stores in memory; the first commit of `hold` waits for `release`, `fail_first`
    makes that commit raise once instead (a store outage)."""

    def __init__(self, hold: str, fail_first: bool = False) -> None:
        self.hold, self.fail_first = hold, fail_first
        self.release = asyncio.Event()
        self.calls: list[str] = []
        self.stored: list[str] = []
        self.quarantined: list[str] = []

    async def sink(self, h: Header, recs: list[Record]) -> bool:
        self.calls.append(h.batch_id)
        if h.batch_id == self.hold and self.calls.count(h.batch_id) == 1:
            await self.release.wait()
            if self.fail_first:
                raise OSError("store went away")
        if h.batch_id in self.stored:
            return False
        self.stored.append(h.batch_id)
        return True

    async def quarantine(self, reason: str, topic: str, h: Header | None, payload: bytes) -> None:
        self.quarantined.append(reason)


def worker(url: str, k: Keys, tenant: str, sink: HeldSink, reg: CollectorRegistry) -> IngestWorker:
    return IngestWorker(broker_url=url, sink=sink.sink, quarantine=sink.quarantine,
                        agent_keys=k.agent_keys, collector_keys=k.collector_keys, registry=reg,
                        topic_filter=f"privtel/v1/{tenant}/+/batches",
                        client_id=f"pipe-{uid()}", session_expiry_s=60,
                        backoff_initial_s=0.05, backoff_max_s=0.2)


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, labels) or 0.0


async def publish(url: str, tenant: str, agent: str, batches: list[bytes]) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), timeout=10) as c:
        for b in batches:
            await c.publish(topic_for(tenant, agent), b, qos=1, timeout=10)


async def test_sequence_checks_wait_for_the_commit_before(mosquitto: str) -> None:
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    ha, hb, hc = (header(tenant, k.agent, seq=s) for s in (5, 5, 6))
    a, b, c = (seal(h, records(tenant), k.collector.public, k.signing) for h in (ha, hb, hc))
    sink, reg = HeldSink(ha.batch_id), CollectorRegistry()
    async with worker(mosquitto, k, tenant, sink, reg) as w:
        await asyncio.wait_for(w.subscribed.wait(), 10)
        await publish(mosquitto, tenant, k.agent, [a, b, c])
        # B (same sequence number as A, another batch) is decrypted while A commits...
        assert await wait_for(lambda: sample(reg, "privtel_batches_received_total") >= 2)
        # ...but judged only after A committed: nothing is rejected or stored yet.
        assert sink.quarantined == [] and sink.stored == []
        sink.release.set()
        assert await wait_for(lambda: sample(reg, "privtel_batches_accepted_total") == 2
                              and sink.quarantined == ["replayed"])
    assert sink.stored == [ha.batch_id, hc.batch_id]
    assert sample(reg, "privtel_batches_rejected_total", reason="replayed") == 1


async def test_a_failed_commit_leaves_the_messages_checked_ahead_unacknowledged(
        mosquitto: str) -> None:
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    ha, hb = header(tenant, k.agent, seq=1), header(tenant, k.agent, seq=2)
    a, b = (seal(h, records(tenant), k.collector.public, k.signing) for h in (ha, hb))
    sink, reg = HeldSink(ha.batch_id, fail_first=True), CollectorRegistry()
    async with worker(mosquitto, k, tenant, sink, reg) as w:
        await asyncio.wait_for(w.subscribed.wait(), 10)
        await publish(mosquitto, tenant, k.agent, [a, b])
        assert await wait_for(lambda: sample(reg, "privtel_batches_received_total") >= 2)
        sink.release.set()
        # The worker reconnects; the broker delivers both again, in order.
        assert await wait_for(lambda: sink.stored == [ha.batch_id, hb.batch_id])
    assert sink.calls[:2] == [ha.batch_id, ha.batch_id]
    assert sink.stored.count(hb.batch_id) == 1 and sink.quarantined == []
