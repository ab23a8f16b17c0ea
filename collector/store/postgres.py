"""The production store: PostgreSQL through psycopg 3.

Records go in with COPY, the batch row and its dedupe key in the same
transaction. The records table is range-partitioned by expiry (see the
migration), so the purge drops whole partitions and deletes row by row only
in the partition that straddles `now`. A partition is created on first need,
in its own short transaction under an advisory lock, so that several workers
can add the same one without racing.

One connection per store, guarded by a lock: the runtime calls in from a
thread pool; each worker process opens its own store.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import errors as pgerr
from psycopg import sql

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

BACKEND = "postgres"
DAY = 86400.0
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_COLUMNS = ("id", "agent_id", "batch_id", "tenant", "site", "device", "kind", "name", "ts",
            "fields", "retention_class", "legal_basis", "expires_at")
_COPY = f"COPY records ({', '.join(_COLUMNS)}) FROM STDIN"
_COPY_KEYS = "COPY record_keys (tenant, id) FROM STDIN"
_LOCK_PARTITIONS = 0x70726976  # "priv": advisory lock key for partition DDL
_LOCK_MIGRATE = 0x70726977
_UNIQUE_VIOLATION = "23505"
_PARTITION_RETRIES = 5
_NO_PARTITION = "23514"  # check_violation: no partition of relation "records" for the row


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r",
                          "\x00": "\ufffd"})


_SPECIAL = re.compile(r"[\\\t\n\r\x00]")


def _esc(v: str) -> str:
    return v.translate(_ESCAPES) if _SPECIAL.search(v) else v


def _no_nul(v: Any) -> Any:
    return v.replace("\x00", "\ufffd") if isinstance(v, str) else v


def _copy_text(batch: BatchMeta, records: Sequence[TaggedRecord]
               ) -> tuple[bytes, bytes, set[float]]:
    """The batch as COPY text for `records` and for `record_keys`, and the distinct
    expiries (the partitions it needs), built in one pass: per-row `write_row` costs more
    Python time than the server spends on the row. Identifiers, kinds and names
    are schema-checked (whole-string patterns) to exclude tabs, newlines and
    backslashes; free strings (site, device, legal basis, the JSON of fields) are
    escaped. orjson escapes every control character, so the only character of
    its output COPY needs escaped is the backslash. PostgreSQL cannot hold NUL
    in text or json, so a NUL becomes U+FFFD. Sites, devices, times and tags
    repeat within a batch, so each distinct one is formatted once. The fields are
    encoded to JSON here and nowhere else between the batch's decoding and COPY."""
    head = f"{_esc(batch.agent_id)}\t{_esc(batch.batch_id)}\t"
    out: list[str] = []
    append = out.append
    keys: list[str] = []
    key_append = keys.append
    dumps = orjson.dumps
    tags: dict[tuple[str, str, float | None], str] = {}
    texts: dict[str, str] = {}
    times: dict[float, str] = {}
    for t in records:
        r = t.record
        key = (t.retention_class, t.legal_basis, t.expires_at)
        tag = tags.get(key)
        if tag is None:
            expires = "\\N" if t.expires_at is None else repr(float(t.expires_at))
            tag = tags[key] = f"{_esc(t.retention_class)}\t{_esc(t.legal_basis)}\t{expires}"
        site = texts.get(r.site)
        if site is None:
            site = texts[r.site] = _esc(r.site)
        device = texts.get(r.device)
        if device is None:
            device = texts[r.device] = _esc(r.device)
        ts = times.get(r.ts)
        if ts is None:
            ts = times[r.ts] = repr(float(r.ts))
        fields = r.fields
        js = dumps(fields if type(fields) is dict else dict(fields)).decode()
        if "\\" in js:
            if "\\u0000" in js:
                js = dumps({k: _no_nul(v) for k, v in fields.items()}).decode()
            js = js.replace("\\", "\\\\")
        append(f"{r.id}\t{head}{r.tenant}\t{site}\t{device}\t{KIND_TEXT[r.kind]}\t{r.name}\t{ts}\t"
               f"{js}\t{tag}\n")
        key_append(f"{r.tenant}\t{r.id}\n")
    expiries = {e for _, _, e in tags if e is not None}
    return "".join(out).encode(), "".join(keys).encode(), expiries


def _one(cur: psycopg.Cursor[Any]) -> Any:
    row = cur.fetchone()
    if row is None:
        raise StorePermanentError(BACKEND, "query returned no row")
    return row[0]


