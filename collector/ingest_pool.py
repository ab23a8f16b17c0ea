"""Checks of the next batches on a thread pool, handed back in arrival order.

`IngestWorker` checks (verifies, decrypts, decodes) a batch before it settles
the one before. `CheckAhead` runs those checks for up to `depth` messages at a
time on a `ThreadPoolExecutor` sized to the cores, so the event loop stays
free to read the broker and to settle, and the parts that release the GIL
(Ed25519, HPKE, zstd) overlap with the commit. Results come out strictly in
arrival order, whatever order the threads finish in, so the settling stage
still sees what a one-message-at-a-time worker would see, and a batch is still
acknowledged only after its own commit.

Threads rather than processes: a process pool would pickle each decoded batch
back (a Record per row), which costs more than the decoding it moves away.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
D = TypeVar("D")


def default_threads() -> int:
    """One thread per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class CheckAhead(Generic[D, T]):
    """A bounded, ordered window of checks running ahead of the settling stage.

    `threads=0` runs each check on the event loop as it is put (the pipelining
    of one check ahead of the commit stays). `put(delivery, fn, *args)` waits
    while `depth` checks are outstanding; `get()` returns the oldest
    (delivery, result), raising what the check raised. `close()` is
    idempotent and drops what was not taken (never acknowledged, so the
    broker delivers it again)."""

    def __init__(self, threads: int | None = None, depth: int | None = None,
                 name: str = "privtel-check") -> None:
        self.threads = default_threads() if threads is None else threads
        if self.threads < 0:
            raise ValueError("threads must be 0 (check on the event loop) or more")
        self._pool = (ThreadPoolExecutor(self.threads, thread_name_prefix=name)
                      if self.threads else None)
        self._queue: asyncio.Queue[tuple[D, asyncio.Future[T]] | BaseException] = \
            asyncio.Queue(depth or self.threads + 1)
        self._closed = False

    async def put(self, delivery: D, fn: Callable[..., T], *args: object) -> None:
        """Start the check now (run it, without threads); wait for room in the window first."""
        loop = asyncio.get_running_loop()
        if self._pool is not None:
            future = loop.run_in_executor(self._pool, fn, *args)
        else:
            future = loop.create_future()
            try:
                future.set_result(fn(*args))
            except Exception as e:
                future.set_exception(e)
        await self._queue.put((delivery, future))

    async def fail(self, error: BaseException) -> None:
        """Hand an error (the message stream ended or broke) to the taker, in order."""
        await self._queue.put(error)

    async def get(self) -> tuple[D, T]:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        delivery, future = item
        return delivery, await future

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not isinstance(item, BaseException):
                item[1].cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["CheckAhead", "default_threads"]
