"""The fault suite's own broker: one Mosquitto per test, on its own port and state dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import FaultBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[FaultBroker]:
    b = FaultBroker.persistent(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()
