"""Polls every device on its own interval, whatever its protocol, and hands records on.

Each device runs in its own task, so a slow or dead device only ever costs its
own time: it never holds up another device's schedule. First polls are spread
across the interval with jitter so a thousand devices do not fire at once; a
global semaphore caps concurrent polls; a device whose health says `up=0`
backs off exponentially (capped) and returns to its interval on the first good
poll. `reload()` swaps the device set without cancelling polls in flight:
removed devices stop after their current poll, changed ones use the new
settings from their next poll.

Self-metrics go to the `CollectorRegistry` passed in (never the global one):
poll duration, schedule lag, polls by result, devices in backoff, in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agents.pollers import REGISTRY, Device, Poller, PollerContext, health_record
from pipelines.record import Record
from pipelines.vocab import Reason, RecordName

log = logging.getLogger(__name__)

Emit = Callable[[list[Record]], Awaitable[None]]
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(slots=True)
class _Slot:
    device: Device
    task: asyncio.Task[None] | None = None
    in_flight: bool = False
    stopping: bool = False
    failures: int = 0
    polls: int = 0
    next_due: float = 0.0
    last: list[Record] = field(default_factory=list)


class SchedulerError(RuntimeError):
    pass


class Scheduler:
    """Per-device poll loops under one concurrency limit; see the module docstring."""

    def __init__(self, devices: Iterable[Device], emit: Emit, *, registry: CollectorRegistry,
                 max_concurrent: int = 64, spread: float = 1.0, backoff_max_s: float = 900.0,
                 pollers: Mapping[str, Poller] | None = None,
                 context: PollerContext | None = None,
                 rng: random.Random | None = None) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if not 0.0 <= spread <= 1.0:
            raise ValueError("spread must be between 0 and 1 (a fraction of the interval)")
        if backoff_max_s <= 0:
            raise ValueError("backoff_max_s must be positive")
        self._emit = emit
        self._sem = asyncio.Semaphore(max_concurrent)
        self._spread = spread
        self._backoff_max = backoff_max_s
        self._pollers: dict[str, Poller] = dict(pollers or {})
        self._context = context
        self._own_pollers: set[str] = set()
        self._rng = rng or random.Random()
        self._slots: dict[str, _Slot] = {}
        self._pending = list(devices)
        self._names_check(self._pending)
        self._started = False
        self._closed = False
        self.m_duration = Histogram("privtel_poll_duration_seconds", "Time one device poll took",
                                    ["protocol"], registry=registry, buckets=_BUCKETS)
        self.m_lag = Histogram("privtel_poll_lag_seconds",
                               "How late a poll started against its schedule",
                               ["protocol"], registry=registry, buckets=_BUCKETS)
        self.m_polls = Counter("privtel_polls", "Polls by protocol and result (ok or reason)",
                               ["protocol", "result"], registry=registry)
        self.m_backoff = Gauge("privtel_devices_in_backoff",
                               "Devices polled less often because they are down",
                               registry=registry)
        self.m_in_flight = Gauge("privtel_polls_in_flight", "Polls running now",
                                 registry=registry)
        self.m_devices = Gauge("privtel_devices", "Devices scheduled", registry=registry)
        self.m_loop_errors = Counter("privtel_poll_loop_errors",
                                     "Poll cycles that failed outside the poller (a bad record, "
                                     "a broken health record); the loop goes on",
                                     registry=registry)

    @staticmethod
    def _names_check(devices: Sequence[Device]) -> None:
        seen: set[str] = set()
        for d in devices:
            if d.name in seen:
                raise SchedulerError(f"duplicate device name {d.name!r}")
            seen.add(d.name)

    def poller(self, protocol: str) -> Poller:
        p = self._pollers.get(protocol)
        if p is None:
            spec = REGISTRY.get(protocol)
            if spec is None:
                raise SchedulerError(f"no poller registered for protocol {protocol!r}")
            if self._context is None:
                raise SchedulerError(f"no poller for {protocol!r} was given and there is no "
                                     "PollerContext to build one (pass context= or pollers=)")
            p = self._pollers[protocol] = spec.make(self._context)
            self._own_pollers.add(protocol)
        return p

    async def start(self) -> None:
        """Start one loop per device; first polls spread over `spread` x interval."""
        if self._closed:
            raise SchedulerError("scheduler is closed")
        if self._started:
            raise SchedulerError("scheduler already started")
        self._started = True
        devices, self._pending = self._pending, []
        for d in devices:
            self._add(d)

    def _add(self, d: Device) -> None:
        self.poller(d.protocol)
        first = self._rng.uniform(0, d.interval_s * self._spread)
        slot = _Slot(d, next_due=time.monotonic() + first)
        slot.task = asyncio.create_task(self._loop(slot), name=f"poll:{d.name}")
        self._slots[d.name] = slot
        self.m_devices.set(len(self._slots))

    def reload(self, devices: Iterable[Device]) -> None:
        """Swap in a new device set; in-flight polls finish and are emitted."""
        new = list(devices)
        self._names_check(new)
        if not self._started:
            self._pending = new
            return
        wanted = {d.name: d for d in new}
        for name, slot in list(self._slots.items()):
            if name not in wanted:
                self._drop(name, slot)
        for name, d in wanted.items():
            existing = self._slots.get(name)
            if existing is None:
                self._add(d)
                continue
            slot = existing
            if slot.device != d:
                self.poller(d.protocol)
                interval_changed = slot.device.interval_s != d.interval_s
                slot.device = d
                if interval_changed and not slot.in_flight and slot.task is not None:
                    # restart the sleep so the new interval applies now, not after the old one
                    slot.task.cancel()
                    slot.next_due = time.monotonic() + self._rng.uniform(
                        0, d.interval_s * self._spread)
                    slot.task = asyncio.create_task(self._loop(slot), name=f"poll:{name}")
        self.m_devices.set(len(self._slots))
        self._update_backoff()

    def _drop(self, name: str, slot: _Slot) -> None:
        del self._slots[name]
        slot.stopping = True
        forget = getattr(self._pollers.get(slot.device.protocol), "forget", None)
        if callable(forget):  # optional: lets a poller free per-device state
            forget(name)
        if not slot.in_flight and slot.task is not None:
            slot.task.cancel()

    def _update_backoff(self) -> None:
        self.m_backoff.set(sum(1 for s in self._slots.values() if s.failures))

    def _delay(self, slot: _Slot) -> float:
        base = slot.device.interval_s
        if slot.failures == 0:
            return base
        return min(base * 2 ** min(slot.failures - 1, 30), max(base, self._backoff_max))

    async def _loop(self, slot: _Slot) -> None:
        while not slot.stopping:
            await asyncio.sleep(max(0.0, slot.next_due - time.monotonic()))
            if slot.stopping:
                return
            try:
                await self._cycle(slot)
            except Exception as e:  # nothing a device or its records do may end its loop
                self.m_loop_errors.inc()
                log.warning("poll cycle of %s failed: %s", slot.device.name, type(e).__name__)
            slot.next_due += self._delay(slot)
            now = time.monotonic()
            if slot.next_due < now:  # we overran: skip missed slots rather than burst
                slot.next_due = now

    async def _cycle(self, slot: _Slot) -> None:
        async with self._sem:
            slot.in_flight = True
            self.m_in_flight.inc()
            try:
                records = await self._poll_one(slot)
            finally:
                slot.in_flight = False
                self.m_in_flight.dec()
        kept = False
        try:
            await self._emit(records)
            kept = True
        except Exception as e:  # the sink's trouble must not stop polling
            log.warning("emit failed for a poll of %s: %s", slot.device.name,
                        type(e).__name__)
        try:
            await self.poller(slot.device.protocol).settled(slot.device, kept)
        except Exception as e:
            log.warning("poller could not settle a poll of %s: %s", slot.device.name,
                        type(e).__name__)

    async def _poll_one(self, slot: _Slot) -> list[Record]:
        d = slot.device
        lag = max(0.0, time.monotonic() - slot.next_due)
        self.m_lag.labels(d.protocol).observe(lag)
        started_wall = time.time()
        t0 = time.monotonic()
        try:
            records = await asyncio.wait_for(self.poller(d.protocol).poll(d),
                                             timeout=max(d.interval_s, 1.0) * 2)
        except TimeoutError:
            records = [health_record(d, up=False, reason=Reason.TIMEOUT, started=started_wall)]
        except Exception as e:  # a poller broke its contract; still data, never fatal
            log.warning("poller for %s raised %s", d.name, type(e).__name__)
            records = [health_record(d, up=False, reason=Reason.ERROR, started=started_wall)]
        self.m_duration.labels(d.protocol).observe(time.monotonic() - t0)
        up, reason = _health(records)
        self.m_polls.labels(d.protocol, "ok" if up else (reason or "error")).inc()
        slot.failures = 0 if up else slot.failures + 1
        slot.polls += 1
        slot.last = records
        self._update_backoff()
        return records

    async def poll_once(self) -> list[Record]:
        """Every device polled once, concurrently under the limit: `agent poll-once`."""
        devices = [s.device for s in self._slots.values()] or list(self._pending)

        async def one(d: Device) -> list[Record]:
            async with self._sem:
                return await self._poll_one(_Slot(d, next_due=time.monotonic()))

        out: list[Record] = []
        for recs in await asyncio.gather(*(one(d) for d in devices)):
            out.extend(recs)
        return out

    def stats(self) -> dict[str, dict[str, int]]:
        """Per-device poll counts and consecutive failures (for tests and status)."""
        return {n: {"polls": s.polls, "failures": s.failures} for n, s in self._slots.items()}

    async def close(self) -> None:
        """Stop scheduling; waits for polls in flight; closes pollers this scheduler made."""
        self._closed = True
        slots = list(self._slots.values())
        self._slots.clear()
        for s in slots:
            s.stopping = True
            if not s.in_flight and s.task is not None:
                s.task.cancel()
        tasks = [s.task for s in slots if s.task is not None]
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for proto in self._own_pollers:
            await self._pollers[proto].close()

    def install_sighup(self, load_devices: Callable[[], Sequence[Device]]) -> None:
        """Reload the device set from `load_devices()` on SIGHUP; a bad config is logged
        and the running set kept."""

        def handler() -> None:
            try:
                devices = load_devices()
            except Exception as e:
                log.error("config reload failed, keeping current devices: %s", e)
                return
            self.reload(devices)
            log.info("config reloaded: %d devices", len(self._slots))

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, handler)


def _health(records: list[Record]) -> tuple[bool, str | None]:
    for r in records:
        if r.name == RecordName.DEVICE_HEALTH:
            reason = r.fields.get("reason")
            return bool(r.fields.get("up")), reason if isinstance(reason, str) else None
    return False, Reason.ERROR
