"""The agent's durable queue: records wait here for a batch, sealed batches for a PUBACK.

SQLite in WAL mode with ``synchronous=FULL``: a commit is on disk when the
call returns, so a SIGKILL or power cut loses nothing that a caller was told
was stored. Two tables make the two hand-overs atomic:

- ``pending``: records accepted by `add` and not yet sealed, one row per group
  commit: each record as the JSON it will have inside its batch body
  (`pipelines.record.encode_one`), one per line (orjson never writes a raw
  newline), beside the pseudonym key ids that made them (``pkids``, a JSON list)
  and their number (``n``). Sealing joins stored bytes and never parses or
  encodes a record again, and the database does per-group, not per-record, work;
- ``batches``: sealed batches not yet acknowledged. With end-to-end receipts a
  batch stays after the broker's PUBACK (a row in ``sent`` says when) until the
  collector's signed receipt arrives (`receipted`), and is offered again when
  no receipt came within the resend timeout; without receipts the PUBACK frees it.
  ``sent`` is a table of its own so that marking a batch published writes a
  few bytes, not the batch again.

Every write is a group: `add` takes the records of many callers (the shipper
coalesces concurrent submits), and sealing is two steps so that the CPU work
runs outside the lock and beside other commits: `take_pending` reads the oldest
records and the next sequence number, the caller seals as many batches as it
likes under consecutive numbers, and `commit_sealed` in one transaction inserts
them all, deletes their records and advances the sequence (one fsync for many
batches). A crash on either side of that commit leaves either the records or the
batches, never both and never neither; the sequence stays contiguous.

Writes from different threads are themselves committed in groups (leader and
followers): a writer that finds another one committing queues its operation,
and the next writer to hold the connection commits everything queued in one
transaction, each operation in a savepoint of its own, so one that fails (a
sequence conflict) is undone and raised alone while the rest commit. Records
in, batches sealed, batches published and receipted thus share fsyncs. Reads
use a connection of their own (WAL readers never wait for a writer), so
peeking at batches never queues behind an fsync.

The spool is bounded by bytes and by age; when over, the oldest batches are
dropped, counted and logged, never silently. Methods are synchronous and
thread-safe; the shipper runs them in worker threads so fsyncs never block
the event loop. A spool written by the version before ``pending.pkids`` (one
record per row) opens as is: the columns are added and filled from the stored
JSON once, and such a row is a group of one.
"""

from __future__ import annotations

import bisect
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import orjson

from pipelines.config import Section
from pipelines.record import Record, encode_one
from plumbing.files import touch_private

log = logging.getLogger(__name__)
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    added REAL NOT NULL,
    record BLOB NOT NULL,
    pkids TEXT NOT NULL DEFAULT '[null]',
    n INTEGER NOT NULL DEFAULT 1
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
_LINGER_S, _GROUP_MAX = 0.005, 20_000


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """`[spool]` of the agent config. Unset `path` means `<state_dir>/spool.db`."""

    path: Path | None = None
    max_bytes: int = _MAX_BYTES
    max_age_s: float = _MAX_AGE_S
    drain_rate: float = 0.0
    inflight: int = _INFLIGHT
    receipt_timeout_s: float = _RECEIPT_TIMEOUT_S  # resend a published batch with no receipt
    # group commit of submits: how long a group waits for more callers once several
    # submit at a time, and the most records one transaction takes
    linger_s: float = _LINGER_S
    group_max_records: int = _GROUP_MAX

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
            linger_s=s.float("linger_s", _LINGER_S, lo=0.0, hi=1.0),
            group_max_records=s.int("group_max_records", _GROUP_MAX, lo=1, hi=1_000_000),
        )
        s.done()
        return cfg


def key_id_of(r: Record) -> str | None:
    """The pseudonym key id a record names in its `pkid` field, if it names one."""
    p = r.fields.get("pkid")
    return p if isinstance(p, str) else None


@dataclass(frozen=True, slots=True)
class Pending:
    """The oldest pending records as stored, for sealing outside the spool: record `i`
    is `data[i]` (its JSON) with key id `pkids[i]`; group row `rows[j]`, committed at
    `added[j]`, holds the records from `starts[j]` on. `seq` is the number the first
    batch sealed from them gets. Flat lists, not an object per record: this is read
    on the spool's thread, which should not hold the interpreter long."""

    seq: int
    data: list[bytes]
    pkids: list[str | None]
    rows: list[int]
    starts: list[int]
    added: list[float]

    def __len__(self) -> int:
        return len(self.data)

    def added_at(self, i: int) -> float:
        """When record `i` was committed."""
        return self.added[bisect.bisect_right(self.starts, i) - 1]

    def position(self, i: int) -> tuple[int, int]:
        """(row id, index in that row) of record `i`: what `commit_sealed` takes."""
        j = bisect.bisect_right(self.starts, i) - 1
        return self.rows[j], i - self.starts[j]


@dataclass(frozen=True, slots=True)
class Sealed:
    """A batch sealed from pending records, for `commit_sealed`."""

    seq: int
    batch_id: str
    created: float
    records: int
    data: bytes