def _covered(ranges: list[tuple[float, float]], v: float) -> bool:
    i = bisect.bisect_right(ranges, (v, math.inf)) - 1
    return i >= 0 and ranges[i][0] <= v < ranges[i][1]


def _translate(e: psycopg.Error) -> StoreError:
    """The one translation of psycopg's errors: lost connections, lock and
    serialisation conflicts and server shutdowns are worth a retry; the rest
    (constraints, bad data, schema) is not. The SQLSTATE is kept for the store's
    own decisions (unique violation, missing partition)."""
    text = first_line(e)
    if isinstance(e, pgerr.SerializationFailure | pgerr.DeadlockDetected
                  | pgerr.LockNotAvailable | pgerr.QueryCanceled | pgerr.AdminShutdown
                  | pgerr.CannotConnectNow | pgerr.TooManyConnections):
        return StoreRetryableError(BACKEND, f"transient: {text}")
    if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreRetryableError(BACKEND, f"connection problem: {text}")
    out: StoreError = StorePermanentError(BACKEND, f"{type(e).__name__}: {text}")
    out.sqlstate = e.sqlstate
    return out


class PostgresDialect(Dialect):
    name = BACKEND
    true, false = "true", "false"
    row_lock = " FOR UPDATE"

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def bool(self, value: bool) -> Any:
        return bool(value)

    def ilike(self, column: str) -> str:
        return f"{column}::text ILIKE ? ESCAPE '\\'"

    def lock(self, cur: Cursor, key: int) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(?)", (key,))


DIALECT = PostgresDialect()


