"""The embedded store: one SQLite file in WAL mode, no set-up.

One connection guarded by a lock, because the runtime calls in from a thread
pool and SQLite allows one writer at a time anyway; WAL lets readers (the
query API, `privtel retention purge --dry-run`) run beside the writer in
other processes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from collector.store.base import (
    KIND_TEXT,
    BatchMeta,
    TaggedRecord,
    apply_migrations,
    check_filters,
    check_records,
    migrations,
)
from collector.store.dialect import Cursor, Dialect
from collector.store.errors import (
    StoreError,
    StorePermanentError,
    StoreRetryableError,
    first_line,
)

BACKEND = "sqlite"
_SYNC = ("off", "normal", "full", "extra")


class SqliteDialect(Dialect):
    """SQLite's LIKE is already case-insensitive (ASCII), its write transactions
    exclude each other (`BEGIN IMMEDIATE`), so no advisory or row lock is needed;
    ANALYZE is bounded so it stays cheap on a large file."""

    name = BACKEND

    def analyse(self, cur: Cursor, tables: Iterable[str]) -> None:
        cur.execute("PRAGMA analysis_limit = 1000")
        super().analyse(cur, tables)


DIALECT = SqliteDialect()


class SqliteStore:
    backend = BACKEND
    dialect: Dialect = DIALECT

    def __init__(self, path: str, *, synchronous: str = "full", busy_timeout_s: float = 10.0
                 ) -> None:
        if synchronous not in _SYNC:
            raise StorePermanentError(BACKEND, f"synchronous must be one of {', '.join(_SYNC)}")
        self.path = path
        self._lock = threading.RLock()
        self._closed = False
        if path != ":memory:":
            parent = os.path.dirname(path) or "."
            if not os.path.isdir(parent):
                raise StorePermanentError(BACKEND, f"directory {parent} does not exist")
            if not os.path.exists(path):
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=busy_timeout_s)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise _translate(e) from None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteStore:
        """SQLAlchemy's convention: three slashes then the path, so an absolute path
        shows four (`sqlite:////var/lib/privtel/store.db`)."""
        rest = url.partition(":")[2]  # the scheme was checked by the registry
        if not rest.startswith("///"):
            raise StorePermanentError(BACKEND, "URL needs a path: sqlite:///relative.db, "
                                      "sqlite:////absolute/store.db or sqlite:///:memory:")
        path, _, query = rest[3:].partition("?")
        if not path:
            raise StorePermanentError(BACKEND, "URL needs a path: sqlite:///relative.db, "
                                      "sqlite:////absolute/store.db or sqlite:///:memory:")
        for part in filter(None, query.split("&")):
            k, _, v = part.partition("=")
            if k == "synchronous":
                options.setdefault("synchronous", v)
            else:
                raise StorePermanentError(BACKEND, f"unknown URL option {k!r}; known: synchronous")
        return cls(path, **options)

    @classmethod
    def resolve_url(cls, url: str, base: Path) -> str:
        """A relative path (three slashes) taken relative to `base`."""
        rest = url.partition(":")[2]
        path, sep, query = rest[3:].partition("?")
        if not rest.startswith("///") or not path or path == ":memory:" \
                or Path(path).is_absolute():
            return url
        return f"sqlite:///{base / path}{sep}{query}"

    @contextmanager
    def _tx(self, mode: str = "DEFERRED") -> Iterator[sqlite3.Cursor]:
        with self._lock:
            if self._closed:
                raise StorePermanentError(BACKEND, "store is closed")
            cur = self._db.cursor()
            try:
                cur.execute(f"BEGIN {mode}")
                yield cur
                cur.execute("COMMIT")
            except BaseException as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise _translate(e) from None
                raise
            finally:
                cur.close()

    @contextmanager
    def tx(self, write: bool = False) -> Iterator[Cursor]:
        with self._tx("IMMEDIATE" if write else "DEFERRED") as cur:
            yield Cursor(cur, DIALECT)

    def migrate(self) -> int:
        with self._tx("IMMEDIATE") as raw:
            cur = Cursor(raw, DIALECT)

            def run(text: str) -> None:
                for statement in _statements(text):
                    raw.execute(statement)

            return apply_migrations(cur, BACKEND, migrations(BACKEND), run)

    def schema_version(self) -> int:
        with self._tx() as cur:
            row = cur.execute("SELECT name FROM sqlite_master WHERE name='schema_version'"
                              ).fetchone()
            if row is None:
                return 0
            return int(cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version"
                                   ).fetchone()[0])

    def write_batch(self, batch: BatchMeta, records: Sequence[TaggedRecord]) -> bool:
        check_records(BACKEND, batch, records)
        agent_id, batch_id, dumps = batch.agent_id, batch.batch_id, orjson.dumps
        rows: list[tuple[Any, ...]] = []
        append = rows.append
        for t in records:
            r = t.record
            fields = r.fields
            append((r.id, agent_id, batch_id, r.tenant, r.site, r.device, KIND_TEXT[r.kind],
                    r.name, float(r.ts),
                    dumps(fields if type(fields) is dict else dict(fields)).decode(),
                    t.retention_class, t.legal_basis, t.expires_at))
        with self._tx("IMMEDIATE") as cur:
            cur.execute("INSERT OR IGNORE INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (batch.agent_id, batch.batch_id, batch.seq, batch.tenant,
                         batch.created, batch.received_at, len(records)))
            if cur.rowcount == 0:
                return False
            cur.executemany("INSERT INTO records (id, agent_id, batch_id, tenant, site,"
                            " device, kind, name, ts, fields, retention_class, legal_basis,"
                            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                            " ON CONFLICT DO NOTHING", rows)
        return True

    def quarantine(self, reason: str, topic: str, agent_id: str | None, batch_id: str | None,
                   size: int, digest: str) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO quarantine (received_at, reason, topic, agent_id, batch_id,"
                        " size, digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (time.time(), reason, topic, agent_id, batch_id, size, digest))

    def count_records(self, **filters: Any) -> int:
        where, args = _where(filters)
        with self._tx() as cur:
            return int(cur.execute(f"SELECT COUNT(*) FROM records{where}", args).fetchone()[0])

    def count_batches(self, **filters: Any) -> int:
        allowed = {"agent_id", "batch_id", "tenant"}
        bad = set(filters) - allowed
        if bad:
            raise StorePermanentError(BACKEND, f"cannot filter batches by {sorted(bad)}")
        where, args = _where(filters)
        with self._tx() as cur:
            return int(cur.execute(f"SELECT COUNT(*) FROM batches{where}", args).fetchone()[0])

    def count_quarantined(self, reason: str | None = None) -> int:
        with self._tx() as cur:
            if reason is None:
                return int(cur.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0])
            return int(cur.execute("SELECT COUNT(*) FROM quarantine WHERE reason = ?",
                                   (reason,)).fetchone()[0])

    def purge_expired(self, now: float, dry_run: bool = False) -> dict[str, int]:
        cond = "expires_at IS NOT NULL AND expires_at <= ? AND restricted = 0 AND held = 0"
        with self._tx("DEFERRED" if dry_run else "IMMEDIATE") as cur:
            counts = {str(c): int(n) for c, n in cur.execute(
                f"SELECT retention_class, COUNT(*) FROM records WHERE {cond}"
                " GROUP BY retention_class", (now,))}
            if not dry_run and counts:
                cur.execute(f"DELETE FROM records WHERE {cond}", (now,))
            return counts

    def counts_by_class(self) -> dict[str, int]:
        with self._tx() as cur:
            return {str(c): int(n) for c, n in cur.execute(
                "SELECT retention_class, COUNT(*) FROM records GROUP BY retention_class")}

    def size_bytes(self) -> int:
        if self.path == ":memory:":
            with self._tx() as cur:
                pages = cur.execute("PRAGMA page_count").fetchone()[0]
                size = cur.execute("PRAGMA page_size").fetchone()[0]
                return int(pages * size)
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal")
                   if os.path.exists(p))

    def ping(self) -> None:
        with self._tx() as cur:
            cur.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    pairs = check_filters(BACKEND, filters)
    if not pairs:
        return "", []
    args = [int(v) if isinstance(v, bool) else v for _, v in pairs]
    return " WHERE " + " AND ".join(f"{k} = ?" for k, _ in pairs), args


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _translate(e: sqlite3.Error) -> StoreError:
    """The one translation of sqlite3's errors: busy/locked is worth a retry, the
    rest (constraint, schema, corrupt or unopenable file) is not."""
    text = first_line(e)
    if isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return StoreRetryableError(BACKEND, f"database is busy ({text})")
    if isinstance(e, sqlite3.OperationalError) and "unable to open" in text:
        return StorePermanentError(BACKEND, f"cannot open the database file ({text})")
    return StorePermanentError(BACKEND, f"{type(e).__name__}: {text}")
