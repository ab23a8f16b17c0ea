"""The store contract, run against every backend."""

from __future__ import annotations

import threading

import pytest
from collector_kit import BACKENDS, fetch, meta, rec, restrict, tagged

from collector.store import BatchMeta, StorePermanentError, TaggedRecord, open_store

pytestmark = pytest.mark.parametrize("store_url", BACKENDS, indirect=True)


def test_write_batch_stores_batch_and_records(store):
    records = [tagged(rec(i)) for i in range(5)]
    assert store.write_batch(meta("b1"), records) is True
    assert store.count_records() == 5
    assert store.count_records(tenant="acme", kind="metric") == 5
    assert store.count_records(device="other") == 0
    assert store.count_batches(agent_id="agent1") == 1


def test_duplicate_batch_is_reported_and_not_stored_twice(store):
    records = [tagged(rec(i)) for i in range(3)]
    assert store.write_batch(meta("b1"), records) is True
    again = [tagged(rec(i)) for i in range(3, 6)]
    assert store.write_batch(meta("b1"), again) is False
    assert store.count_records() == 3
    assert store.write_batch(meta("b1", agent_id="agent2"), again) is True
    assert store.count_records() == 6


def test_same_record_in_two_batches_is_stored_once(store):
    r = tagged(rec(1))
    assert store.write_batch(meta("b1"), [r]) is True
    assert store.write_batch(meta("b2"), [r, tagged(rec(2))]) is True
    assert store.count_records() == 2


def test_bad_batch_writes_nothing(store):
    wrong_tenant = tagged(rec(1, tenant="other"))
    with pytest.raises(StorePermanentError, match="differs from batch tenant"):
        store.write_batch(meta("b1"), [tagged(rec(0)), wrong_tenant])
    r = tagged(rec(1))
    with pytest.raises(StorePermanentError, match="appears twice"):
        store.write_batch(meta("b2"), [r, r])
    assert store.count_records() == 0
    assert store.count_batches() == 0


def test_quarantine_is_counted_by_reason(store):
    store.quarantine("bad_signature", "privtel/v1/acme/agent1/batches", "agent1", "b9", 512,
                     "ab" * 32)
    store.quarantine("malformed", "privtel/v1/acme/x/batches", None, None, 3, "cd" * 32)
    assert store.count_quarantined() == 2
    assert store.count_quarantined("bad_signature") == 1
    assert store.count_records() == 0


def test_count_records_rejects_unknown_filter(store):
    with pytest.raises(StorePermanentError, match="cannot filter records by 'colour'"):
        store.count_records(colour="red")


def test_purge_expired_by_class_with_dry_run(store):
    now = 1_750_000_000.0
    records = [tagged(rec(0), "logs", now - 10), tagged(rec(1), "logs", now - 1),
               tagged(rec(2), "metrics", now - 5), tagged(rec(3), "metrics", now + 100),
               tagged(rec(4), "inventory", None)]
    store.write_batch(meta("b1"), records)
    assert store.purge_expired(now, dry_run=True) == {"logs": 2, "metrics": 1}
    assert store.count_records() == 5
    assert store.purge_expired(now) == {"logs": 2, "metrics": 1}
    assert store.count_records() == 2
    assert store.purge_expired(now) == {}
    assert store.counts_by_class() == {"metrics": 1, "inventory": 1}


def test_migrate_is_idempotent(store, store_url):
    version = store.migrate()
    assert version >= 1
    other = open_store(store_url)
    try:
        assert other.migrate() == version
        assert other.count_records() == 0
    finally:
        other.close()


def test_concurrent_writers_from_threads(store):
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for b in range(5):
                batch = BatchMeta(agent_id=f"a{n}", batch_id=f"b{b}", seq=b, tenant="acme",
                                  created=1.0, received_at=2.0)
                recs = [tagged(rec(i, device=f"d{n}")) for i in range(10)]
                store.write_batch(batch, recs)
                store.write_batch(batch, recs)
        except BaseException as e:  # collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert store.count_batches() == 20
    assert store.count_records() == 200


def test_size_bytes_grows(store):
    before = store.size_bytes()
    store.write_batch(meta("b1"), [tagged(rec(i)) for i in range(200)])
    assert store.size_bytes() >= before > 0


def test_purge_keeps_restricted_records(store):
    now = 1_750_000_000.0
    held = tagged(rec(0), "logs", now - 10)
    store.write_batch(meta("b1"), [held, tagged(rec(1), "logs", now - 10)])
    restrict(store, held.record.id)
    assert store.purge_expired(now) == {"logs": 1}
    assert store.count_records(restricted=True) == 1
    assert store.count_records() == 1