class SpoolConflict(RuntimeError):
    """`commit_sealed` for a sequence number another sealer already used."""


class _Op:
    """A write waiting for a group commit: its statements, then its outcome."""

    __slots__ = ("body", "done", "error", "result")

    def __init__(self, body: Callable[[], object]) -> None:
        self.body = body
        self.done = False
        self.result: object = None
        self.error: BaseException | None = None


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
        self._lock = threading.Lock()  # the writing connection: one group commit at a time
        self._queued: list[_Op] = []
        self._queue_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self.transactions = 0  # committed writes: what group commit saves is visible here
        self.highest_receipted = -1  # seq of the newest batch receipted in this process
        touch_private(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        if "pkids" not in {r[1] for r in self._db.execute("PRAGMA table_info(pending)")}:
            self._transaction(self._add_group_columns)
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
        self._rdb = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                    timeout=30)

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._rdb.close()

    def _add_group_columns(self) -> None:
        """Upgrade a spool from before ``pending.pkids``: each row holds one record; read
        its key id from the stored JSON once, so sealing never has to."""
        self._db.execute("ALTER TABLE pending ADD COLUMN pkids TEXT NOT NULL DEFAULT '[null]'")
        self._db.execute("ALTER TABLE pending ADD COLUMN n INTEGER NOT NULL DEFAULT 1")
        for rid, blob in self._db.execute("SELECT id, record FROM pending").fetchall():
            p = orjson.loads(blob).get("fields", {}).get("pkid")
            if isinstance(p, str):
                self._db.execute("UPDATE pending SET pkids=? WHERE id=?",
                                 (orjson.dumps([p]), rid))

    def add(self, records: Sequence[tuple[bytes, str | None]]) -> None:
        """Make records durable, in one transaction and one row: each is a record's JSON
        (`encode_one`) and its key id. They are sealed into batches later."""
        if not records:
            return
        row = (time.time(), b"\n".join(r[0] for r in records),
               orjson.dumps([r[1] for r in records]), len(records))
        self._write(lambda: self._db.execute(
            "INSERT INTO pending (added, record, pkids, n) VALUES (?, ?, ?, ?)", row))

    def add_records(self, records: Sequence[Record]) -> None:
        """`add` for records not encoded yet."""
        self.add([(encode_one(r), key_id_of(r)) for r in records])

    def pending_count(self) -> int:
        with self._read_lock:
            return int(self._rdb.execute("SELECT coalesce(sum(n), 0) FROM pending").fetchone()[0])

    def take_pending(self, limit: int) -> Pending:
        """The next sequence number and the oldest `limit` pending records, unchanged:
        seal them outside the spool, then hand the batches to `commit_sealed`."""
        p = Pending(0, [], [], [], [], [])
        with self._read_lock:
            self._rdb.execute("BEGIN")  # one snapshot: the sequence number and the records
            try:
                seq = int(self._rdb.execute(
                    "SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
                cur = self._rdb.execute("SELECT id, added, record, pkids FROM pending "
                                        "ORDER BY id")
                for rid, added, blob, pkids in cur:
                    parts = bytes(blob).split(b"\n")[: limit - len(p.data)]
                    p.rows.append(rid)
                    p.starts.append(len(p.data))
                    p.added.append(added)
                    p.data.extend(parts)
                    p.pkids.extend(orjson.loads(pkids)[: len(parts)])
                    if len(p.data) >= limit:
                        break
                cur.close()
            finally:
                self._rdb.execute("ROLLBACK")  # it only read
        return replace(p, seq=seq)

    def commit_sealed(self, first_seq: int, batches: Sequence[Sealed],
                      through: tuple[int, int]) -> None:
        """In one transaction: store `batches` (numbered `first_seq`, `first_seq + 1`, ...),
        delete every pending record up to and including `through` (row id, index in the
        row: see `Pending.position`), theirs and any the sealer gave up on, and advance
        the sequence. `SpoolConflict` if `first_seq` is no longer next."""
        if [b.seq for b in batches] != list(range(first_seq, first_seq + len(batches))):
            raise ValueError("sealed batches must be numbered consecutively from first_seq")

        def body() -> None:
            seq = int(self._db.execute(
                "SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
            if seq != first_seq:
                raise SpoolConflict(f"sequence {first_seq} was already used (next is {seq})")
            self._db.executemany(
                "INSERT INTO batches (seq, batch_id, created, records, size, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(b.seq, b.batch_id, b.created, b.records, len(b.data), b.data)
                 for b in batches])
            self._db.execute("DELETE FROM pending WHERE id < ?", (through[0],))
            self._consume(*through)
            self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'",
                             (first_seq + len(batches),))
            self._enforce_bounds(time.time())

        self._write(body)

    def _consume(self, row: int, index: int) -> None:
        """Delete group row `row` through record `index`: all of it, or keep the rest."""
        blob, pkids, n = self._db.execute("SELECT record, pkids, n FROM pending WHERE id=?",
                                          (row,)).fetchone()
        keep = index + 1
        if keep >= n:
            self._db.execute("DELETE FROM pending WHERE id=?", (row,))
            return
        rest = bytes(blob).split(b"\n", keep)[keep]
        self._db.execute("UPDATE pending SET record=?, pkids=?, n=? WHERE id=?",
                         (rest, orjson.dumps(orjson.loads(pkids)[keep:]), n - keep, row))

    def seal_pending(self, limit: int,
                     seal: Callable[[int, Pending], tuple[str, float, bytes]]) -> int:
        """Seal up to `limit` pending records as the next batch; returns how many were sealed.
        `seal(seq, pending)` returns (batch id, created, sealed bytes)."""
        p = self.take_pending(limit)
        if not p:
            return 0
        batch_id, created, data = seal(p.seq, p)
        self.commit_sealed(p.seq, [Sealed(p.seq, batch_id, created, len(p), data)],
                           p.position(len(p) - 1))
        return len(p)

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
        with self._read_lock:
            rows = self._rdb.execute(
                "SELECT b.seq, b.batch_id, b.created, b.records, b.data, s.at FROM batches b "
                f"LEFT JOIN sent s ON s.seq = b.seq WHERE {due} ORDER BY b.seq LIMIT ?",
                (*args, limit + len(exclude))).fetchall()
        out = [SpooledBatch(int(r[0]), r[1], float(r[2]), int(r[3]), bytes(r[4]),
                            None if r[5] is None else float(r[5]))
               for r in rows if r[0] not in exclude]
        return out[:limit]

    def delete(self, seqs: Sequence[int]) -> None:
        """Forget batches the broker acknowledged (no receipts in use), in one transaction."""
        self._write_rows("DELETE FROM batches WHERE seq=?", [(s,) for s in seqs])

    def mark_published(self, seqs: Sequence[int], now: float | None = None) -> None:
        """The broker holds these; keep them until a receipt, resend if none comes."""
        t = time.time() if now is None else now
        self._write_rows("INSERT OR REPLACE INTO sent SELECT seq, ? FROM batches WHERE seq=?",
                         [(t, s) for s in seqs])

    def receipted(self, batch_ids: Sequence[str]) -> int:
        """Forget batches the collector gave a final outcome for; returns how many were here
        (a receipt for a batch already gone, e.g. after a resend, is harmless)."""
        if not batch_ids:
            return 0

        def delete() -> list[int]:
            gone: list[int] = []
            for b in batch_ids:
                gone.extend(r[0] for r in self._db.execute(
                    "DELETE FROM batches WHERE batch_id=? RETURNING seq", (b,)).fetchall())
            return gone

        gone = self._write(delete)
        if gone and max(gone) > self.highest_receipted:
            self.highest_receipted = max(gone)
        return len(gone)

    def _write_rows(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        if rows:
            self._write(lambda: self._db.executemany(sql, rows))

    def _write(self, body: Callable[[], T]) -> T:
        """Run `body` (statements on the writing connection) in a group commit, and
        return what it returned or raise what it raised. Whoever gets the connection
        commits every write queued by then, its own included; the others find theirs
        done. One transaction, one fsync, for all of them."""
        op = _Op(body)
        with self._queue_lock:
            self._queued.append(op)
        with self._lock:
            if not op.done:
                with self._queue_lock:
                    ops, self._queued = self._queued, []
                self._commit_group(ops)
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    def _commit_group(self, ops: list[_Op]) -> None:
        """One transaction for `ops`, each in a savepoint: a failing one is rolled back
        and keeps its exception, the others commit. If the commit fails, all fail."""
        try:
            self._transaction(lambda: self._savepoints(ops))
        except BaseException as e:
            for op in ops:
                op.error = op.error or e
            if not isinstance(e, Exception):
                raise
        finally:
            for op in ops:
                op.done = True

    def _savepoints(self, ops: list[_Op]) -> None:
        for op in ops:
            self._db.execute("SAVEPOINT op")
            try:
                op.result = op.body()
            except Exception as e:
                self._db.execute("ROLLBACK TO op")
                op.error = e
            self._db.execute("RELEASE op")

    def _transaction(self, body: Callable[[], object]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            body()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.transactions += 1

    def enforce_bounds(self, now: float | None = None) -> None:
        self._write(lambda: self._enforce_bounds(time.time() if now is None else now))

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
        with self._read_lock:
            n, size, oldest = self._rdb.execute(
                "SELECT count(*), coalesce(sum(size), 0), min(created) FROM batches").fetchone()
            pending = self._rdb.execute("SELECT coalesce(sum(n), 0) FROM pending").fetchone()[0]
            meta = dict(self._rdb.execute("SELECT key, value FROM meta").fetchall())
            unrec, oldest_pub = self._rdb.execute("SELECT count(*), min(at) FROM sent").fetchone()
        return SpoolStats(int(n), int(size), int(pending), None if oldest is None else oldest,
                          int(meta["dropped_batches"]), int(meta["dropped_records"]),
                          int(unrec), None if oldest_pub is None else float(oldest_pub))
