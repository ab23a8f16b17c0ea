"""A store outage pauses ingest without a reconnect storm (real Mosquitto, real SQLite lock).

The outage is real: another connection holds SQLite's exclusive lock, so every
commit fails with `database is locked` until it lets go.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry
from transport_helpers import Keys, SqliteSink, header, records, settled, uid, wait_for

from collector.ingest import IngestWorker
from pipelines.envelope import seal, topic_for

BATCHES = 5


def _worker(mosquitto: str, k: Keys, store: SqliteSink, tenant: str, client_id: str
            ) -> tuple[IngestWorker, CollectorRegistry]:
    reg = CollectorRegistry()
    w = IngestWorker(broker_url=mosquitto, sink=store.sink, quarantine=store.quarantine,
                     agent_keys=k.agent_keys, collector_keys=k.collector_keys, registry=reg,
                     topic_filter=f"privtel/v1/{tenant}/+/batches", client_id=client_id,
                     backoff_initial_s=0.05, backoff_max_s=0.3)
    return w, reg


def _value(reg: CollectorRegistry, name: str) -> float:
    return reg.get_sample_value(name) or 0.0


async def test_store_outage_pauses_ingest_stays_subscribed_and_logs_once(
        mosquitto: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    store = SqliteSink(tmp_path / "store.db")
    store.db.execute("PRAGMA busy_timeout = 20")
    client_id = f"outage-{uid()}"
    topic = topic_for(tenant, k.agent)
    caplog.set_level(logging.INFO, logger="collector.ingest")

    w, reg = _worker(mosquitto, k, store, tenant, client_id)
    async with w:
        assert await wait_for(w.subscribed.is_set)
        locker = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        async with aiomqtt.Client("127.0.0.1", 1883, timeout=10,
                                  identifier=f"pub-{client_id}") as pub:
            for seq in range(1, BATCHES + 1):
                await pub.publish(topic, seal(header(tenant, k.agent, seq=seq), records(tenant),
                                              k.collector.public, k.signing), qos=1)
        # several backoff rounds pass while the store is down
        assert await wait_for(lambda: _value(reg, "privtel_ingest_sink_retries_total") >= 10)
        assert _value(reg, "privtel_ingest_reconnects_total") == 0
        assert _value(reg, "privtel_ingest_connected") == 1
        assert _value(reg, "privtel_ingest_store_outages_total") == 1
        assert locker.execute("SELECT count(*) FROM batches").fetchone()[0] == 0
        locker.execute("ROLLBACK")
        locker.close()
        assert await wait_for(lambda: settled(reg) >= BATCHES)
    assert store.count("SELECT count(*) FROM batches") == BATCHES
    assert _value(reg, "privtel_batches_accepted_total") == BATCHES
    assert _value(reg, "privtel_ingest_reconnects_total") == 0
    assert _value(reg, "privtel_ingest_store_outages_total") == 1
    outage_lines = [r for r in caplog.records
                    if r.levelno >= logging.WARNING and "store failed" in r.getMessage()]
    assert len(outage_lines) == 1
    assert not any("connection failed or lost" in r.getMessage() for r in caplog.records)

    # every batch was acknowledged once stored: the same session gets nothing again
    w2, reg2 = _worker(mosquitto, k, store, tenant, client_id)
    async with w2:
        assert await wait_for(w2.subscribed.is_set)
        async with aiomqtt.Client("127.0.0.1", 1883, timeout=10,
                                  identifier=f"pub2-{client_id}") as pub:
            await pub.publish(topic, seal(header(tenant, k.agent, seq=99), records(tenant),
                                          k.collector.public, k.signing), qos=1)
        assert await wait_for(lambda: settled(reg2) >= 1)
    assert _value(reg2, "privtel_batches_received_total") == 1
    assert store.count("SELECT count(*) FROM batches") == BATCHES + 1
