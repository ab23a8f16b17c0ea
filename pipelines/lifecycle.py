"""One shape for every long-lived part: `start`, idempotent `close`, async context manager.

`Component` is the protocol the runtimes depend on; `Lifecycle` is a base that
gets the rules right once (start once, close many times, close without start
is a no-op, a background failure is remembered) so each component writes only
its own `_start` and `_close`. `run_components` is how `Agent.run` and
`Collector.run` drive a list of them: start in order, run until `stop` or the
first failure, close in reverse, raise the first failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

log = logging.getLogger(__name__)


class LifecycleError(RuntimeError):
    """A component was started twice, or after it was closed."""


@runtime_checkable
class Component(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Lifecycle:
    """Base for components; subclasses override `_start` and `_close`.

    `close` runs `_close` at most once and only after a `start` that began, so it
    is safe from `finally` blocks whatever happened before. A component whose
    background work dies calls `_fail(exc)`; `run_components` stops the whole
    set on it."""

    _lc_started = False
    _lc_closed = False
    _lc_failure: BaseException | None = None
    _lc_failed: asyncio.Event | None = None

    async def start(self) -> None:
        if self._lc_closed:
            raise LifecycleError(f"{type(self).__name__} is closed")
        if self._lc_started:
            raise LifecycleError(f"{type(self).__name__} starts once")
        self._lc_started = True
        await self._start()

    async def close(self) -> None:
        if self._lc_closed:
            return
        self._lc_closed = True
        if self._lc_started:
            await self._close()

    @property
    def started(self) -> bool:
        return self._lc_started and not self._lc_closed

    async def _start(self) -> None:
        """Acquire what the component holds; raise if it cannot run."""

    async def _close(self) -> None:
        """Release it; called once, only after `_start` began."""

    def _fail(self, exc: BaseException) -> None:
        if self._lc_failure is None:
            self._lc_failure = exc
        self._failed_event().set()

    def _failed_event(self) -> asyncio.Event:
        if self._lc_failed is None:
            self._lc_failed = asyncio.Event()
        return self._lc_failed

    @property
    def failure(self) -> BaseException | None:
        return self._lc_failure

    async def wait_failed(self) -> BaseException:
        await self._failed_event().wait()
        assert self._lc_failure is not None
        return self._lc_failure

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class TaskComponent(Lifecycle):
    """A component that is one background coroutine, `_main(stop)`: `close` sets `stop`,
    waits `grace_s` for it to finish, then cancels it. An exception ending `_main`
    is the component's failure."""

    grace_s = 5.0

    def __init__(self, main: Callable[[asyncio.Event], Awaitable[None]] | None = None, *,
                 name: str = "") -> None:
        self._main_fn = main
        self._name = name or type(self).__name__
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def _main(self, stop: asyncio.Event) -> None:
        if self._main_fn is None:
            raise NotImplementedError("pass main= or override _main")
        await self._main_fn(stop)

    async def _start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._main(self._stop), name=self._name)
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fail(task.exception())  # type: ignore[arg-type]

    async def _close(self) -> None:
        assert self._stop is not None and self._task is not None
        self._stop.set()
        done, _ = await asyncio.wait({self._task}, timeout=self.grace_s)
        if not done:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


async def run_components(components: Sequence[Component], stop: asyncio.Event, *,
                         on_started: Callable[[], None] | None = None) -> None:
    """Start `components` in order (then call `on_started`), wait for `stop` or the first
    component failure,
    close them in reverse order (every one, even if some close raises), then raise
    the first failure: a start error, a background failure, or else a close error."""
    started: list[Component] = []
    first: BaseException | None = None
    try:
        for c in components:
            await c.start()
            started.append(c)
        if on_started is not None:
            on_started()
        waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
        waiters += [asyncio.ensure_future(c.wait_failed()) for c in started
                    if isinstance(c, Lifecycle)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        failed = next((c for c in started
                       if isinstance(c, Lifecycle) and c.failure is not None), None)
        if failed is not None:
            first = failed.failure
            log.error("%s failed (%s); stopping the others", type(failed).__name__,
                      type(first).__name__)
    except BaseException as e:
        first = e
    finally:
        for c in reversed(started):
            try:
                await c.close()
            except Exception as e:
                log.error("closing %s failed: %s", type(c).__name__, type(e).__name__)
                if first is None:
                    first = e
    if first is not None:
        raise first
