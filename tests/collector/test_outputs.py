"""Post-commit outputs: a raising or a stalled output neither stops nor holds back ingest.

Real Mosquitto, the real SQLite store, the real `StoreSink` and `IngestWorker`.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client import CollectorRegistry

from collector.ingest import IngestWorker
from collector.metrics import NocMetrics
from collector.outputs import Committed, NocOutput, Outputs, build_outputs
from collector.retention import RetentionService
from collector.store import open_store
from collector.store.sink import StoreSink
from pipelines import keys
from pipelines.envelope import Header, seal, topic_for
from pipelines.record import Kind, Record

BATCHES = 8
QUEUE = 2


class Raising:
    name = "raising"

    async def deliver(self, batch: Committed) -> None:
        raise RuntimeError("exporter down")


class Stalled:
    """Takes the first batch and never returns: the worst a slow output can do."""

    name = "stalled"

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def deliver(self, batch: Committed) -> None:
        await self.release.wait()


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.batch_ids: list[str] = []

    async def deliver(self, batch: Committed) -> None:
        self.batch_ids.append(batch.header.batch_id)


def _count(reg: CollectorRegistry, name: str, output: str) -> float:
    return reg.get_sample_value(name, {"output": output}) or 0.0


async def _until(pred: object, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return bool(pred())  # type: ignore[operator]


def _batches(tenant: str, agent: str, collector: keys.CollectorPrivateKey,
             signer: ed25519.Ed25519PrivateKey, n: int, first_seq: int = 1) -> list[bytes]:
    now = time.time()
    out = []
    for seq in range(first_seq, first_seq + n):
        recs = [Record(kind=Kind.METRIC, tenant=tenant, site="s1", device="dev1", name="if",
                       fields={"if_name": "eth0", "in_octets": seq}, ts=now)]
        h = Header(tenant=tenant, agent_id=agent, batch_id=os.urandom(16).hex(), seq=seq,
                   created=now)
        out.append(seal(h, recs, collector.public, signer))
    return out


async def test_raising_and_stalled_outputs_do_not_stop_store_or_ack(mosquitto: str,
                                                                    tmp_path: Path) -> None:
    tenant, agent = f"t{os.urandom(4).hex()}", f"a{os.urandom(4).hex()}"
    collector, signer = keys.generate_collector_key(), ed25519.Ed25519PrivateKey.generate()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    store.migrate()
    reg = CollectorRegistry()
    raising, stalled, recorder = Raising(), Stalled(), Recorder()
    outputs = Outputs([raising, stalled, recorder], registry=reg, queue_size=QUEUE)
    outputs.close_grace_s = 0.2
    sink = StoreSink(store, RetentionService(None).tag, outputs)
    client_id = f"outputs-{tenant}"

    def worker(registry: CollectorRegistry) -> IngestWorker:
        return IngestWorker(broker_url=mosquitto, sink=sink.sink, quarantine=sink.quarantine,
                            agent_keys={agent: signer.public_key()},
                            collector_keys={collector.key_id: collector}, registry=registry,
                            topic_filter=f"privtel/v1/{tenant}/+/batches", client_id=client_id)

    topic = topic_for(tenant, agent)
    try:
        async with outputs, worker(reg) as w:
            assert await _until(w.subscribed.is_set)
            async with aiomqtt.Client("127.0.0.1", 1883, timeout=10,
                                      identifier=f"pub-{client_id}") as pub:
                for payload in _batches(tenant, agent, collector, signer, BATCHES):
                    await pub.publish(topic, payload, qos=1)
            assert await _until(lambda: (reg.get_sample_value("privtel_batches_accepted_total")
                                         or 0) >= BATCHES)
            assert await _until(lambda: len(recorder.batch_ids) == BATCHES)
            assert store.count_batches(tenant=tenant) == BATCHES
            assert await _until(lambda: _count(reg, "privtel_output_failures_total",
                                               "raising") == BATCHES)
            # the stalled output holds one batch, its queue two; the rest it never sees
            assert _count(reg, "privtel_output_dropped_total", "stalled") == BATCHES - QUEUE - 1
            assert reg.get_sample_value("privtel_output_queue_depth",
                                        {"output": "stalled"}) == QUEUE
            assert _count(reg, "privtel_output_delivered_total", "stalled") == 0
        # what the stalled output still held at shutdown is counted, not silently gone
        assert _count(reg, "privtel_output_dropped_total", "stalled") == BATCHES - 1
        assert _count(reg, "privtel_output_delivered_total", "recorder") == BATCHES

        # every batch was acknowledged: the same persistent session gets only the new one
        reg2 = CollectorRegistry()
        async with worker(reg2) as w2:
            assert await _until(w2.subscribed.is_set)
            async with aiomqtt.Client("127.0.0.1", 1883, timeout=10,
                                      identifier=f"pub2-{client_id}") as pub:
                [marker] = _batches(tenant, agent, collector, signer, 1, first_seq=100)
                await pub.publish(topic, marker, qos=1)
            assert await _until(lambda: (reg2.get_sample_value(
                "privtel_batches_accepted_total") or 0) >= 1)
        assert reg2.get_sample_value("privtel_batches_received_total") == 1
        assert store.count_batches(tenant=tenant) == BATCHES + 1
    finally:
        store.close()


async def test_outputs_unit_rules() -> None:
    reg = CollectorRegistry()
    with pytest.raises(ValueError, match="unknown output 'kafka'"):
        build_outputs(["kafka"], reg)
    noc = NocOutput(NocMetrics(None))
    with pytest.raises(ValueError, match="unique"):
        Outputs([noc, noc], registry=None)
    recorder = Recorder()
    outs = Outputs([recorder], registry=reg, queue_size=4)
    h = Header(tenant="t", agent_id="a", batch_id="b" * 32, seq=1, created=time.time())
    outs.offer(h, [])  # before start: queued, delivered once started
    async with outs:
        assert await _until(lambda: recorder.batch_ids == ["b" * 32])
    await outs.close()  # idempotent
    assert _count(reg, "privtel_output_delivered_total", "recorder") == 1
