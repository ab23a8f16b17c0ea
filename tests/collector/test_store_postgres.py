"""PostgreSQL specifics: expiry partitions, partition drops, isolation, clean errors."""

from __future__ import annotations

import pytest
from collector_kit import meta, rec, tagged

from collector.store import StorePermanentError, StoreRetryableError, open_store

DAY = 86400.0
T0 = 1_750_000_000.0 // (7 * DAY) * (7 * DAY)

on_postgres = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)


@on_postgres
def test_records_land_in_expiry_partitions_and_purge_drops_them(store):
    records = [tagged(rec(i), "logs", T0 + i * DAY) for i in range(14)]
    records.append(tagged(rec(99, kind=rec(0).kind), "inventory", None))
    assert store.write_batch(meta("b1"), records)
    parts = store.partitions()
    assert [(lo, hi) for _, lo, hi in parts] == [(T0, T0 + 7 * DAY), (T0 + 7 * DAY, T0 + 14 * DAY)]
    now = T0 + 8.5 * DAY
    assert store.purge_expired(now, dry_run=True) == {"logs": 9}
    assert len(store.partitions()) == 2
    assert store.purge_expired(now) == {"logs": 9}
    assert [lo for _, lo, _ in store.partitions()] == [T0 + 7 * DAY]
    assert store.count_records() == 6
    assert store.count_records(retention_class="inventory") == 1
    with store._tx() as cur:
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s "
                    "AND tablename LIKE 'records_x%%'", (store.schema,))
        assert cur.fetchone()[0] == 1


@on_postgres
def test_partition_with_restricted_row_is_kept(store):
    r = tagged(rec(0), "logs", T0 + DAY)
    store.write_batch(meta("b1"), [r, tagged(rec(1), "logs", T0 + 2 * DAY)])
    with store._tx() as cur:
        cur.execute("UPDATE records SET restricted = true WHERE id = %s", (r.record.id,))
    assert store.purge_expired(T0 + 30 * DAY) == {"logs": 1}
    assert len(store.partitions()) == 1
    assert store.count_records() == 1


@on_postgres
def test_changed_partition_width_never_overlaps(store_url):
    a = open_store(store_url)
    b = open_store(store_url + "&partition_days=1")
    try:
        a.migrate()
        a.write_batch(meta("b1"), [tagged(rec(0), "logs", T0 + DAY)])
        b.write_batch(meta("b2"), [tagged(rec(1), "logs", T0 + 7.5 * DAY),
                                   tagged(rec(2), "logs", T0 + 3 * DAY)])
        ranges = [(lo, hi) for _, lo, hi in a.partitions()]
        assert ranges == [(T0, T0 + 7 * DAY), (T0 + 7 * DAY, T0 + 8 * DAY)]
        assert a.count_records() == 3
    finally:
        a.close()
        b.close()


@on_postgres
def test_partition_dropped_by_another_worker_is_recreated(store_url):
    a, b = open_store(store_url), open_store(store_url)
    try:
        a.migrate()
        a.write_batch(meta("b1"), [tagged(rec(0), "logs", T0 + DAY)])
        assert b.purge_expired(T0 + 10 * DAY) == {"logs": 1}
        assert a.write_batch(meta("b2"), [tagged(rec(1), "logs", T0 + 2 * DAY)])
        assert a.count_records() == 1
    finally:
        a.close()
        b.close()


@on_postgres
def test_schemas_are_isolated(store_url, pg_dsn):
    from peers.pg import drop_schema, pg_schema_url

    other_url = pg_schema_url(pg_dsn, store_url.rsplit("schema=", 1)[1] + "_b")
    a, b = open_store(store_url), open_store(other_url)
    try:
        a.migrate()
        b.migrate()
        a.write_batch(meta("b1"), [tagged(rec(0))])
        assert a.count_records() == 1
        assert b.count_records() == 0
    finally:
        a.close()
        b.close()
        drop_schema(pg_dsn, other_url.rsplit("schema=", 1)[1])


def test_connection_failure_is_retryable_and_names_no_address():
    with pytest.raises(StoreRetryableError) as e:
        open_store("postgresql://postgres:s3cret@127.0.0.1:1/test?connect_timeout=2")
    assert "127.0.0.1" not in str(e.value)
    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize(("query", "why"), [
    ("schema=Bad-Name", "schema must match"),
    ("partition_days=0", "partition_days must be between"),
    ("partition_days=x", "partition_days must be a number"),
])
def test_bad_postgres_url_options(query, why):
    with pytest.raises(StorePermanentError, match=why):
        open_store(f"postgresql://postgres@127.0.0.1:5432/test?{query}")


@on_postgres
def test_purge_while_another_worker_writes(store_url):
    """Partition drops and row deletes run beside a writer: no deadlock, no live row lost,
    nothing expired left. Rows that arrive already expired while a partition is being
    dropped go with it uncounted, so the purged total is at most what was written."""
    import threading

    writer, purger = open_store(store_url), open_store(store_url)
    writer.migrate()
    now = T0 + 20 * DAY
    errors: list[BaseException] = []
    live = 0

    def write() -> None:
        nonlocal live
        try:
            for b in range(30):
                batch = [tagged(rec(i), "logs", T0 + (b % 10) * DAY) for i in range(5)]
                batch += [tagged(rec(i), "metrics", now + 30 * DAY) for i in range(5)]
                writer.write_batch(meta(f"b{b}"), batch)
                live += 5
        except BaseException as e:  # collected for the assertion below
            errors.append(e)

    t = threading.Thread(target=write)
    t.start()
    purged = 0
    try:
        while t.is_alive():
            purged += sum(purger.purge_expired(now).values())
        t.join(60)
        purged += sum(purger.purge_expired(now).values())
    finally:
        writer.close()
    try:
        assert errors == []
        assert 0 < purged <= 150
        assert purger.count_records() == live == 150
        assert purger.count_records(retention_class="logs") == 0
    finally:
        purger.close()
