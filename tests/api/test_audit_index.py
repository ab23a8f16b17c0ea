"""The audit chain under concurrent writers, the retention adapter, and the
derived address index (extraction, pruning after a retention purge)."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

import pytest
from api_kit import T0, seed
from factories import on_backends

from collector.audit import AuditChainError, AuditLog
from collector.search import AddressIndex, addresses_of
from collector.store import BatchMeta, TaggedRecord, open_db, open_store
from pipelines.record import Kind, Record


def test_two_connections_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    dbs = [open_db(url), open_db(url, migrate=False)]
    logs = [AuditLog(d) for d in dbs]

    def work(i: int) -> None:
        for n in range(40):
            logs[i].append(actor=f"w{i}", role="system", action="test", tenants=("acme",),
                           request_id=f"{i}-{n}", outcome="ok", count=n)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    v = logs[0].verify()
    assert v.entries == 80 and len(v.head) == 64
    for d in dbs:
        d.close()


def test_keyed_chain_needs_the_key_and_retention_adapter(tmp_path: Path) -> None:
    db = open_db(f"sqlite:///{tmp_path / 's.db'}")
    key = b"k" * 32
    log = AuditLog(db, key)
    log.record("retention.purge", dry_run=False, deleted={"logs": 3}, total=3)
    log.append(actor="a", role="admin", action="x", tenants=("*",), request_id="r",
               outcome="ok")
    assert log.verify().entries == 2
    entry = next(log.entries())
    assert entry["action"] == "retention.purge" and entry["count"] == 3
    assert entry["detail"]["deleted"] == {"logs": 3}
    with pytest.raises(AuditChainError, match="audit entry 0"):
        AuditLog(db, b"x" * 32).verify()
    with pytest.raises(ValueError, match="at least 16 bytes"):
        AuditLog(db, b"short")
    db.close()


def test_addresses_of_finds_text_fields_ints_and_v6() -> None:
    got = addresses_of({"message": "from 10.1.2.3 to [2001:db8::1]:443", "src_ip": 167772161,
                        "in_octets": 167772161, "ok": True})
    assert (4, "0a010203") in got and (4, "0a000001") in got
    assert (6, f"{int(ipaddress.IPv6Address('2001:db8::1')):032x}") in got
    assert len(got) == 3  # in_octets is a number, not an address


def test_index_is_pruned_after_retention_purge(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    seed(url, ("acme",))
    db = open_db(url)
    index = AddressIndex(db, min_interval_s=0.0)
    assert index.refresh() == 10
    assert index.refresh() == 0
    store = open_store(url)
    r = Record(kind=Kind.LOG, tenant="acme", site="hq", device="d", name="syslog",
               fields={"message": "peer 10.9.9.9 down"}, ts=T0)
    store.write_batch(BatchMeta(agent_id="a", batch_id="old", seq=1, tenant="acme",
                                created=T0, received_at=T0),
                      [TaggedRecord(r, "logs", "legitimate interest", T0 + 10)])
    assert index.refresh() == 1
    with db.tx() as cur:
        before = cur.execute("SELECT COUNT(*) FROM record_addresses").fetchone()[0]
    assert store.purge_expired(T0 + 20) == {"logs": 1}
    assert index.prune() == 1
    with db.tx() as cur:
        after = cur.execute("SELECT COUNT(*) FROM record_addresses").fetchone()[0]
        gone = cur.execute("SELECT COUNT(*) FROM indexed_records WHERE record_id = ?",
                           (r.id,)).fetchone()[0]
    assert after == before - 1 and gone == 0
    store.close()
    db.close()


def test_retention_service_can_write_to_the_chained_log(tmp_path: Path) -> None:
    from collector.retention import RetentionService

    url = f"sqlite:///{tmp_path / 's.db'}"
    seed(url, ("acme",))
    db = open_db(url)
    store = open_store(url)
    log = AuditLog(db)
    RetentionService(store, audit=log, clock=lambda: T0).purge(dry_run=True)
    entries = list(log.entries())
    assert [e["action"] for e in entries] == ["retention.purge"]
    assert entries[0]["outcome"] == "ok" and entries[0]["detail"]["dry_run"] is True
    assert log.verify().entries == 1
    store.close()
    db.close()


def test_late_batch_outside_the_window_is_caught_by_the_sweep(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    seed(url, ("acme",))
    db = open_db(url)
    index = AddressIndex(db, min_interval_s=0.0, margin_s=60)
    assert index.refresh() == 10
    store = open_store(url)
    r = Record(kind=Kind.LOG, tenant="acme", site="hq", device="d", name="syslog",
               fields={"message": "peer 10.9.9.9 down"}, ts=T0)
    store.write_batch(BatchMeta(agent_id="a", batch_id="late", seq=1, tenant="acme",
                                created=T0, received_at=T0 - 3600),
                      [TaggedRecord(r, "logs", "legitimate interest", None)])
    assert index.refresh() == 0  # received long before the watermark: outside the window
    assert index.refresh(force=True) == 1
    with db.tx() as cur:
        n = cur.execute("SELECT COUNT(*) FROM record_addresses WHERE record_id = ?",
                        (r.id,)).fetchone()[0]
    assert n == 1
    store.close()
    db.close()


def test_ipv6_indicator_and_prefix(tmp_path: Path) -> None:
    from api_kit import KEYS, tenant_keys

    from collector.search import Searcher, parse_query
    from pipelines.pseudonym import Pseudonymiser, TenantKey

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = open_store(url)
    store.migrate()
    p = Pseudonymiser(TenantKey.from_hex(KEYS["acme"]))
    recs = [p.record(Record(kind=Kind.EVENT, tenant="acme", site="hq", device="d",
                            name="fw.drop", fields={"src_ip": a}, ts=T0 + i))
            for i, a in enumerate(["2001:db8::7", "2001:db8::8", "2001:db9::7"])]
    store.write_batch(BatchMeta(agent_id="a", batch_id="v6", seq=1, tenant="acme",
                                created=T0, received_at=T0),
                      [TaggedRecord(r, "logs", "legitimate interest", None) for r in recs])
    store.close()
    db = open_db(url)
    s = Searcher(db, tenant_keys("acme"), AddressIndex(db, min_interval_s=0.0))
    one = s.search(parse_query({"tenant": "acme", "indicators": ["2001:db8::7"]}))
    assert [r["id"] for r in one.records] == [recs[0].id]
    net = s.search(parse_query({"tenant": "acme", "indicators": ["2001:db8::/32"]}))
    assert [r["id"] for r in net.records] == [recs[0].id, recs[1].id]
    pseudo = str(recs[2].fields["src_ip"])
    assert [r["id"] for r in s.search(parse_query({"tenant": "acme", "ip": pseudo})).records] \
        == [recs[2].id]
    db.close()


@on_backends
def test_index_keys_records_by_tenant_and_id(store_url: str) -> None:
    """Two tenants' records with one id are two records to the index too: each is
    indexed, found by its own tenant's address search and erased on its own."""
    from collector.search import Searcher, parse_query

    db = open_db(store_url)
    mine = Record(kind=Kind.LOG, tenant="acme", site="hq", device="d", name="syslog",
                  fields={"message": "peer 10.1.1.1 down"}, ts=T0)
    theirs = Record(kind=Kind.LOG, tenant="globex", site="hq", device="d", name="syslog",
                    fields={"message": "peer 10.2.2.2 down"}, ts=T0, id=mine.id)
    for r, agent in ((mine, "a1"), (theirs, "a2")):
        assert db.write_batch(BatchMeta(agent_id=agent, batch_id="b", seq=1, tenant=r.tenant,
                                        created=T0, received_at=T0),
                              [TaggedRecord(r, "logs", "legitimate interest", None)])
    s = Searcher(db, index=AddressIndex(db, min_interval_s=0.0))
    assert s.index.refresh(force=True) == 2
    for tenant, ip in (("acme", "10.1.1.1"), ("globex", "10.2.2.2")):
        found = s.search(parse_query({"tenant": tenant, "ip": ip})).records
        assert [(x["tenant"], x["id"]) for x in found] == [(tenant, mine.id)]
    with db.tx(write=True) as cur:
        cur.execute("DELETE FROM records WHERE tenant = ? AND id = ?", ("acme", mine.id))
    s.index.prune()
    with db.tx() as cur:
        left = cur.execute("SELECT tenant FROM indexed_records").fetchall()
        addrs = cur.execute("SELECT tenant FROM record_addresses").fetchall()
    assert [t for (t,) in left] == ["globex"] and [t for (t,) in addrs] == ["globex"]
    db.close()
