"""The agent's durable queue: records wait here for a batch, sealed batches for a PUBACK.

SQLite in WAL mode with ``synchronous=FULL``: a commit is on disk when the
call returns, so a SIGKILL or power cut loses nothing that a caller was told
was stored. Two tables make the two hand-overs atomic:

- ``pending``: records accepted by `add_records` and not yet sealed;
- ``batches``: sealed batches not yet acknowledged. With end-to-end receipts a
  batch stays after the broker's PUBACK (a row in ``sent`` says when) until the
  collector's signed receipt arrives (`receipted`), and is offered again when
  no receipt came within the resend timeout; without receipts the PUBACK frees it.
  ``sent`` is a table of its own so that marking a batch published writes a
  few bytes, not the batch again.

`seal_pending` takes pending records, lets the caller seal them under the next
sequence number, and in one transaction inserts the batch, deletes the records
and advances the sequence. A crash on either side of that commit leaves either
the records or the batch, never both and never neither.

The spool is bounded by bytes and by age; when over, the oldest batches are
dropped, counted and logged, never silently. Methods are synchronous and
thread-safe; the shipper runs them in one worker thread so fsyncs never block
the event loop.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipelines.config import Section
from pipelines.record import Record, from_dict
from plumbing.files import touch_private

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    added REAL NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    batch_id TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    records INTEGER NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sent (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_at ON sent (at);
CREATE TRIGGER IF NOT EXISTS batch_gone AFTER DELETE ON batches
BEGIN DELETE FROM sent WHERE seq = old.seq; END;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


_MAX_BYTES, _MAX_AGE_S, _INFLIGHT, _RECEIPT_TIMEOUT_S = 256 << 20, 7 * 86400.0, 16, 60.0


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """`[spool]` of the agent config. Unset `path` means `<state_dir>/spool.db`."""

    path: Path | None = None
    max_bytes: int = _MAX_BYTES
    max_age_s: float = _MAX_AGE_S
    drain_rate: float = 0.0
    inflight: int = _INFLIGHT
    receipt_timeout_s: float = _RECEIPT_TIMEOUT_S  # resend a published batch with no receipt

    @classmethod
    def parse(cls, s: Section, base: Path = Path(".")) -> SpoolConfig:
        path = s.str("path", None)
        cfg = cls(
            path=None if path is None else (Path(path) if Path(path).is_absolute()
                                            else base / path),
            max_bytes=s.int("max_bytes", _MAX_BYTES, lo=1 << 16),
            max_age_s=s.float("max_age_s", _MAX_AGE_S, lo=1.0),
            drain_rate=s.float("drain_rate", 0.0, lo=0.0),
            inflight=s.int("inflight", _INFLIGHT, lo=1, hi=1000),
            receipt_timeout_s=s.float("receipt_timeout_s", _RECEIPT_TIMEOUT_S, lo=0.1,
                                      hi=86400),
        )
        s.done()
        return cfg


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    seq: int
    batch_id: str
    created: float
    records: int
    data: bytes
    published: float | None = None  # set: a resend of a batch that got no receipt


@dataclass(frozen=True, slots=True)
class SpoolStats:
    batches: int
    bytes: int
    pending_records: int
    oldest_created: float | None
    dropped_batches: int
    dropped_records: int
    unreceipted: int = 0
    oldest_published: float | None = None


class Spool:
    """A crash-safe FIFO of sealed batches plus the records waiting to be sealed."""

    def __init__(self, path: Path, *, max_bytes: int = _MAX_BYTES,
                 max_age_s: float = _MAX_AGE_S,
                 on_drop: Callable[[int, int, str], None] | None = None) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path, self.max_bytes, self.max_age_s = path, max_bytes, max_age_s
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._cache: dict[int, Record] = {}
        self.highest_receipted = -1  # seq of the newest batch receipted in this process
        touch_private(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        if "published" in {r[1] for r in self._db.execute("PRAGMA table_info(batches)")}:
            # a spool from before `sent`: keep what it knew was published
            self._db.execute("INSERT OR IGNORE INTO sent SELECT seq, published FROM batches "
                             "WHERE published IS NOT NULL")
            self._db.execute("UPDATE batches SET published = NULL WHERE published IS NOT NULL")
        # A fresh spool starts its sequence at the current time in milliseconds,
        # so an agent whose state was wiped still counts upwards.
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('next_seq', ?)",
                         (int(time.time() * 1000),))
        for k in ("dropped_batches", "dropped_records"):
            self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, 0)", (k,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_records(self, records: Sequence[Record]) -> None:
        """Make records durable; they are sealed into a batch later."""
        if not records:
            return
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                ids = [int(self._db.execute(  # type: ignore[arg-type]
                    "INSERT INTO pending (added, record) VALUES (?, ?)",
                    (now, orjson.dumps(r.to_dict()))).lastrowid) for r in records]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            # Records sealed in this process skip re-parsing (and re-validating) their rows.
            self._cache.update(zip(ids, records, strict=True))

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM pending").fetchone()[0])

    def oldest_pending_added(self) -> float | None:
        with self._lock:
            v = self._db.execute("SELECT min(added) FROM pending").fetchone()[0]
        return None if v is None else float(v)

    def seal_pending(self, limit: int,
                     seal: Callable[[int, list[Record]], tuple[str, float, bytes]]) -> int:
        """Seal up to `limit` pending records as the next batch; returns how many were sealed.

        `seal(seq, records)` returns (batch id, created, sealed bytes); it runs
        inside the transaction so the sequence number it was given is the one
        committed with its batch.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute("SELECT id, record FROM pending ORDER BY id LIMIT ?",
                                        (limit,)).fetchall()
                if not rows:
                    self._db.execute("ROLLBACK")
                    return 0
                seq = int(self._db.execute(
                    "SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
                records = [self._cache.get(r[0]) or from_dict(orjson.loads(r[1])) for r in rows]
                batch_id, created, data = seal(seq, records)
                self._db.execute("INSERT INTO batches (seq, batch_id, created, records, size, "
                                 "data) VALUES (?, ?, ?, ?, ?, ?)",
                                 (seq, batch_id, created, len(records), len(data), data))
                self._db.execute("DELETE FROM pending WHERE id <= ?", (rows[-1][0],))
                self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,))
                self._enforce_bounds(time.time())
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for r in rows:
                self._cache.pop(r[0], None)
        return len(records)

    def drop_pending(self, n: int) -> None:
        """Discard the `n` oldest pending records (one that can never fit in a batch)."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM pending ORDER BY id LIMIT ?",
                                                   (n,))]
            self._db.executemany("DELETE FROM pending WHERE id=?", [(i,) for i in ids])
            for i in ids:
                self._cache.pop(i, None)

    def peek(self, limit: int, exclude: frozenset[int] = frozenset(),
             resend_before: float | None = None,
             resend_below_seq: int | None = None) -> list[SpooledBatch]:
        """The oldest batches not in `exclude` (those already in flight) that are due:
        never published, or published before `resend_before` with no receipt yet (and,
        with `resend_below_seq`, older than that sequence number)."""
        due, args = "s.at IS NULL", []
        if resend_before is not None:
            due = "(s.at IS NULL OR (s.at < ?"
            args.append(resend_before)
            if resend_below_seq is not None:
                due += " AND b.seq < ?"
                args.append(resend_below_seq)
            due += "))"
        with self._lock:
            rows = self._db.execute(
                "SELECT b.seq, b.batch_id, b.created, b.records, b.data, s.at FROM batches b "
                f"LEFT JOIN sent s ON s.seq = b.seq WHERE {due} ORDER BY b.seq LIMIT ?",
                (*args, limit + len(exclude))).fetchall()
        out = [SpooledBatch(int(r[0]), r[1], float(r[2]), int(r[3]), bytes(r[4]),
                            None if r[5] is None else float(r[5]))
               for r in rows if r[0] not in exclude]
        return out[:limit]

    def delete(self, seqs: Sequence[int]) -> None:
        """Forget batches the broker acknowledged (no receipts in use), in one transaction."""
        self._write("DELETE FROM batches WHERE seq=?", [(s,) for s in seqs])

    def mark_published(self, seqs: Sequence[int], now: float | None = None) -> None:
        """The broker holds these; keep them until a receipt, resend if none comes."""
        t = time.time() if now is None else now
        self._write("INSERT OR REPLACE INTO sent SELECT seq, ? FROM batches WHERE seq=?",
                    [(t, s) for s in seqs])

    def receipted(self, batch_ids: Sequence[str]) -> int:
        """Forget batches the collector gave a final outcome for; returns how many were here
        (a receipt for a batch already gone, e.g. after a resend, is harmless)."""
        if not batch_ids:
            return 0
        with self._lock:
            gone: list[int] = []

            def delete() -> None:
                for b in batch_ids:
                    gone.extend(r[0] for r in self._db.execute(
                        "DELETE FROM batches WHERE batch_id=? RETURNING seq", (b,)).fetchall())

            self._transaction(delete)
            if gone and max(gone) > self.highest_receipted:
                self.highest_receipted = max(gone)
            return len(gone)

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        if not rows:
            return
        with self._lock:
            self._transaction(lambda: self._db.executemany(sql, rows))

    def _transaction(self, body: Callable[[], object]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            body()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def enforce_bounds(self, now: float | None = None) -> None:
        with self._lock:
            self._transaction(lambda: self._enforce_bounds(time.time() if now is None else now))

    def _enforce_bounds(self, now: float) -> None:
        dropped = dropped_recs = 0
        old = self._db.execute("SELECT count(*), coalesce(sum(records), 0) FROM batches "
                               "WHERE created < ?", (now - self.max_age_s,)).fetchone()
        if old[0]:
            self._db.execute("DELETE FROM batches WHERE created < ?", (now - self.max_age_s,))
            self._dropped(int(old[0]), int(old[1]), "older than max_age_s")
            dropped, dropped_recs = int(old[0]), int(old[1])
        total = int(self._db.execute("SELECT coalesce(sum(size), 0) FROM batches").fetchone()[0])
        if total > self.max_bytes:
            n = r = 0
            for seq, size, recs in self._db.execute(
                    "SELECT seq, size, records FROM batches ORDER BY seq").fetchall():
                if total <= self.max_bytes:
                    break
                self._db.execute("DELETE FROM batches WHERE seq=?", (seq,))
                total -= size
                n, r = n + 1, r + recs
            self._dropped(n, r, "spool over max_bytes")
            dropped, dropped_recs = dropped + n, dropped_recs + r
        if dropped:
            self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped_batches'",
                             (dropped,))
            self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped_records'",
                             (dropped_recs,))

    def _dropped(self, batches: int, records: int, why: str) -> None:
        log.warning("spool dropped %d oldest batches (%d records): %s", batches, records, why)
        if self._on_drop is not None:
            self._on_drop(batches, records, why)

    def stats(self) -> SpoolStats:
        with self._lock:
            n, size, oldest = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0), min(created) FROM batches").fetchone()
            pending = self._db.execute("SELECT count(*) FROM pending").fetchone()[0]
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            unrec, oldest_pub = self._db.execute("SELECT count(*), min(at) FROM sent").fetchone()
        return SpoolStats(int(n), int(size), int(pending), None if oldest is None else oldest,
                          int(meta["dropped_batches"]), int(meta["dropped_records"]),
                          int(unrec), None if oldest_pub is None else float(oldest_pub))
