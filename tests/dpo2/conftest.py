"""The API tests' builders (`api_kit`) serve these tests too: a seeded store
whose records were pseudonymised with known tenant keys, users, TOTP codes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from api_kit import Env, make_env


@pytest.fixture
def env(store_url: str) -> Iterator[Env]:
    e = make_env(store_url)
    try:
        yield e
    finally:
        e.client.close()
        e.api.close()
