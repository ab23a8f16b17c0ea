"""Parked batches: rejections an operator can undo.

A batch refused for a cause someone can fix (a wrong or missing collector key,
an agent not registered yet, a key mix-up, residency, a sequence jump, a
record for a site or kind the agent is not bound to, the store refusing it
for good) is kept with its sealed bytes and acknowledged, so the agent may
forget it without losing it. The bytes are encrypted to the collector and
signed by the agent: parking them exposes nothing the broker did not carry.
Garbage and forgeries (malformed, wrong topic, failed decryption, replays)
are still quarantined as a digest and a size only.

`privtel collector parked replay` runs a parked batch through the same
checks again (`collector.replay`); the store's (agent, batch) key makes a
replay of a batch stored meanwhile a duplicate, so a batch is stored at most
once however often it is parked or replayed. Parked batches expire by the
`parked_batches` setting of the retention policy's `[operational]` table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from collector.store import SqlStore
from pipelines.digest import sha256_hex
from pipelines.envelope import Header

PARK_REASONS = ("unknown_agent", "bad_signature", "unknown_key", "invalid_record",
                "residency", "site", "kind", "sequence_jump", "store_refused")
"""Why a batch is parked; the label values of `privtel_batches_parked_total`."""

PARKED_ENVELOPE_REASONS = frozenset({"unknown_agent", "bad_signature", "unknown_key",
                                     "invalid_record"})
"""Envelope rejections that are parked rather than quarantined. `invalid_record`
is only ever raised after the signature verified and the body decrypted, so the
batch is an authentic one from a registered agent (a producer bug, or a record
kind this collector does not know yet): keeping it loses nothing."""

UNAUTHENTICATED = frozenset({"unknown_agent", "bad_signature"})
"""Parked before the signature verified: the header is only a claim, so nothing
is said to the agent it names (a forger must not make an agent drop a batch)."""

_DETAIL_MAX = 500
_COLS = ("id", "parked_at", "last_parked_at", "reason", "detail", "topic", "tenant",
         "agent_id", "batch_id", "seq", "size", "attempts")


class Refused(Exception):
    """A batch the collector refuses by its own rules; it is parked under `reason`.
    `records` counts the offending records by reason (`site`, `kind`)."""

    def __init__(self, reason: str, detail: str,
                 records: dict[str, int] | None = None) -> None:
        if reason not in PARK_REASONS:
            raise ValueError(f"unknown park reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.records = reason, detail, records or {}


@dataclass(frozen=True, slots=True)
class ParkedBatch:
    id: str
    parked_at: float
    last_parked_at: float
    reason: str
    detail: str
    topic: str
    tenant: str | None
    agent_id: str | None
    batch_id: str | None
    seq: int | None
    size: int
    attempts: int


class ParkingLot:
    """The `parked_batches` table of a store. Blocking; ingest calls `park_async`."""

    def __init__(self, db: SqlStore, clock: Callable[[], float] = time.time) -> None:
        self.db, self._clock = db, clock

    def park(self, reason: str, topic: str, header: Header | None, payload: bytes,
             detail: str) -> str:
        """Keep `payload`; returns its id. The same bytes parked again keep their
        first time (expiry counts from it) and take the latest reason."""
        if reason not in PARK_REASONS:
            raise ValueError(f"unknown park reason {reason!r}")
        pid, now = sha256_hex(payload), self._clock()
        h = header
        with self.db.tx(write=True) as cur:
            cur.execute(
                "INSERT INTO parked_batches (id, parked_at, last_parked_at, reason, detail, "
                "topic, tenant, agent_id, batch_id, seq, size, attempts, payload) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) ON CONFLICT (id) DO UPDATE SET "
                "last_parked_at = excluded.last_parked_at, reason = excluded.reason, "
                "detail = excluded.detail, attempts = parked_batches.attempts + 1",
                (pid, now, now, reason, detail[:_DETAIL_MAX], topic[:256],
                 None if h is None else h.tenant, None if h is None else h.agent_id,
                 None if h is None else h.batch_id, None if h is None else h.seq,
                 len(payload), bytes(payload)))
        return pid

    async def park_async(self, reason: str, topic: str, header: Header | None,
                         payload: bytes, detail: str) -> None:
        await asyncio.to_thread(self.park, reason, topic, header, payload, detail)

    def find(self, *, reason: str | None = None, tenant: str | None = None,
             ids: Iterable[str] = (), limit: int = 10_000) -> list[ParkedBatch]:
        where, args = self._where(reason=reason, tenant=tenant, ids=ids)
        with self.db.tx() as cur:
            rows = cur.execute(f"SELECT {', '.join(_COLS)} FROM parked_batches{where} "
                               "ORDER BY parked_at, id LIMIT ?", (*args, limit)).fetchall()
        return [ParkedBatch(str(r[0]), float(r[1]), float(r[2]), str(r[3]), str(r[4]),
                            str(r[5]), r[6], r[7], r[8], None if r[9] is None else int(r[9]),
                            int(r[10]), int(r[11])) for r in rows]

    def payload(self, pid: str) -> bytes | None:
        with self.db.tx() as cur:
            row = cur.execute("SELECT payload FROM parked_batches WHERE id = ?",
                              (pid,)).fetchone()
        return None if row is None else bytes(row[0])

    def remove(self, pid: str) -> bool:
        with self.db.tx(write=True) as cur:
            cur.execute("DELETE FROM parked_batches WHERE id = ?", (pid,))
            return cur.rowcount > 0

    def purge(self, *, ids: Iterable[str] = (), parked_before: float | None = None,
              dry_run: bool = False) -> int:
        """Delete by id, or everything parked before a time (expiry, `purge --older-than`)."""
        ids = list(ids)
        if not ids and parked_before is None:
            raise ValueError("purge needs ids or a time: refusing to delete every parked batch")
        where, args = self._where(ids=ids, parked_before=parked_before)
        with self.db.tx(write=not dry_run) as cur:
            n = int(cur.execute(f"SELECT COUNT(*) FROM parked_batches{where}", args
                                ).fetchone()[0])
            if n and not dry_run:
                cur.execute(f"DELETE FROM parked_batches{where}", args)
        return n

    def count(self, reason: str | None = None) -> int:
        where, args = self._where(reason=reason)
        with self.db.tx() as cur:
            return int(cur.execute(f"SELECT COUNT(*) FROM parked_batches{where}", args
                                   ).fetchone()[0])

    @staticmethod
    def _where(*, reason: str | None = None, tenant: str | None = None,
               ids: Iterable[str] = (), parked_before: float | None = None
               ) -> tuple[str, list[object]]:
        conds: list[str] = []
        args: list[object] = []
        if reason is not None:
            conds.append("reason = ?")
            args.append(reason)
        if tenant is not None:
            conds.append("tenant = ?")
            args.append(tenant)
        ids = list(ids)
        if ids:
            conds.append(f"id IN ({', '.join('?' for _ in ids)})")
            args.extend(ids)
        if parked_before is not None:
            conds.append("parked_at < ?")
            args.append(parked_before)
        return (" WHERE " + " AND ".join(conds)) if conds else "", args


__all__ = ["PARKED_ENVELOPE_REASONS", "PARK_REASONS", "UNAUTHENTICATED", "ParkedBatch",
           "ParkingLot", "Refused"]
