"""What ingest decides, against a real store on both backends (no broker: `handle`).

Each test is a defect of issue 12 that failed before: a store refusing a batch
for good made ingest retry it forever; a batch repeating a record id was a
poison batch; one huge sequence number locked an agent out until a restart
(the window lived in memory); an agent could report any site and kind; and
nothing stopped a tenant's batch in a region its contract forbids.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
import pytest
from factories import on_backends
from prometheus_client import CollectorRegistry
from transport_helpers import Keys, header, raw_header, raw_seal, records, uid

from collector.admission import Admission
from collector.config import AgentEntry
from collector.ingest import IngestWorker, SinkFailed
from collector.parking import ParkingLot
from collector.retention import RetentionService
from collector.sequence import StoreSequences
from collector.store import SqlStore, StoreRetryableError, TaggedRecord, open_db
from collector.store.sink import StoreSink
from pipelines.envelope import EnvelopeError, Header, seal, topic_for
from pipelines.record import Kind, Record

pytestmark = on_backends


@pytest.fixture
def db(store_url: str) -> Iterator[SqlStore]:
    d = open_db(store_url)
    try:
        yield d
    finally:
        d.close()


class Env:
    def __init__(self, db: SqlStore, *, admission: Admission | None = None,
                 tag: object = None, max_jump: int = 1_000_000) -> None:
        self.tenant, self.agent = f"t{uid()}", f"a{uid()}"
        self.k = Keys(self.agent)
        self.db, self.parking = db, ParkingLot(db)
        self.sink = StoreSink(db, tag or RetentionService(None).tag)  # type: ignore[arg-type]
        self.regs: dict[int, CollectorRegistry] = {}
        self.admission = admission
        self.max_jump = max_jump
        self.worker = self.make()

    def make(self, **kw: object) -> IngestWorker:
        args: dict[str, object] = dict(
            broker_url="mqtt://127.0.0.1:1883", sink=self.sink.sink,
            quarantine=self.sink.quarantine, agent_keys=self.k.agent_keys,
            collector_keys=self.k.collector_keys, registry=None,
            park=self.parking.park_async, admission=self.admission,
            sequences=StoreSequences(self.db, window=100, max_jump=self.max_jump))
        args.update(kw)
        reg = args["registry"] = CollectorRegistry()
        w = IngestWorker(**args)  # type: ignore[arg-type]
        self.regs[id(w)] = reg
        return w

    @property
    def topic(self) -> str:
        return topic_for(self.tenant, self.agent)

    def sealed(self, seq: int = 1, recs: Sequence[Record] | None = None) -> bytes:
        return seal(header(self.tenant, self.agent, seq=seq),
                    list(recs) if recs is not None else records(self.tenant),
                    self.k.collector.public, self.k.signing)

    def value(self, w: IngestWorker, name: str, **labels: str) -> float:
        return self.regs[id(w)].get_sample_value(name, labels) or 0.0


async def test_store_refusing_a_batch_for_good_parks_it(db: SqlStore) -> None:
    def no_basis(recs: Sequence[Record]) -> list[TaggedRecord]:
        return [TaggedRecord(r, "metrics", "", None) for r in recs]  # the store refuses this

    e = Env(db, tag=no_basis)
    payload = e.sealed()
    assert await e.worker.handle(e.topic, payload) == "store_refused"  # settled: acknowledged
    [p] = e.parking.find(tenant=e.tenant)
    assert (p.reason, p.agent_id, p.size) == ("store_refused", e.agent, len(payload))
    assert e.parking.payload(p.id) == payload
    assert e.value(e.worker, "privtel_batches_parked_total", reason="store_refused") == 1
    assert db.count_records(tenant=e.tenant) == 0


async def test_a_retryable_store_error_is_not_acknowledged(db: SqlStore) -> None:
    e = Env(db)

    async def down(h: Header, recs: list[Record]) -> bool:
        raise StoreRetryableError("test", "connection lost")

    w = e.make(sink=down)
    with pytest.raises(SinkFailed):
        await w.handle(e.topic, e.sealed())
    assert e.parking.find(tenant=e.tenant) == []
    assert e.value(w, "privtel_batches_parked_total", reason="store_refused") == 0


async def test_a_batch_repeating_a_record_id_is_parked_not_retried(db: SqlStore) -> None:
    e = Env(db)
    twice = records(e.tenant, 1) * 2
    body = orjson.dumps([r.to_dict() for r in twice])
    poison = raw_seal(raw_header(e.k, e.tenant, 2, seq=1), body, e.k)
    assert await e.worker.handle(e.topic, poison) == "invalid_record"
    assert [p.reason for p in e.parking.find(tenant=e.tenant)] == ["invalid_record"]
    assert await e.worker.handle(e.topic, e.sealed(seq=2)) == "accepted"
    assert db.count_records(tenant=e.tenant) == 3


async def test_one_huge_sequence_number_no_longer_locks_the_agent_out(db: SqlStore) -> None:
    e = Env(db, max_jump=1000)
    assert await e.worker.handle(e.topic, e.sealed(seq=5)) == "accepted"
    assert await e.worker.handle(e.topic, e.sealed(seq=10**12)) == "sequence_jump"
    assert await e.worker.handle(e.topic, e.sealed(seq=6)) == "accepted"
    assert [p.reason for p in e.parking.find(tenant=e.tenant)] == ["sequence_jump"]
    # the window is in the store: a second worker (or a restart) sees it
    other = e.make()
    assert await other.handle(e.topic, e.sealed(seq=6)) == "replayed"  # seq 6 used by another
    assert await other.handle(e.topic, e.sealed(seq=7)) == "accepted"
    old = e.sealed(seq=5)
    assert await other.handle(e.topic, e.sealed(seq=900)) == "accepted"
    assert await other.handle(e.topic, old) == "replayed"  # behind the window of 100
    assert db.count_batches(agent_id=e.agent) == 4


async def test_records_for_other_sites_or_kinds_park_the_batch(db: SqlStore) -> None:
    e = Env(db)
    entry = AgentEntry(e.agent, e.tenant, Path(), sites=frozenset({"s1"}),
                       kinds=frozenset({"metric"}))
    w = e.make(admission=Admission({e.agent: entry}))
    elsewhere = [Record(kind=Kind.METRIC, tenant=e.tenant, site="s2" if i < 2 else "s1",
                        device="d", name="if", fields={"i": i}) for i in range(3)]
    assert await w.handle(e.topic, e.sealed(1, elsewhere)) == "site"
    logs = [Record(kind=Kind.LOG, tenant=e.tenant, site="s1", device="d", name="syslog",
                   fields={"msg": "x"})]
    assert await w.handle(e.topic, e.sealed(2, logs)) == "kind"
    assert await w.handle(e.topic, e.sealed(3)) == "accepted"
    assert e.value(w, "privtel_records_rejected_total", reason="site") == 2
    assert e.value(w, "privtel_records_rejected_total", reason="kind") == 1
    assert sorted(p.reason for p in e.parking.find(tenant=e.tenant)) == ["kind", "site"]
    assert db.count_records(tenant=e.tenant) == 3  # the allowed batch only


async def test_residency_is_decided_before_decryption(db: SqlStore) -> None:
    e = Env(db)
    here = Admission(region="za", tenant_regions={e.tenant: frozenset({"ng"})})
    # no collector key at all: a residency refusal must come before any decryption
    w = e.make(admission=here, collector_keys={})
    payload = e.sealed()
    assert await w.handle(e.topic, payload) == "residency"
    assert [p.reason for p in e.parking.find(tenant=e.tenant)] == ["residency"]
    # a replay on a collector of an allowed region stores it, once
    there = e.make(admission=Admission(region="ng",
                                       tenant_regions={e.tenant: frozenset({"ng"})}))
    [p] = e.parking.find(tenant=e.tenant)
    assert await there.replay(p.topic, payload, p.parked_at) == "accepted"
    assert await there.replay(p.topic, payload, p.parked_at) == "duplicate"
    assert db.count_records(tenant=e.tenant) == 3


async def test_unauthenticated_parks_tell_no_agent(db: SqlStore) -> None:
    e = Env(db)
    told: list[tuple[str, str, str, str]] = []
    stranger = Keys(e.agent)  # same agent id, another signing key: bad_signature
    w = e.make(on_outcome=lambda *a: told.append(a), collector_keys={})
    forged = seal(header(e.tenant, e.agent), records(e.tenant), e.k.collector.public,
                  stranger.signing)
    assert await w.handle(e.topic, forged) == "bad_signature"
    assert told == []
    h = header(e.tenant, e.agent)
    real = seal(h, records(e.tenant), e.k.collector.public, e.k.signing)
    assert await w.handle(e.topic, real) == "unknown_key"  # authenticated: the agent hears
    assert told == [(e.tenant, e.agent, h.batch_id, "parked")]
    assert sorted(p.reason for p in e.parking.find(tenant=e.tenant)) == ["bad_signature",
                                                                         "unknown_key"]


async def test_parking_lot_keeps_one_copy_and_expires_by_policy(db: SqlStore,
                                                                tmp_path: Path) -> None:
    e = Env(db)
    now = time.time()
    old = ParkingLot(db, clock=lambda: now - 3 * 86400)
    a, b = e.sealed(1), e.sealed(2)
    pid = old.park("unknown_key", e.topic, None, a, "x")
    assert old.park("unknown_key", e.topic, None, a, "again") == pid
    e.parking.park("residency", e.topic, None, b, "y")
    rows = {p.id: p for p in e.parking.find(ids=[pid])}
    assert rows[pid].attempts == 2 and e.parking.count() >= 2
    with pytest.raises(ValueError):
        e.parking.purge()
    policy = tmp_path / "policy.toml"
    policy.write_text(_POLICY)
    service = RetentionService(db, policy_path=policy, parking=e.parking)
    assert service.purge(dry_run=True).parked >= 1 and e.parking.payload(pid) == a
    result = service.purge()
    assert result.parked >= 1
    assert e.parking.payload(pid) is None and e.parking.count("residency") >= 1


_POLICY = """
version = 1
[classes.short]
days = 1
legal_basis = "test"
[[rules]]
kind = "*"
class = "short"
[operational.parked_batches]
days = 2
legal_basis = "kept for an operator to fix and replay"
"""


async def test_an_upgraded_store_starts_the_window_where_its_batches_left_it(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.store.postgres as pg_backend
    import collector.store.sqlite as sqlite_backend
    from collector.store import open_store

    backend = sqlite_backend if store_url.startswith("sqlite") else pg_backend
    full = backend.migrations(backend.BACKEND)
    monkeypatch.setattr(backend, "migrations", lambda name: full[:5])
    old = open_store(store_url)
    try:
        assert old.migrate() == 5
        e_tenant, agent = f"t{uid()}", f"a{uid()}"
        sink = StoreSink(old, RetentionService(None).tag)
        assert sink.write(header(e_tenant, agent, seq=40_000), records(e_tenant))
    finally:
        old.close()
    monkeypatch.setattr(backend, "migrations", lambda name: full)
    db = open_db(store_url)
    try:
        assert db.schema_version() >= 6
        seqs = StoreSequences(db)
        assert seqs.state(agent, 1) == (40_000, None)
        with pytest.raises(EnvelopeError, match="behind the window"):
            await seqs.check(header(e_tenant, agent, seq=1))
    finally:
        db.close()
