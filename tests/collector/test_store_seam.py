"""The store as one seam: registry without import cycle, the dialect as the only
place backends differ, one error translation per driver into permanent vs
retryable, and the query side's tables in the same migrations."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from collector_kit import BACKENDS, meta, rec, tagged

from collector.store import (
    SqlStore,
    StorePermanentError,
    StoreRetryableError,
    open_db,
    open_store,
)
from collector.store.registry import BACKENDS as REGISTRY

ROOT = Path(__file__).resolve().parents[2]
QUERY_TABLES = ("api_users", "audit_log", "dsr_requests", "annotations", "record_addresses",
                "indexed_records", "indexed_batches")


def test_base_and_registry_import_no_backend() -> None:
    code = ("import sys, collector.store, collector.store.base, collector.store.registry;"
            "print(sorted(m for m in sys.modules if m in ('collector.store.sqlite',"
            "'collector.store.postgres', 'psycopg')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_every_registered_backend_loads_and_has_migrations() -> None:
    import importlib

    from collector.store.base import migrations

    for scheme, target in REGISTRY.items():
        module, _, name = target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        assert callable(cls.from_url), scheme
        assert len(migrations(cls.backend)) >= 5, scheme


def test_no_module_outside_the_store_names_a_dialect() -> None:
    """What issue 11 asks: search, DSR, auth and audit never branch on the backend."""
    bad = re.compile(r'postgres"|dialect ==|sqlite"')
    found = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "collector").rglob("*.py")
             if "store" not in p.relative_to(ROOT / "collector").parts[:1]
             for i, line in enumerate(p.read_text().splitlines(), 1) if bad.search(line)]
    assert found == []


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_migrations_create_every_table_the_collector_owns(store_url: str) -> None:
    db = open_db(store_url)
    try:
        assert isinstance(db, SqlStore)
        with db.tx() as cur:
            for table in ("records", "batches", "quarantine", *QUERY_TABLES):
                cur.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        assert db.migrate() == db.schema_version()  # a second run changes nothing
    finally:
        db.close()


def test_open_db_without_migrating_refuses_an_empty_store(tmp_path: Path) -> None:
    with pytest.raises(StorePermanentError, match="no schema yet"):
        open_db(f"sqlite:///{tmp_path / 's.db'}", migrate=False)


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_dialect_pieces_work_on_the_backend(store_url: str) -> None:
    db = open_db(store_url)
    d = db.dialect
    try:
        r = rec(1, message="Peer DOWN")
        db.write_batch(meta("b1"), [tagged(r)])
        with db.tx(write=True) as cur:
            d.lock(cur, 0x7072697F)
            cur.execute(f"UPDATE records SET restricted = {d.true} WHERE id = ?", (r.id,))
            hit = cur.execute(f"SELECT fields FROM records WHERE {d.ilike('fields')} "
                              f"AND restricted = ?", ("%peer down%", d.bool(True))).fetchall()
            row = cur.execute("SELECT name FROM api_users WHERE name = ?" + d.row_lock,
                              ("nobody",)).fetchone()
            d.analyse(cur, ("records",))
            for _ in range(2):
                cur.execute(d.insert_ignore("indexed_records", ("tenant", "record_id", "ts")),
                            ("acme", r.id, r.ts))
        assert [d.json(f) for (f,) in hit] == [{"message": "Peer DOWN"}]
        assert row is None
        with db.tx() as cur:
            assert cur.execute("SELECT COUNT(*) FROM indexed_records").fetchone()[0] == 1
    finally:
        db.close()


def test_sqlite_busy_is_retryable_constraint_is_permanent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    db = open_store(url, busy_timeout_s=0.05)
    db.migrate()
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreRetryableError, match="busy"):
            db.write_batch(meta("b1"), [tagged(rec(1))])
    finally:
        other.execute("ROLLBACK")
        other.close()
    with pytest.raises(StorePermanentError) as e, db.tx(write=True) as cur:
        cur.execute("INSERT INTO api_users (name, role, tenants, token_id, token_hash, "
                    "created_at) VALUES ('x', NULL, 'x', 'x', 'x', 0)")
    assert not e.value.retryable
    db.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_postgres_lock_timeout_is_retryable(store_url: str) -> None:
    a, b = open_db(store_url), open_db(store_url, migrate=False)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with a.tx(write=True) as cur:
            cur.execute("LOCK TABLE api_users IN ACCESS EXCLUSIVE MODE")
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(30)
        with pytest.raises(StoreRetryableError, match="transient"), b.tx() as cur:
            cur.execute("SET LOCAL lock_timeout = '50ms'")
            cur.execute("SELECT COUNT(*) FROM api_users")
    finally:
        release.set()
        t.join(30)
        a.close()
        b.close()
