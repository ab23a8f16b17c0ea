"""The store seam: the `Store` protocol ingest writes through, and `SqlStore`,
the same store with a `Dialect` and transactions for the query side (search,
DSR, users, audit). Backends are chosen by URL scheme (`registry`).

The collector runtime calls these methods from worker threads
(`asyncio.to_thread`), so every backend serialises access to its connection.
Driver errors are translated once per driver, in the backend module, into the
classes of `collector.store.errors` (permanent vs retryable).
"""

from __future__ import annotations

import importlib.resources
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from collector.store.dialect import Cursor, Dialect
from collector.store.errors import StoreError, StorePermanentError, StoreRetryableError
from collector.store.registry import open_db, open_store
from pipelines.record import Kind, Record

__all__ = ["BatchMeta", "Cursor", "Dialect", "SqlStore", "Store", "StoreError",
           "StorePermanentError", "StoreRetryableError", "TaggedRecord", "apply_migrations",
           "check_filters", "check_records", "migrations", "open_db", "open_store"]

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
_FILTERS = ("tenant", "site", "device", "kind", "name", "agent_id", "batch_id",
            "retention_class", "restricted")


@dataclass(frozen=True, slots=True)
class BatchMeta:
    """The clear header of a batch as the collector accepted it."""

    agent_id: str
    batch_id: str
    seq: int
    tenant: str
    created: float
    received_at: float

    def __post_init__(self) -> None:
        for name in ("agent_id", "batch_id"):
            v = getattr(self, name)
            if not isinstance(v, str) or not _ID_RE.fullmatch(v):
                raise StorePermanentError("any", f"{name} must match {_ID_RE.pattern}")
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 0:
            raise StorePermanentError("any", "seq must be a non-negative integer")


KIND_TEXT = {k: k.value for k in Kind}
"""A kind's column text: an enum's `.value` is a descriptor call, once per stored row."""


@dataclass(frozen=True, slots=True, init=False)
class TaggedRecord:
    """A record stamped by the retention policy; `expires_at` None means no fixed
    expiry (kept while the contract lasts, removed by offboarding or a DSR).

    One is built per ingested record, so `__init__` fills the slots directly: a
    frozen dataclass's generated one goes through `object.__setattr__` per field,
    several times slower. The class stays frozen."""

    record: Record
    retention_class: str
    legal_basis: str
    expires_at: float | None

    def __init__(self, record: Record, retention_class: str, legal_basis: str,
                 expires_at: float | None) -> None:
        _set_record(self, record)
        _set_class(self, retention_class)
        _set_basis(self, legal_basis)
        _set_expiry(self, expires_at)


_set_record = vars(TaggedRecord)["record"].__set__
_set_class = vars(TaggedRecord)["retention_class"].__set__
_set_basis = vars(TaggedRecord)["legal_basis"].__set__
_set_expiry = vars(TaggedRecord)["expires_at"].__set__


@runtime_checkable
class Store(Protocol):
    backend: str

    def migrate(self) -> int:
        """Bring the schema up to date; returns the schema version now in force."""
        ...

    def write_batch(self, batch: BatchMeta, records: Sequence[TaggedRecord]) -> bool:
        """Store the batch row and all its records in one transaction; False (and
        nothing written) if `(agent_id, batch_id)` was stored before."""
        ...

    def quarantine(self, reason: str, topic: str, agent_id: str | None,
                   batch_id: str | None, size: int, digest: str) -> None: ...

    def count_records(self, **filters: Any) -> int: ...

    def count_batches(self, **filters: Any) -> int: ...

    def count_quarantined(self, reason: str | None = None) -> int: ...

    def purge_expired(self, now: float, dry_run: bool = False) -> dict[str, int]:
        """Delete records whose expiry is at or before `now`, except restricted and held ones;
        returns the count per retention class (what would go, under dry_run)."""
        ...

    def counts_by_class(self) -> dict[str, int]: ...

    def size_bytes(self) -> int: ...

    def ping(self) -> None:
        """A cheap round trip for readiness probes; raises `StoreError` when down."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class SqlStore(Store, Protocol):
    """A store the query side can run SQL on: `?` placeholders, one transaction per
    `tx()`, and the dialect for what differs. Every table the collector owns is
    created by `migrate()`."""

    dialect: Dialect

    def tx(self, write: bool = False) -> AbstractContextManager[Cursor]:
        """One transaction. `write` takes the write lock at the start where the backend
        has one, so a read-then-write (the audit chain head) cannot interleave."""
        ...

    def schema_version(self) -> int: ...


def check_filters(backend: str, filters: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Filters by column equality; an unknown column is a caller bug, said clearly."""
    out = []
    for k, v in sorted(filters.items()):
        if k not in _FILTERS:
            raise StorePermanentError(backend, f"cannot filter records by {k!r}; "
                                      f"known: {', '.join(_FILTERS)}")
        out.append((k, v))
    return out


def check_records(backend: str, batch: BatchMeta, records: Sequence[TaggedRecord]) -> None:
    """A batch's records belong to its tenant and are unique within it; anything
    else is a producer bug that must not reach the tables. Permanent: the same
    batch fails the same way on every delivery, so ingest parks it."""
    seen: set[str] = set()
    for t in records:
        r = t.record
        if r.tenant != batch.tenant:
            raise StorePermanentError(backend, f"record tenant {r.tenant!r} differs from "
                                      f"batch tenant {batch.tenant!r}")
        if r.id in seen:
            raise StorePermanentError(backend, f"record id {r.id} appears twice in the batch")
        seen.add(r.id)
        if not t.retention_class or not t.legal_basis:
            raise StorePermanentError(backend, "every record needs a retention class "
                                      "and a legal basis")


def migrations(backend: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) for the backend, in order, from the packaged SQL files."""
    folder = importlib.resources.files("collector.store").joinpath("migrations", backend)
    out = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d{4})_([a-z0-9_]+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if versions != list(range(1, len(versions) + 1)):
        raise StorePermanentError(backend, f"migrations must be numbered 1..n, got {versions}")
    return out


def apply_migrations(cur: Cursor, backend: str, known: list[tuple[int, str, str]],
                     run_script: Callable[[str], object]) -> int:
    """The one migration scheme every backend runs, inside the transaction (and
    under the cross-process lock) its caller holds: versions recorded in
    `schema_version`, the missing ones applied in order, a newer schema refused.
    `run_script` runs one migration file the way the driver can."""
    cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
    current = int(cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version"
                              ).fetchone()[0])
    if current > len(known):
        raise StorePermanentError(backend, f"schema version {current} is newer than "
                                  f"this privtel ({len(known)}); upgrade privtel")
    for version, name, text in known[current:]:
        run_script(text)
        cur.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (version, name, time.time()))
    return len(known)