def test_awkward_strings_round_trip(store):
    from pipelines.record import Kind, Record

    r = Record(kind=Kind.LOG, tenant="acme", site="site\t1\\x", device="dev\nA",
               name="syslog", fields={"msg": 'a\tb\\c\nd\r"e" é ☃', "n": 2**63, "f": 1.5,
                                      "none": None, "ok": True},
               ts=1_700_000_000.25)
    t = TaggedRecord(r, "logs", "basis with\ttab and \\ backslash", None)
    assert store.write_batch(meta("b1"), [t])
    got = fetch(store, r.id)
    assert got == {"site": "site\t1\\x", "device": "dev\nA", "fields": dict(r.fields),
                   "retention_class": "logs", "legal_basis": "basis with\ttab and \\ backslash",
                   "expires_at": None, "restricted": False}


def test_nul_in_strings_is_stored(store):
    from pipelines.record import Kind, Record

    r = Record(kind=Kind.LOG, tenant="acme", site="s", device="d", name="syslog",
               fields={"msg": "a\x00b"})
    assert store.write_batch(meta("b1"), [tagged(r)])
    msg = fetch(store, r.id)["fields"]["msg"]
    assert msg in ("a\x00b", "a\ufffdb")


def test_empty_batch_is_recorded_for_dedupe(store):
    assert store.write_batch(meta("b1"), []) is True
    assert store.write_batch(meta("b1"), []) is False
    assert store.count_batches() == 1
    assert store.count_records() == 0


def test_ping_answers_until_closed(store):
    store.ping()
    store.close()
    with pytest.raises(StorePermanentError, match="closed"):
        store.ping()


def test_upgrade_from_first_schema_keeps_data(store_url, monkeypatch):
    """A store made by schema 3 (what privtel wrote before the one migration scheme),
    holding the copies the old keys let in and the query tables the API used to
    create beside the migrations, upgrades in place: data and users kept, one copy
    per (tenant, id), the derived index re-keyed, new writes deduplicated."""
    import importlib

    from collector.store.base import migrations

    module = importlib.import_module(
        "collector.store.sqlite" if store_url.startswith("sqlite") else "collector.store.postgres")
    backend = "sqlite" if store_url.startswith("sqlite") else "postgres"
    monkeypatch.setattr(module, "migrations", lambda b: migrations(b)[:3])
    s = open_store(store_url)
    try:
        assert s.migrate() == 3
        r = tagged(rec(0))
        cols = ("id, agent_id, batch_id, tenant, site, device, kind, name, ts, fields, "
                "retention_class, legal_basis, expires_at")
        row = [r.record.id, "agent1", "b1", "acme", "site1", "dev1", "metric", "if", 1.0,
               '{"in_octets": 0}', "metrics", "contract", 1_800_000_000.0]
        rows = [row]
        if backend == "postgres":  # what (id, expires_at) let in: a later copy, and
            rows.append([*row[:12], 1_900_000_000.0])  # another tenant's same id
            rows.append([row[0], "agent9", "b9", "globex", *row[4:12], 2_000_000_000.0])
            s._ensure_partitions({1_800_000_000.0, 1_900_000_000.0, 2_000_000_000.0})
        with s.tx(write=True) as cur:
            cur.executemany(f"INSERT INTO records ({cols}) VALUES "
                            f"({', '.join('?' for _ in range(13))})", rows)
        monkeypatch.setattr(module, "migrations", lambda b: migrations(b)[:4])
        assert s.migrate() == 4  # the query tables as collector/api/schema.py made them
        with s.tx(write=True) as cur:
            cur.execute("INSERT INTO indexed_records (record_id) VALUES (?)", (r.record.id,))
            cur.execute("INSERT INTO api_users (name, role, tenants, token_id, token_hash, "
                        "created_at) VALUES ('ann', 'noc', 'acme', 't1', 'h', 0)")
        monkeypatch.setattr(module, "migrations", migrations)
        assert s.migrate() == len(migrations(backend)) >= 5
        assert s.schema_version() == len(migrations(backend))
        assert fetch(s, r.record.id)["fields"] == {"in_octets": 0}
        assert s.count_records(tenant="acme") == 1
        assert s.count_records(tenant="globex") == (1 if backend == "postgres" else 0)
        assert s.write_batch(meta("b2"), [r])  # its batch is new, the record is not
        assert s.count_records(tenant="acme") == 1
        assert s.write_batch(meta("b3"), [tagged(rec(1))])
        assert s.count_records() == (3 if backend == "postgres" else 2)
        with s.tx() as cur:  # the query side's tables came with the migrations
            assert cur.execute("SELECT name FROM api_users").fetchall() == [("ann",)]
            assert cur.execute("SELECT COUNT(*) FROM indexed_records WHERE tenant IS NOT NULL"
                               ).fetchone()[0] == 0  # derived: rebuilt with the new key
    finally:
        s.close()
