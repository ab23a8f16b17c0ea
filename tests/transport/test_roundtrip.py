"""Shipper -> real Mosquitto -> IngestWorker -> sink; and rejections on the wire."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry
from transport_helpers import (
    Keys,
    SqliteSink,
    agent_config,
    header,
    records,
    settled,
    uid,
    wait_for,
)

from agents.shipper import Shipper
from collector.ingest import IngestWorker
from pipelines.envelope import seal, topic_for


def worker(url: str, k: Keys, store: SqliteSink, tenant: str, reg: CollectorRegistry,
           **kw: object) -> IngestWorker:
    return IngestWorker(broker_url=url, sink=store.sink, quarantine=store.quarantine,
                        agent_keys=k.agent_keys, collector_keys=k.collector_keys, registry=reg,
                        topic_filter=f"privtel/v1/{tenant}/+/batches",
                        client_id=f"ingest-{tenant}", **kw)  # type: ignore[arg-type]


def metric(reg: CollectorRegistry, name: str, **labels: str) -> float:
    v = reg.get_sample_value(name, labels or None)
    return 0.0 if v is None else v


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_shipper_to_ingest_round_trip(mosquitto: str, tmp_path: Path, protocol: str) -> None:
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    store = SqliteSink(tmp_path / "store.db")
    creg, areg = CollectorRegistry(), CollectorRegistry()
    cfg = agent_config(tmp_path / "agent", k, tenant, mosquitto, batch_max_records=10,
                       protocol=protocol)
    async with worker(mosquitto, k, store, tenant, creg, protocol=protocol) as w:
        assert await wait_for(w.subscribed.is_set)
        async with Shipper(cfg, registry=areg) as s:
            sent = records(tenant, 25)
            await s.submit(sent[:12])
            await s.submit(sent[12:])
            assert await s.flush(timeout=20)
            assert await wait_for(lambda: store.count("SELECT count(*) FROM records") >= 25)
    assert sorted(store.record_ids()) == sorted(r.id for r in sent)
    assert store.count("SELECT count(*) FROM batches") == 3
    assert metric(creg, "privtel_batches_accepted_total") == 3
    assert metric(creg, "privtel_records_accepted_total") == 25
    assert metric(areg, "privtel_agent_batches_published_total") == 3
    assert metric(areg, "privtel_agent_spool_batches") == 0
    seqs = [r[0] for r in store.db.execute("SELECT seq FROM batches ORDER BY seq")]
    assert seqs == list(range(seqs[0], seqs[0] + 3))


async def test_rejections_on_the_wire(mosquitto: str, tmp_path: Path) -> None:
    """Tampered, unknown-key, wrong-topic and replayed batches: counted, quarantined, not stored."""
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    store = SqliteSink(tmp_path / "store.db")
    reg = CollectorRegistry()
    topic = topic_for(tenant, k.agent)
    good = seal(header(tenant, k.agent, seq=10), records(tenant), k.collector.public, k.signing)
    tampered = bytearray(seal(header(tenant, k.agent, seq=11), records(tenant),
                              k.collector.public, k.signing))
    tampered[-100] ^= 0x40
    stranger = Keys(k.agent)
    forged = seal(header(tenant, k.agent, seq=12), records(tenant), k.collector.public,
                  stranger.signing)
    other_collector = seal(header(tenant, k.agent, seq=13), records(tenant),
                           stranger.collector.public, k.signing)
    async with worker(mosquitto, k, store, tenant, reg) as w:
        assert await wait_for(w.subscribed.is_set)
        async with aiomqtt.Client("127.0.0.1", 1883, timeout=5) as c:
            await c.publish(topic, good, qos=1)
            await c.publish(topic, good, qos=1)
            await c.publish(topic, bytes(tampered), qos=1)
            await c.publish(topic, forged, qos=1)
            await c.publish(topic, other_collector, qos=1)
            await c.publish(topic_for(tenant, "someone-else"), good, qos=1)
            await c.publish(topic, b"\x00garbage", qos=1)
        assert await wait_for(lambda: settled(reg) >= 7)
    assert store.count("SELECT count(*) FROM batches") == 1
    assert store.count("SELECT count(*) FROM records") == 3
    assert sorted(store.reasons()) == sorted(
        ["bad_signature", "bad_signature", "unknown_key", "wrong_topic", "malformed"])
    for reason, n in (("duplicate", 1), ("bad_signature", 2), ("unknown_key", 1),
                      ("wrong_topic", 1), ("malformed", 1)):
        assert metric(reg, "privtel_batches_rejected_total", reason=reason) == n, reason
    assert metric(reg, "privtel_batches_accepted_total") == 1
