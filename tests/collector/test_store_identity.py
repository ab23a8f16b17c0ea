"""One identity per record (issue 12, defects 5 and 6), on every backend: a record
is (tenant, id); a re-sent record is stored once whatever its expiry; another
tenant's record with the same id is its own record; `record_count` counts records;
a batch that repeats an id is refused as permanent (ingest parks it)."""

from __future__ import annotations

import pytest
from collector_kit import BACKENDS, meta, rec, tagged

from collector.store import StorePermanentError, StoreRetryableError
from pipelines.record import Record

pytestmark = pytest.mark.parametrize("store_url", BACKENDS, indirect=True)


def same_id(r: Record, **changes: object) -> Record:
    """Another record carrying `r`'s id (what a buggy or hostile agent can send)."""
    attrs = {k: getattr(r, k) for k in ("kind", "tenant", "site", "device", "name", "fields",
                                        "ts")}
    return Record(**{**attrs, **changes}, id=r.id)  # type: ignore[arg-type]


def batch_counts(store) -> dict[str, int]:
    with store.tx() as cur:
        rows = cur.execute("SELECT batch_id, record_count FROM batches").fetchall()
    return {b: int(n) for b, n in rows}


def test_resent_record_with_another_expiry_is_stored_once(store):
    r = rec(1)
    assert store.write_batch(meta("b1"), [tagged(r, expires_at=1_800_000_000.0)])
    assert store.write_batch(meta("b2"), [tagged(r, expires_at=1_900_000_000.0),
                                          tagged(rec(2))])
    assert store.count_records(tenant="acme") == 2
    with store.tx() as cur:
        rows = cur.execute("SELECT COUNT(*) FROM records WHERE tenant = ? AND id = ?",
                           ("acme", r.id)).fetchone()
    assert rows[0] == 1


def test_same_id_in_another_tenant_is_that_tenants_record(store):
    mine = rec(1)
    theirs = same_id(mine, tenant="globex", fields={"in_octets": 7})
    assert store.write_batch(meta("b1"), [tagged(mine)])
    assert store.write_batch(meta("b1", agent_id="agent9", tenant="globex"), [tagged(theirs)])
    assert store.count_records(tenant="acme") == 1
    assert store.count_records(tenant="globex") == 1
    with store.tx() as cur:
        got = cur.execute("SELECT fields FROM records WHERE tenant = ? AND id = ?",
                          ("globex", mine.id)).fetchone()
    assert store.dialect.json(got[0]) == {"in_octets": 7}


def test_record_count_is_the_number_of_records(store):
    store.write_batch(meta("b1"), [tagged(rec(i)) for i in range(200)])
    store.write_batch(meta("b2"), [tagged(rec(0)), tagged(rec(500))])  # one already stored
    assert batch_counts(store) == {"b1": 200, "b2": 2}


def test_batch_repeating_a_record_id_is_permanent_and_writes_nothing(store):
    r = rec(1)
    with pytest.raises(StorePermanentError, match="appears twice") as e:
        store.write_batch(meta("b1"), [tagged(r), tagged(rec(2)), tagged(same_id(r))])
    assert not isinstance(e.value, StoreRetryableError) and not e.value.retryable
    assert store.count_records() == 0 and store.count_batches() == 0


def test_purge_frees_the_id_for_a_later_record(store):
    """Row deletes and (PostgreSQL) whole dropped partitions both release the key."""
    now = 1_750_000_000.0
    r, old = rec(1), rec(3)
    store.write_batch(meta("b1"), [tagged(r, "logs", now - 10), tagged(rec(2), "logs", None),
                                   tagged(old, "logs", now - 60 * 86400)])
    assert store.purge_expired(now) == {"logs": 2}
    assert store.write_batch(meta("b2"), [tagged(r, "logs", now + 10),
                                          tagged(old, "logs", now + 10)])
    assert store.count_records() == 3


def test_erasing_a_record_frees_its_id(store):
    r = rec(1)
    store.write_batch(meta("b1"), [tagged(r)])
    with store.tx(write=True) as cur:
        cur.execute("DELETE FROM records WHERE tenant = ? AND id = ?", ("acme", r.id))
    assert store.write_batch(meta("b2"), [tagged(r)])
    assert store.count_records() == 1
