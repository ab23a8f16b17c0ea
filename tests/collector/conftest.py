"""Store fixtures: the same tests run against SQLite and a throw-away PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from collector.store import Store, open_store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    s.migrate()
    try:
        yield s
    finally:
        s.close()
