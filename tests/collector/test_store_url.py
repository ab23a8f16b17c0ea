"""Choosing and opening a store by URL: bad URLs get a clear error and no secret."""

from __future__ import annotations

import os
import stat

import pytest

from collector.store import StorePermanentError, open_store
from collector.store.base import BatchMeta


def test_unknown_scheme_is_refused_without_echoing_the_url():
    with pytest.raises(StorePermanentError, match="unsupported store URL scheme 'mysql'") as e:
        open_store("mysql://root:hunter2@10.1.2.3/db")
    assert "hunter2" not in str(e.value)
    assert "10.1.2.3" not in str(e.value)


def test_sqlite_url_without_path_is_refused():
    with pytest.raises(StorePermanentError, match="URL needs a path"):
        open_store("sqlite://")


def test_sqlite_missing_directory_is_refused(tmp_path):
    with pytest.raises(StorePermanentError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/nope/store.db")


def test_sqlite_unknown_option_is_refused(tmp_path):
    with pytest.raises(StorePermanentError, match="unknown URL option 'journal'"):
        open_store(f"sqlite:///{tmp_path}/s.db?journal=off")


def test_sqlite_file_is_private_and_wal(tmp_path):
    path = tmp_path / "s.db"
    s = open_store(f"sqlite:///{path}")
    try:
        s.migrate()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        s.close()
    with pytest.raises(StorePermanentError, match="closed"):
        s.count_records()


def test_sqlite_memory_url():
    s = open_store("sqlite:///:memory:")
    try:
        assert s.migrate() >= 1
        assert s.count_records() == 0
    finally:
        s.close()


def test_schema_newer_than_code_is_refused(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/s.db")
    try:
        s.migrate()
        s._db.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
        with pytest.raises(StorePermanentError, match="newer than this privtel"):
            s.migrate()
    finally:
        s.close()


@pytest.mark.parametrize(("field", "value", "why"), [
    ("agent_id", "", "agent_id must match"),
    ("batch_id", "a b", "batch_id must match"),
    ("seq", -1, "seq must be a non-negative integer"),
])
def test_batch_meta_validation(field, value, why):
    args = {"agent_id": "a", "batch_id": "b", "seq": 0, "tenant": "acme", "created": 1.0,
            "received_at": 1.0, field: value}
    with pytest.raises(StorePermanentError, match=why):
        BatchMeta(**args)


def test_sqlite_relative_path_follows_sqlalchemy_convention(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = open_store("sqlite:///rel.db")
    try:
        s.migrate()
    finally:
        s.close()
    assert (tmp_path / "rel.db").exists()


def test_config_urls_resolve_relative_sqlite_paths_only(tmp_path):
    from collector.store.registry import resolve_url

    assert resolve_url("sqlite:///data/s.db?synchronous=normal", tmp_path) == \
        f"sqlite:///{tmp_path}/data/s.db?synchronous=normal"
    assert resolve_url("sqlite:////var/s.db", tmp_path) == "sqlite:////var/s.db"
    assert resolve_url("sqlite:///:memory:", tmp_path) == "sqlite:///:memory:"
    pg = "postgresql://u@127.0.0.1/db?schema=x"
    assert resolve_url(pg, tmp_path) == pg
    with pytest.raises(StorePermanentError, match="unsupported store URL scheme 'mysql'"):
        resolve_url("mysql://x", tmp_path)
