"""The per-agent sequence window: a replayed batch is refused, a late one accepted.

Each agent numbers its batches. A batch whose number is far behind the
highest one stored, or reuses a number with another batch id, is `replayed`;
the same (agent, batch) is a `duplicate`. A number far *ahead* of the highest
(more than `max_jump`) is refused as `sequence_jump` and parked instead of
adopted: adopting it would put every later batch of that agent behind the
window, locking the agent out.

`StoreSequences` keeps the window in the store (`agent_sequence`, and the
`batches` table for which batch used a number), so a restart or another
worker of the share group sees the same window. Which batch used a number is
exact (it commits with the batch); the highest number is written only when it
moved by more than a tenth of the window, so a batch costs one read and not a
second write transaction (an fsync): the stored highest may lag by that much,
which widens the window by as much and never refuses a good batch. Replays of
parked batches never move it (`IngestWorker.replay`), so replaying a batch
parked for `sequence_jump` cannot lock its agent out either. `MemorySequences` is the
same rule for a worker without a store (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from collector.parking import Refused
from collector.store import SqlStore
from pipelines.envelope import EnvelopeError, Header

DEFAULT_WINDOW = 10_000
DEFAULT_MAX_JUMP = 1_000_000


class Sequences(Protocol):
    async def check(self, h: Header) -> None:
        """Raise `EnvelopeError` (replayed, duplicate) or `Refused` (sequence_jump)."""
        ...

    async def remember(self, h: Header) -> None:
        """After the batch was stored (or found stored before)."""
        ...


def judge(h: Header, highest: int | None, used_by: str | None, *, window: int,
          max_jump: int) -> None:
    """The one rule, given the agent's highest stored number and the batch that used
    `h.seq` (None when none did)."""
    if used_by == h.batch_id:
        raise EnvelopeError("duplicate", f"batch {h.batch_id} already committed")
    if used_by is not None:
        raise EnvelopeError("replayed", f"sequence {h.seq} was already used by another "
                            "batch of this agent")
    if highest is None:
        return
    if h.seq <= highest - window:
        raise EnvelopeError("replayed", f"sequence {h.seq} is behind the window "
                            f"(highest seen {highest})")
    if h.seq > highest + max_jump:
        raise Refused("sequence_jump", f"sequence {h.seq} is more than {max_jump} ahead of "
                      f"the highest seen ({highest}); parked, not adopted")


@dataclass
class _Window:
    highest: int = -1
    seen: dict[int, str] = field(default_factory=dict)


class MemorySequences:
    """In-process window: forgotten on restart (the store's dedupe still holds)."""

    def __init__(self, window: int = DEFAULT_WINDOW, max_jump: int = DEFAULT_MAX_JUMP) -> None:
        self.window, self.max_jump = window, max_jump
        self._agents: dict[str, _Window] = {}

    async def check(self, h: Header) -> None:
        w = self._agents.get(h.agent_id)
        if w is not None:
            judge(h, w.highest, w.seen.get(h.seq), window=self.window, max_jump=self.max_jump)

    async def remember(self, h: Header) -> None:
        w = self._agents.setdefault(h.agent_id, _Window())
        w.seen[h.seq] = h.batch_id
        if h.seq > w.highest:
            w.highest = h.seq
            if len(w.seen) > 2 * self.window:
                floor = w.highest - self.window
                w.seen = {s: b for s, b in w.seen.items() if s > floor}


class StoreSequences:
    """The window in the store: shared by workers, kept across restarts."""

    def __init__(self, db: SqlStore, window: int = DEFAULT_WINDOW,
                 max_jump: int = DEFAULT_MAX_JUMP) -> None:
        if window <= 0 or max_jump <= 0:
            raise ValueError("window and max_jump must be positive")
        self.db, self.window, self.max_jump = db, window, max_jump
        self._slack = max(1, window // 10)
        self._stored: dict[str, int] = {}  # agent -> highest as last read or written

    def state(self, agent_id: str, seq: int) -> tuple[int | None, str | None]:
        with self.db.tx() as cur:  # one round trip: this runs once per batch
            highest, used = cur.execute(
                "SELECT (SELECT highest FROM agent_sequence WHERE agent_id = ?), "
                "(SELECT batch_id FROM batches WHERE agent_id = ? AND seq = ? LIMIT 1)",
                (agent_id, agent_id, seq)).fetchone()
        return (None if highest is None else int(highest)), (None if used is None else str(used))

    def advance(self, agent_id: str, seq: int) -> None:
        with self.db.tx(write=True) as cur:
            cur.execute("INSERT INTO agent_sequence (agent_id, highest, updated_at) VALUES "
                        "(?, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET highest = CASE WHEN "
                        "excluded.highest > agent_sequence.highest THEN excluded.highest ELSE "
                        "agent_sequence.highest END, updated_at = excluded.updated_at",
                        (agent_id, seq, time.time()))

    async def check(self, h: Header) -> None:
        highest, used = await asyncio.to_thread(self.state, h.agent_id, h.seq)
        if highest is None:
            self._stored.pop(h.agent_id, None)
        else:
            self._stored[h.agent_id] = highest
        judge(h, highest, used, window=self.window, max_jump=self.max_jump)

    async def remember(self, h: Header) -> None:
        stored = self._stored.get(h.agent_id)
        if stored is None or h.seq > stored + self._slack:
            await asyncio.to_thread(self.advance, h.agent_id, h.seq)
            self._stored[h.agent_id] = h.seq if stored is None else max(stored, h.seq)


__all__ = ["DEFAULT_MAX_JUMP", "DEFAULT_WINDOW", "MemorySequences", "Sequences",
           "StoreSequences", "judge"]
