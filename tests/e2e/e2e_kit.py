"""Shared steps of the end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from factories import write_private as write_private


def unique_tenant(prefix: str) -> str:
    """A tenant (and so a topic) no other test run uses on the shared broker."""
    return f"{prefix}{os.getpid()}{int(time.time() * 1000) % 10_000_000}"


async def wait_for(pred: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(pred):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not met within {timeout}s")