class PostgresStore:
    backend = BACKEND
    dialect: Dialect = DIALECT

    def __init__(self, conninfo: str, *, schema: str = "privtel", partition_days: float = 7.0,
                 connect_timeout_s: int = 10, statement_timeout_s: int = 300,
                 lock_timeout_s: float = 5.0) -> None:
        if not _SCHEMA_RE.match(schema):
            raise StorePermanentError(BACKEND, "schema must match [a-z_][a-z0-9_]{0,62}")
        if not 0.01 <= partition_days <= 366:
            raise StorePermanentError(BACKEND, "partition_days must be between 0.01 and 366")
        self.schema, self.width = schema, partition_days * DAY
        self._conninfo, self._connect_timeout = conninfo, connect_timeout_s
        self._statement_timeout = statement_timeout_s
        self._lock_timeout_s = lock_timeout_s
        self._lock = threading.RLock()
        self._closed = False
        self._ranges: list[tuple[float, float]] = []
        self._db: psycopg.Connection[Any] | None = None
        with self._lock:
            self._connect()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        parts = urlsplit(url)
        query = []
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            if k == "schema":
                options.setdefault("schema", v)
            elif k == "partition_days":
                try:
                    options.setdefault("partition_days", float(v))
                except ValueError:
                    raise StorePermanentError(BACKEND, "partition_days must be a number"
                                              ) from None
            else:
                query.append((k, v))
        conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))
        return cls(conninfo, **options)

    def _connect(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StorePermanentError(BACKEND, "store is closed")
        if self._db is not None and not self._db.closed and not self._db.broken:
            return self._db
        try:
            db = psycopg.connect(self._conninfo, connect_timeout=self._connect_timeout,
                                 application_name="privtel-collector")
            db.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            db.execute(f"SET statement_timeout = {int(self._statement_timeout * 1000)}")
            db.commit()
        except psycopg.Error as e:
            raise _translate(e) from None
        self._db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._lock:
            db = self._connect()
            try:
                with db.transaction(), db.cursor() as cur:
                    yield cur
            except psycopg.Error as e:
                raise _translate(e) from None

    @contextmanager
    def tx(self, write: bool = False) -> Iterator[Cursor]:
        """`write` changes nothing here: PostgreSQL takes row locks as it goes, and
        the callers that read-then-write take an advisory lock (`Dialect.lock`)."""
        with self._tx() as cur:
            yield Cursor(cur, DIALECT)

    def migrate(self) -> int:
        with self._tx() as raw:
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_MIGRATE,))
            raw.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(self.schema)))
            version = apply_migrations(Cursor(raw, DIALECT), BACKEND, migrations(BACKEND),
                                       lambda text: raw.execute(text.encode()))
        self._ranges = []
        return version

    def schema_version(self) -> int:
        with self._tx() as cur:
            cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
            if not _one(cur):
                return 0
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            return int(_one(cur))

    def _ensure_partitions(self, values: set[float]) -> None:
        """Partitions are width-aligned buckets, clipped against existing ones so that
        a changed `partition_days` never asks for an overlapping range."""
        missing = {v for v in values if not _covered(self._ranges, v)}
        if not missing:
            return
        self._ranges, ranges = [], self._ranges
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_PARTITIONS,))
            cur.execute("SELECT lo, hi FROM record_partitions ORDER BY lo")
            ranges = [(float(lo), float(hi)) for lo, hi in cur.fetchall()]
            for v in sorted(missing):
                if _covered(ranges, v):
                    continue
                lo = (v // self.width) * self.width
                hi = lo + self.width
                i = bisect.bisect_right(ranges, (v, math.inf))
                if i > 0:
                    lo = max(lo, ranges[i - 1][1])
                if i < len(ranges):
                    hi = min(hi, ranges[i][0])
                stamp = datetime.fromtimestamp(lo, UTC).strftime("%Y%m%d_%H%M%S")
                name = f"records_x{stamp}"
                cur.execute(sql.SQL("CREATE TABLE {} PARTITION OF records FOR VALUES FROM ({}) "
                                    "TO ({})").format(sql.Identifier(name), sql.Literal(lo),
                                                       sql.Literal(hi)))
                cur.execute("INSERT INTO record_partitions VALUES (%s, %s, %s)", (name, lo, hi))
                bisect.insort(ranges, (lo, hi))
        self._ranges = ranges

    def write_batch(self, batch: BatchMeta, records: Sequence[TaggedRecord]) -> bool:
        """One transaction: the batch row (its key dedupes re-deliveries), the
        records' (tenant, id) keys, the records. The keys live in `record_keys`, a
        plain table, because a partitioned table cannot hold a unique key without
        its partition key (expiry): that is what let a re-sent record with another
        expiry, or another tenant's record with the same id, in twice or not at all.
        Fast path: COPY keys and records; a key already stored fails the COPY, and
        the batch goes again through a staging table that skips stored records."""
        check_records(BACKEND, batch, records)
        rows, keys, expiries = _copy_text(batch, records)
        with self._lock:
            for _ in range(_PARTITION_RETRIES):
                self._ensure_partitions(expiries)
                try:
                    return self._write(batch, len(records), keys, rows, fast=True)
                except StorePermanentError as e:
                    if e.sqlstate == _UNIQUE_VIOLATION:
                        return self._write(batch, len(records), keys, rows, fast=False)
                    if e.sqlstate != _NO_PARTITION:
                        raise
                    self._ranges = []  # a purge dropped a partition this store had cached
        raise StoreRetryableError(BACKEND, "expiry partitions kept being dropped by a "
                                  "concurrent purge; retry the batch")

    def _write(self, batch: BatchMeta, count: int, keys: bytes, rows: bytes, *,
               fast: bool) -> bool:
        with self._tx() as cur:
            cur.execute("INSERT INTO batches VALUES (%s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT DO NOTHING",
                        (batch.agent_id, batch.batch_id, batch.seq, batch.tenant,
                         batch.created, batch.received_at, count))
            if cur.rowcount == 0:
                return False
            if fast:
                with cur.copy(_COPY_KEYS) as copy:
                    copy.write(keys)
                with cur.copy(_COPY) as copy:
                    copy.write(rows)
                return True
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS records_stage "
                        "(LIKE records INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            with cur.copy(_COPY.replace("records", "records_stage", 1)) as copy:
                copy.write(rows)
            cols = ", ".join(_COLUMNS)
            staged = ", ".join(f"s.{c}" for c in _COLUMNS)
            cur.execute(f"WITH fresh AS (INSERT INTO record_keys (tenant, id) SELECT tenant, id"
                        f" FROM records_stage ON CONFLICT DO NOTHING RETURNING tenant, id) "
                        f"INSERT INTO records ({cols}) SELECT {staged}"
                        f" FROM records_stage s JOIN fresh f USING (tenant, id)")
            cur.execute("TRUNCATE records_stage")
        return True

    def quarantine(self, reason: str, topic: str, agent_id: str | None, batch_id: str | None,
                   size: int, digest: str) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO quarantine (received_at, reason, topic, agent_id, batch_id,"
                        " size, digest) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (time.time(), reason, topic, agent_id, batch_id, size, digest))

    def _count(self, table: str, filters: dict[str, Any]) -> int:
        pairs = check_filters(BACKEND, filters)
        where = sql.SQL(" AND ").join(
            sql.SQL("{} = %s").format(sql.Identifier(k)) for k, _ in pairs)
        query = sql.SQL("SELECT COUNT(*) FROM {}").format(sql.Identifier(table))
        if pairs:
            query = query + sql.SQL(" WHERE ") + where
        with self._tx() as cur:
            cur.execute(query, [v for _, v in pairs])
            return int(_one(cur))

    def count_records(self, **filters: Any) -> int:
        return self._count("records", filters)

    def count_batches(self, **filters: Any) -> int:
        bad = set(filters) - {"agent_id", "batch_id", "tenant"}
        if bad:
            raise StorePermanentError(BACKEND, f"cannot filter batches by {sorted(bad)}")
        return self._count("batches", filters)

    def count_quarantined(self, reason: str | None = None) -> int:
        with self._tx() as cur:
            if reason is None:
                cur.execute("SELECT COUNT(*) FROM quarantine")
            else:
                cur.execute("SELECT COUNT(*) FROM quarantine WHERE reason = %s", (reason,))
            return int(_one(cur))

    def purge_expired(self, now: float, dry_run: bool = False) -> dict[str, int]:
        counts: dict[str, int] = {}

        def add(rows: list[tuple[Any, ...]]) -> None:
            for klass, n in rows:
                counts[klass] = counts.get(klass, 0) + int(n)

        with self._tx() as cur:
            if dry_run:
                cur.execute("SELECT retention_class, COUNT(*) FROM records WHERE expires_at <= %s"
                            " AND NOT restricted AND NOT held GROUP BY 1", (now,))
                add(cur.fetchall())
                return counts
        # Whole partitions first. Their rows are counted before any lock is taken,
        # so ingest never waits on a scan; the drop then takes the parent table
        # lock first (the order writers use, so no deadlock) with a lock timeout.
        with self._tx() as cur:
            cur.execute("SELECT name FROM record_partitions WHERE hi <= %s ORDER BY lo", (now,))
            candidates = [str(name) for (name,) in cur.fetchall()]
            before: dict[str, list[tuple[Any, ...]]] = {}
            for name in candidates:
                cur.execute(sql.SQL("SELECT retention_class, COUNT(*) FROM {} GROUP BY 1"
                                    ).format(sql.Identifier(name)))
                before[name] = cur.fetchall()
        if candidates:
            with self._tx() as cur:
                cur.execute("SELECT set_config('lock_timeout', %s, true)",
                            (f"{int(self._lock_timeout_s * 1000)}ms",))
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_PARTITIONS,))
                cur.execute("LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
                for name in candidates:
                    table = sql.Identifier(name)
                    cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE restricted OR held)"
                                        ).format(table))
                    if _one(cur):
                        continue
                    add(before[name])
                    cur.execute(sql.SQL("DELETE FROM record_keys k USING {} p WHERE "
                                        "k.tenant = p.tenant AND k.id = p.id").format(table))
                    cur.execute(sql.SQL("DROP TABLE {}").format(table))
                    cur.execute("DELETE FROM record_partitions WHERE name = %s", (name,))
                cur.execute("SELECT lo, hi FROM record_partitions ORDER BY lo")
                self._ranges = [(float(lo), float(hi)) for lo, hi in cur.fetchall()]
        with self._tx() as cur:
            cur.execute("WITH gone AS (DELETE FROM records WHERE expires_at <= %s AND NOT "
                        "restricted AND NOT held RETURNING retention_class) SELECT "
                        "retention_class, COUNT(*) FROM gone GROUP BY 1", (now,))
            add(cur.fetchall())
        return counts

    def counts_by_class(self) -> dict[str, int]:
        with self._tx() as cur:
            cur.execute("SELECT retention_class, COUNT(*) FROM records GROUP BY 1")
            return {str(k): int(n) for k, n in cur.fetchall()}

    def partitions(self) -> list[tuple[str, float, float]]:
        with self._tx() as cur:
            cur.execute("SELECT name, lo, hi FROM record_partitions ORDER BY lo")
            return [(str(n), float(lo), float(hi)) for n, lo, hi in cur.fetchall()]

    def size_bytes(self) -> int:
        with self._tx() as cur:
            cur.execute("SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
                        "AND c.relkind IN ('r', 'm')", (self.schema,))
            return int(_one(cur))

    def ping(self) -> None:
        with self._tx() as cur:
            cur.execute("SELECT 1")
            _one(cur)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._db is not None and not self._db.closed:
                self._db.close()
