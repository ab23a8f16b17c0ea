"""Store fixtures: the same tests run against SQLite and a throw-away PostgreSQL schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_kit import drop_schema, pg_schema_url

from collector.store import Store, open_store


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    dsn = request.getfixturevalue("pg_dsn")
    schema = f"privtel_test_{os.urandom(6).hex()}"
    try:
        yield pg_schema_url(dsn, schema)
    finally:
        drop_schema(dsn, schema)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    s.migrate()
    try:
        yield s
    finally:
        s.close()
