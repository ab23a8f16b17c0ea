"""Two ingest workers on one MQTT 5 shared subscription, real Mosquitto, one store.

Every batch is stored exactly once (duplicates included in the traffic), and
both workers take part. Each worker opens its own store, as separate
processes or machines would.
"""

from __future__ import annotations

import asyncio
import os
import time

import aiomqtt
import pytest
from collector_kit import BACKENDS
from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client import CollectorRegistry

from collector.ingest import IngestWorker
from collector.outputs import build_outputs
from collector.retention import RetentionService
from collector.store import open_store
from collector.store.sink import StoreSink
from pipelines import keys
from pipelines.envelope import Header, seal, topic_for
from pipelines.record import Kind, Record

BATCHES, PER_BATCH, AGENTS = 40, 25, 2


async def wait_until(cond, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(cond):
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
async def test_two_workers_store_every_batch_once(mosquitto, store, store_url):
    tenant = f"t{os.urandom(4).hex()}"
    group = f"g{os.urandom(4).hex()}"
    collector = keys.generate_collector_key()
    signers = {f"a{i}-{tenant}": ed25519.Ed25519PrivateKey.generate() for i in range(AGENTS)}
    agent_keys = {a: k.public_key() for a, k in signers.items()}
    retention = RetentionService(None)

    messages = []
    now = time.time()
    for n in range(BATCHES):
        agent = list(signers)[n % AGENTS]
        recs = [Record(kind=Kind.METRIC, tenant=tenant, site="s1", device=f"dev{n % 5}",
                       name="if", fields={"if_name": f"eth{i}", "in_octets": n * 100 + i},
                       ts=now) for i in range(PER_BATCH)]
        h = Header(tenant=tenant, agent_id=agent, batch_id=os.urandom(16).hex(), seq=n // AGENTS,
                   created=now)
        messages.append((topic_for(tenant, agent), seal(h, recs, collector.public,
                                                          signers[agent])))
    duplicates = messages[::4]

    workers, stores, registries, fanouts = [], [], [], []
    for i in range(2):
        s = open_store(store_url)
        reg = CollectorRegistry()
        outputs = build_outputs(["noc"], reg)
        await outputs.start()
        sink = StoreSink(s, retention.tag, outputs)
        stores.append(s)
        fanouts.append(outputs)
        registries.append(reg)
        workers.append(IngestWorker(
            broker_url=mosquitto, sink=sink.sink, quarantine=sink.quarantine,
            agent_keys=agent_keys, collector_keys={collector.key_id: collector}, registry=reg,
            shared_group=group, topic_filter=f"privtel/v1/{tenant}/+/batches",
            client_id=f"{group}-w{i}", session_expiry_s=0))
    try:
        for w in workers:
            await w.start()
        for w in workers:
            await asyncio.wait_for(w.subscribed.wait(), 20)
        async with aiomqtt.Client("127.0.0.1", 1883, timeout=10,
                                  identifier=f"{group}-pub") as pub:
            for topic, payload in messages + duplicates:
                await pub.publish(topic, payload, qos=1, timeout=10)
        total = len(messages) + len(duplicates)

        def settled() -> float:
            """Judged and committed, not merely received: `received` counts a
            message as soon as it is checked ahead of the commit before it."""
            return sum((r.get_sample_value("privtel_batches_accepted_total") or 0)
                       + (r.get_sample_value("privtel_batches_rejected_total",
                                             {"reason": "duplicate"}) or 0)
                       for r in registries)

        assert await wait_until(lambda: settled() >= total)
    finally:
        for w in workers:
            await w.close()
        for o in fanouts:
            await o.close()
        for s in stores:
            s.close()

    assert store.count_batches(tenant=tenant) == BATCHES
    assert store.count_records(tenant=tenant) == BATCHES * PER_BATCH
    per_worker = [r.get_sample_value("privtel_batches_received_total") for r in registries]
    assert all(n and n > 0 for n in per_worker), per_worker
    accepted = sum(r.get_sample_value("privtel_batches_accepted_total") or 0 for r in registries)
    dupes = sum(r.get_sample_value("privtel_batches_rejected_total", {"reason": "duplicate"}) or 0
                for r in registries)
    assert accepted == BATCHES
    assert dupes == len(duplicates)
    shown = {smp.labels["device"] for r in registries for fam in r.collect()
             for smp in fam.samples if smp.name == "privtel_interface_in_octets_total"}
    assert shown == {f"dev{i}" for i in range(5)}
