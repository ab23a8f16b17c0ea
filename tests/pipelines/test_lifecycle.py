"""The component lifecycle: start once, idempotent close, safe close without start,
and `run_components` ordering and failure reporting."""

from __future__ import annotations

import asyncio

import pytest

from pipelines.lifecycle import Component, Lifecycle, LifecycleError, TaskComponent, run_components


class Part(Lifecycle):
    def __init__(self, name: str, log: list[str], *, fail_start: bool = False,
                 fail_close: bool = False) -> None:
        self.name, self.log = name, log
        self.fail_start, self.fail_close = fail_start, fail_close

    async def _start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.fail_start:
            raise OSError(f"{self.name} cannot bind")

    async def _close(self) -> None:
        self.log.append(f"close {self.name}")
        if self.fail_close:
            raise RuntimeError(f"{self.name} close failed")


async def test_close_is_idempotent_and_safe_without_start() -> None:
    log: list[str] = []
    p = Part("a", log)
    await p.close()
    await p.close()
    assert log == []
    with pytest.raises(LifecycleError, match="closed"):
        await p.start()
    q = Part("b", log)
    async with q:
        with pytest.raises(LifecycleError, match="starts once"):
            await q.start()
    await q.close()
    assert log == ["start b", "close b"]
    assert isinstance(q, Component)


async def test_run_components_starts_in_order_and_stops_in_reverse() -> None:
    log: list[str] = []
    stop = asyncio.Event()
    parts = [Part(n, log) for n in "abc"]
    seen: list[str] = []
    task = asyncio.create_task(run_components(parts, stop, on_started=lambda: seen.append("up")))
    while seen != ["up"]:
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert log == ["start a", "start b", "start c", "close c", "close b", "close a"]


async def test_a_failed_start_closes_what_started_and_raises_it() -> None:
    log: list[str] = []
    parts = [Part("a", log), Part("b", log, fail_start=True), Part("c", log)]
    with pytest.raises(OSError, match="b cannot bind"):
        await run_components(parts, asyncio.Event())
    assert log == ["start a", "start b", "close a"]


async def test_a_background_failure_stops_everything_and_is_raised_first() -> None:
    log: list[str] = []

    async def dies(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.01)
        raise ValueError("worker died")

    parts: list[Component] = [Part("a", log, fail_close=True), TaskComponent(dies),
                              Part("c", log)]
    with pytest.raises(ValueError, match="worker died"):
        await run_components(parts, asyncio.Event())
    assert log == ["start a", "start c", "close c", "close a"]


async def test_task_component_stops_on_close_and_cancels_after_grace() -> None:
    ran: list[str] = []

    async def polite(stop: asyncio.Event) -> None:
        await stop.wait()
        ran.append("stopped")

    async def stubborn(stop: asyncio.Event) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ran.append("cancelled")
            raise

    t1, t2 = TaskComponent(polite), TaskComponent(stubborn)
    t2.grace_s = 0.05
    for t in (t1, t2):
        await t.start()
        await t.close()
    assert ran == ["stopped", "cancelled"]
    assert t1.failure is None and t2.failure is None
