"""CheckAhead: checks run on threads ahead of settling, results come back in arrival order."""

from __future__ import annotations

import asyncio
import threading

import pytest

from collector.ingest_pool import CheckAhead, default_threads


async def test_results_come_back_in_arrival_order_though_threads_finish_out_of_order():
    ahead: CheckAhead[int, tuple[int, str]] = CheckAhead(threads=3, depth=3)
    release = [threading.Event() for _ in range(3)]

    def check(i: int) -> tuple[int, str]:
        release[i].wait(10)
        return i, threading.current_thread().name

    for i in range(3):
        await ahead.put(i, check, i)
    for e in reversed(release):  # the last one finishes first
        e.set()
    got = [await ahead.get() for _ in range(3)]
    assert [d for d, _ in got] == [0, 1, 2]
    assert [r[0] for _, r in got] == [0, 1, 2]
    assert all(r[1].startswith("privtel-check") for _, r in got)
    ahead.close()
    ahead.close()


async def test_the_window_is_bounded_and_a_failed_check_raises_at_its_turn():
    ahead: CheckAhead[int, int] = CheckAhead(threads=1, depth=2)
    gate = threading.Event()

    def slow(i: int) -> int:
        gate.wait(10)
        return i

    def broken(i: int) -> int:
        raise ValueError(f"bad {i}")

    await ahead.put(0, slow, 0)
    await ahead.put(1, broken, 1)
    third = asyncio.ensure_future(ahead.put(2, slow, 2))
    await asyncio.sleep(0.05)
    assert not third.done()  # two checks outstanding: the reader waits
    gate.set()
    assert await ahead.get() == (0, 0)
    await asyncio.wait_for(third, 10)
    with pytest.raises(ValueError, match="bad 1"):
        await ahead.get()
    assert await ahead.get() == (2, 2)
    await ahead.fail(ConnectionError("stream ended"))
    with pytest.raises(ConnectionError):
        await ahead.get()
    ahead.close()


async def test_close_drops_what_was_not_taken():
    ahead: CheckAhead[int, int] = CheckAhead(threads=1, depth=4)
    for i in range(3):
        await ahead.put(i, lambda i: i, i)
    ahead.close()
    with pytest.raises(RuntimeError):
        await ahead.put(9, lambda i: i, 9)  # the pool is shut down


async def test_without_threads_checks_run_inline_in_order():
    ahead: CheckAhead[int, str] = CheckAhead(threads=0, depth=2)
    caller = threading.current_thread().name

    def where(i: int) -> str:
        if i == 1:
            raise KeyError(i)
        return threading.current_thread().name

    for i in range(2):
        await ahead.put(i, where, i)
    assert await ahead.get() == (0, caller)
    with pytest.raises(KeyError):
        await ahead.get()
    ahead.close()


def test_default_pool_is_one_thread_per_core_and_refuses_negative():
    assert default_threads() >= 1
    assert CheckAhead(threads=None).threads == default_threads()
    with pytest.raises(ValueError):
        CheckAhead(threads=-1)
