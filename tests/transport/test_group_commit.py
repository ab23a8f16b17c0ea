"""Group commit in the shipper: submits made at the same time share one spool
transaction, each returns only once its own records are durable, a failed group
commit fails every caller in the group, and a spool from the previous version
still ships. (SIGKILL under grouped submits: test_kill.)"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from transport_helpers import (
    Keys,
    SqliteSink,
    agent_config,
    previous_version_spool,
    records,
    uid,
    wait_for,
)

from agents.shipper import Shipper
from agents.spool import Spool
from collector.ingest import IngestWorker
from pipelines.envelope import Header
from pipelines.record import Record

NOWHERE = "mqtt://127.0.0.1:1"  # nothing is published: records stay in the spool


def _pending_ids(path: Path) -> list[str]:
    s = Spool(path)
    try:
        return [orjson.loads(d)["id"] for d in s.take_pending(1_000_000).data]
    finally:
        s.close()


def _submitted(reg: CollectorRegistry) -> float:
    return reg.get_sample_value("privtel_agent_records_submitted_total") or 0.0


async def test_concurrent_submits_share_a_transaction_and_are_durable(tmp_path: Path) -> None:
    k = Keys(f"a{uid()}")
    cfg = agent_config(tmp_path / "a", k, "t1", NOWHERE, batch_max_records=100_000,
                       batch_max_age_s=3600)
    waves = [records("t1", 5, start=i * 5) for i in range(20)]
    reg = CollectorRegistry()
    async with Shipper(cfg, registry=reg, backoff_initial_s=30) as s:
        path, before = s.spool.path, s.spool.transactions
        await asyncio.gather(*(s.submit(w) for w in waves))
        assert 1 <= s.spool.transactions - before < len(waves)
        assert _submitted(reg) == 100
    # every submit returned, so every record is on disk for the next process
    assert sorted(_pending_ids(path)) == sorted(r.id for w in waves for r in w)


async def test_group_size_is_bounded(tmp_path: Path) -> None:
    k = Keys(f"a{uid()}")
    cfg = agent_config(tmp_path / "a", k, "t1", NOWHERE, batch_max_records=100_000,
                       batch_max_age_s=3600, spool="group_max_records = 10\nlinger_s = 0.02")
    waves = [records("t1", 5, start=i * 5) for i in range(20)]
    async with Shipper(cfg, registry=CollectorRegistry(), backoff_initial_s=30) as s:
        before = s.spool.transactions
        await asyncio.gather(*(s.submit(w) for w in waves))
        assert s.spool.transactions - before >= 10  # at most 10 records per transaction
        path = s.spool.path
    assert len(_pending_ids(path)) == 100


async def test_a_failed_group_commit_fails_every_caller(tmp_path: Path) -> None:
    k = Keys(f"a{uid()}")
    cfg = agent_config(tmp_path / "a", k, "t1", NOWHERE, batch_max_records=100_000,
                       batch_max_age_s=3600)
    reg = CollectorRegistry()
    async with Shipper(cfg, registry=reg, backoff_initial_s=30) as s:
        first = records("t1", 2)
        await s.submit(first)
        other = sqlite3.connect(s.spool.path, isolation_level=None)
        other.execute("ALTER TABLE pending RENAME TO elsewhere")  # the next commit fails
        results = await asyncio.gather(*(s.submit(records("t1", 3)) for _ in range(8)),
                                       return_exceptions=True)
        assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
        assert _submitted(reg) == 2
        other.execute("ALTER TABLE elsewhere RENAME TO pending")
        other.close()
        later = records("t1", 4)
        await s.submit(later)  # the shipper carries on once the spool works again
        path = s.spool.path
    assert sorted(_pending_ids(path)) == sorted(r.id for r in first + later)


async def test_wrong_tenant_is_refused_at_submit(tmp_path: Path) -> None:
    k = Keys(f"a{uid()}")
    cfg = agent_config(tmp_path / "a", k, "t1", NOWHERE)
    async with Shipper(cfg, registry=CollectorRegistry(), backoff_initial_s=30) as s:
        mixed = [*records("t1", 2), *records("t2", 1)]
        with pytest.raises(ValueError, match="not this agent's tenant"):
            await s.submit(mixed)
        path = s.spool.path
    assert _pending_ids(path) == []  # nothing of the refused submit was stored


async def test_spool_of_the_previous_version_ships(mosquitto: str, tmp_path: Path) -> None:
    """Records left in `pending` by the version before `pending.pkid` are sealed and
    delivered, their key ids in the batch header."""
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    cfg = agent_config(tmp_path / "a", k, tenant, mosquitto, batch_max_records=10)
    recs: list[Record] = [*records(tenant, 3), *(replace(r, fields={**r.fields, "pkid": "k7"})
                                                 for r in records(tenant, 4, start=3))]
    previous_version_spool(cfg.state_dir / "spool.db", recs)
    store = SqliteSink(tmp_path / "store.db")
    headers: list[Header] = []

    async def sink(h: Header, got: list[Record]) -> bool:
        headers.append(h)
        return await store.sink(h, got)

    async with IngestWorker(broker_url=mosquitto, sink=sink, quarantine=store.quarantine,
                            agent_keys=k.agent_keys, collector_keys=k.collector_keys,
                            registry=CollectorRegistry(), client_id=f"ingest-{tenant}",
                            topic_filter=f"privtel/v1/{tenant}/+/batches") as w:
        assert await wait_for(w.subscribed.is_set)
        async with Shipper(cfg, registry=CollectorRegistry(), pseudonym_key_ids=["k0"]) as s:
            assert await s.flush(timeout=20)
        assert await wait_for(lambda: len(store.record_ids()) >= len(recs))
    assert sorted(store.record_ids()) == sorted(r.id for r in recs)
    assert [h.pseudonym_key_ids for h in headers] == [("k0", "k7")]  # one without pkid: k0
    assert store.reasons() == []
