"""The API's own connection to the store's database, for both backends.

The store (`collector/store/`) is the ingest path's seam and exposes counts,
not queries; the query, DSR and audit code needs ad-hoc SELECTs, DELETEs and
its own tables, so it opens its own connection from the same URL and speaks
a small dialect-neutral subset: `?` placeholders (rewritten to `%s` for
PostgreSQL), unix-second REAL times, JSON text in `fields`.

Driver errors are translated here, once, into the store's own error classes.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from collector.store import StoreError, StorePermanentError, StoreRetryableError

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_ADDR = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b|\b[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}\b")


class Cursor:
    """A thin cursor that takes `?` placeholders on both backends."""

    def __init__(self, cur: Any, dialect: str) -> None:
        self._cur, self.dialect = cur, dialect

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        if self.dialect == "postgres":
            sql = sql.replace("?", "%s")
        self._cur.execute(sql, tuple(args))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.dialect == "postgres":
            sql = sql.replace("?", "%s")
        self._cur.executemany(sql, [tuple(r) for r in rows])

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cur.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)


class Db:
    """One connection behind a lock: the API calls in from a thread pool."""

    def __init__(self, url: str) -> None:
        if not isinstance(url, str):
            raise StorePermanentError("any", "store URL must be a string")
        self.url = url
        self._lock = threading.RLock()
        self._closed = False
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            path = url[len("sqlite:///"):].partition("?")[0]
            if not path:
                raise StorePermanentError("sqlite", "URL needs a path")
            self._path = path
            self._conn: Any = None
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgres"
            parts = urlsplit(url)
            query, schema = [], "privtel"
            for k, v in parse_qsl(parts.query, keep_blank_values=True):
                if k == "schema":
                    schema = v
                elif k != "partition_days":
                    query.append((k, v))
            if not _SCHEMA_RE.match(schema):
                raise StorePermanentError("postgres", "schema must match [a-z_][a-z0-9_]{0,62}")
            self.schema = schema
            self._conninfo = urlunsplit(("postgresql", parts.netloc, parts.path,
                                         urlencode(query), ""))
            self._conn = None
        else:
            raise StorePermanentError("any", "unsupported store URL scheme; use sqlite:///path "
                                      "or postgresql://...")

    @property
    def backend(self) -> str:
        return self.dialect

    def _connect(self) -> Any:
        if self._closed:
            raise StorePermanentError(self.dialect, "database is closed")
        if self.dialect == "sqlite":
            if self._conn is None:
                if self._path != ":memory:" and not os.path.exists(self._path):
                    raise StorePermanentError("sqlite", "database file does not exist; "
                                              "run the collector or `privtel api serve` first")
                try:
                    self._conn = sqlite3.connect(self._path, isolation_level=None,
                                                 check_same_thread=False, timeout=10.0)
                    self._conn.execute("PRAGMA journal_mode=WAL")
                except sqlite3.Error as e:
                    raise _translate(e, "sqlite") from None
            return self._conn
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                conn = psycopg.connect(self._conninfo, connect_timeout=10,
                                       application_name="privtel-api")
                conn.execute(f'SET search_path TO "{self.schema}"')
                conn.execute("SET statement_timeout = 60000")
                conn.commit()
            except psycopg.Error as e:
                raise _translate(e, "postgres") from None
            self._conn = conn
        return self._conn

    @contextmanager
    def tx(self, write: bool = False) -> Iterator[Cursor]:
        """One transaction; SQLite writers take the write lock at BEGIN so that
        read-then-write (the audit chain head) cannot interleave."""
        with self._lock:
            conn = self._connect()
            if self.dialect == "sqlite":
                cur = conn.cursor()
                try:
                    cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    yield Cursor(cur, "sqlite")
                    cur.execute("COMMIT")
                except BaseException as e:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if isinstance(e, sqlite3.Error):
                        raise _translate(e, "sqlite") from None
                    raise
                finally:
                    cur.close()
                return
            import psycopg

            try:
                with conn.transaction(), conn.cursor() as pcur:
                    yield Cursor(pcur, "postgres")
            except psycopg.Error as e:
                raise _translate(e, "postgres") from None

    def json(self, value: Any) -> Any:
        """`fields` as a dict whichever way the driver hands it over."""
        if isinstance(value, dict):
            return value
        if isinstance(value, bytes | str):
            return orjson.loads(value)
        return value

    def bool(self, value: bool) -> Any:
        return int(value) if self.dialect == "sqlite" else value

    def ping(self) -> None:
        with self.tx() as cur:
            cur.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _translate(e: Exception, backend: str) -> StoreError:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = _ADDR.sub("<address>", text)
    if backend == "sqlite":
        if isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return StoreRetryableError(backend, f"database is busy ({text})")
        return StorePermanentError(backend, f"{type(e).__name__}: {text}")
    import psycopg

    if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreRetryableError(backend, f"connection problem: {text}")
    return StorePermanentError(backend, f"{type(e).__name__}: {text}")
