"""Agent heartbeat: proof of life and the device inventory, every `interval_s`.

Why: a collector that hears nothing cannot tell a quiet site from a dead one.
The heartbeat is a set of ordinary `agent.heartbeat` health records (one per
listed device: protocol, poll interval, last known up/reason; one `listed=0`
record when the agent has no device), so it is pseudonymised, sealed, spooled
and shipped like everything else: inside the batches that carry polls, and in
a batch of its own when nothing else is pending (the batcher seals by age).
The collector turns an agent silent after a multiple of `interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from agents.pollers import HEALTH_NAME, Device
from pipelines.lifecycle import Lifecycle
from pipelines.record import Kind, Record
from pipelines.vocab import RecordName

log = logging.getLogger(__name__)
HEARTBEAT_NAME = RecordName.AGENT_HEARTBEAT


class Health:
    """The last `device.health` seen per device name, for the inventory."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[int, str | None]] = {}

    def note(self, records: Sequence[Record]) -> None:
        for r in records:
            if r.name == HEALTH_NAME:
                reason = r.fields.get("reason")
                self.last[r.device] = (1 if r.fields.get("up") else 0,
                                       reason if isinstance(reason, str) else None)


def heartbeat_records(*, tenant: str, site: str, agent_id: str, interval_s: float,
                      devices: Sequence[Device], health: Health, now: float) -> list[Record]:
    """One heartbeat: raw device names (the pseudonymiser tokenises them like any record)."""
    n = len(devices)
    if not devices:
        return [Record(Kind.HEALTH, tenant, site, f"agent:{agent_id}", HEARTBEAT_NAME,
                       {"listed": 0, "devices": 0, "interval_s": interval_s}, ts=now)]
    out = []
    for d in devices:
        fields: dict[str, str | int | float | None] = {
            "listed": 1, "devices": n, "interval_s": interval_s, "protocol": d.protocol,
            "poll_interval_s": d.interval_s}
        last = health.last.get(d.name)
        if last is not None:
            fields["up"], fields["reason"] = last
        out.append(Record(Kind.HEALTH, tenant, d.site, d.name, HEARTBEAT_NAME, fields, ts=now))
    return out


class Heartbeat(Lifecycle):
    """Emits a heartbeat at start and every `interval_s`; a failed emit is logged and
    retried at the next beat (the spool, not the heartbeat, is what must not lose data)."""

    def __init__(self, emit: Callable[[list[Record]], Awaitable[None]],
                 devices: Callable[[], Sequence[Device]], health: Health, *, tenant: str,
                 site: str, agent_id: str, interval_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        if interval_s <= 0:
            raise ValueError("heartbeat interval must be positive")
        self._emit, self._devices, self.health = emit, devices, health
        self.tenant, self.site, self.agent_id, self.interval_s = tenant, site, agent_id, interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    async def beat(self) -> None:
        await self._emit(heartbeat_records(
            tenant=self.tenant, site=self.site, agent_id=self.agent_id,
            interval_s=self.interval_s, devices=self._devices(), health=self.health,
            now=self._clock()))
        self.sent += 1

    async def _loop(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception as e:
                log.warning("heartbeat not sent (%s); next try in %.0f s", type(e).__name__,
                            self.interval_s)
            await asyncio.sleep(self.interval_s)

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="privtel-heartbeat")

    async def _close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
