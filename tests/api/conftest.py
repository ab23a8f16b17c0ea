"""API fixtures: a seeded store on SQLite or a throw-away PostgreSQL schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from api_kit import Env, make_env


def _drop(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    dsn = request.getfixturevalue("pg_dsn")
    schema = f"privtel_api_{os.urandom(6).hex()}"
    sep = "&" if "?" in dsn else "?"
    try:
        yield f"{dsn}{sep}schema={schema}"
    finally:
        _drop(dsn, schema)


@pytest.fixture
def env(store_url: str) -> Iterator[Env]:
    e = make_env(store_url)
    try:
        yield e
    finally:
        e.client.close()
        e.api.close()
