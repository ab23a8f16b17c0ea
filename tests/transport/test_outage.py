"""Broker outage while the agent keeps submitting: the spool holds the backlog, then drains."""

from __future__ import annotations

import asyncio
from pathlib import Path

from peers.ports import free_port
from prometheus_client import CollectorRegistry
from transport_helpers import Broker, Keys, SqliteSink, agent_config, records, uid, wait_for

from agents.shipper import Shipper
from collector.ingest import IngestWorker


def value(reg: CollectorRegistry, name: str) -> float:
    return reg.get_sample_value(name) or 0.0


async def test_outage_backlog_drains(tmp_path: Path) -> None:
    broker = Broker.plain(tmp_path / "broker", free_port())
    broker.start()
    try:
        tenant, k = f"t{uid()}", Keys(f"a{uid()}")
        store = SqliteSink(tmp_path / "store.db")
        creg, areg = CollectorRegistry(), CollectorRegistry()
        cfg = agent_config(tmp_path / "agent", k, tenant, broker.url, batch_max_records=10,
                           batch_max_age_s=0.05, spool="drain_rate = 200.0\ninflight = 4")
        sent = []
        async with IngestWorker(broker_url=broker.url, sink=store.sink,
                                quarantine=store.quarantine, agent_keys=k.agent_keys,
                                collector_keys=k.collector_keys, registry=creg,
                                client_id=f"c{uid()}", backoff_initial_s=0.1,
                                backoff_max_s=0.5) as w, \
                Shipper(cfg, registry=areg, backoff_initial_s=0.1, backoff_max_s=0.5) as s:
            assert await wait_for(w.subscribed.is_set)
            sent += records(tenant, 20, start=0)
            await s.submit(sent[-20:])
            assert await s.flush(timeout=20)

            broker.stop()
            for i in range(10):
                batch = records(tenant, 15, start=100 + 15 * i)
                sent += batch
                await s.submit(batch)
                await asyncio.sleep(0.05)
            assert await wait_for(lambda: value(areg, "privtel_agent_spool_batches") >= 10)
            assert await wait_for(lambda: value(areg, "privtel_agent_publish_failures_total") > 0)
            assert store.count("SELECT count(*) FROM records") == 20

            broker.start()
            assert await s.flush(timeout=30)
            assert await wait_for(
                lambda: store.count("SELECT count(*) FROM records") >= len(sent), timeout=30)
        assert value(areg, "privtel_agent_reconnects_total") >= 1
        assert value(areg, "privtel_agent_spool_batches") == 0
        ids = store.record_ids()
        assert len(ids) == len(set(ids)) == len(sent)
        assert set(ids) == {r.id for r in sent}
    finally:
        broker.stop()
