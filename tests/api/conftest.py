"""API fixtures: a seeded store on SQLite or a throw-away PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_kit import Env, make_env


@pytest.fixture
def env(store_url: str) -> Iterator[Env]:
    e = make_env(store_url)
    try:
        yield e
    finally:
        e.client.close()
        e.api.close()
