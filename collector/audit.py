"""The API's audit trail: one hash-chained row per query, export, DSR action,
verification and refused login, in the same database as the data.

The chain rule is `pipelines.auditchain` (one rule for every audit log in
privtel): each row's hash covers the previous row's hash and the row's
canonical JSON, so editing, deleting or reordering any row breaks every hash
after it. With a key (`--audit-key`), the hash is an HMAC, so someone who can
write the database but does not hold the key cannot rebuild a consistent
chain after an edit. Cutting entries off the end leaves a valid shorter
chain: `privtel audit anchor` appends the current head to a file kept
elsewhere, and `verify --anchors` then catches a cut.

Entries never hold a raw address or a secret: callers put counts, pseudonyms,
request ids and scrubbed query text in `detail`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from collector.store import Db
from pipelines import auditchain
from pipelines.auditchain import AuditChainError
from pipelines.config import ConfigError, require_private

_LOCK = 0x70726979
_COLS = ("seq", "ts", "actor", "role", "action", "tenants", "request_id", "outcome",
         "result_count", "detail", "prev", "hash")

__all__ = ["AuditChainError", "AuditLog", "Verified", "read_key"]


def read_key(path: Path | None) -> bytes | None:
    """The chain's HMAC key file (mode 0600, at least 16 bytes), or None without one.
    Every writer of one store's chain (API, purge service, `retention purge`,
    `reidentify --store`, parked-batch commands) reads the same file, so the chain
    stays one chain whoever appends to it."""
    if path is None:
        return None
    require_private(str(path), path.stat().st_mode)
    data = path.read_bytes().strip()
    if len(data) < 16:
        raise ConfigError(str(path), "", "audit key must be at least 16 bytes")
    return data


@dataclass(frozen=True, slots=True)
class Verified:
    entries: int
    head: str


class AuditLog:
    """Append and verify. Safe across threads and processes: the append reads
    the head and writes the next row inside one write-locked transaction."""

    def __init__(self, db: Db, key: bytes | None = None) -> None:
        if key is not None and len(key) < 16:
            raise ValueError("audit key must be at least 16 bytes")
        self.db, self._key = db, key

    def append(self, *, actor: str, role: str, action: str, tenants: tuple[str, ...] | list[str],
               request_id: str, outcome: str, count: int = 0,
               detail: Mapping[str, Any] | None = None, ts: float | None = None
               ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "ts": time.time() if ts is None else float(ts), "actor": actor, "role": role,
            "action": action, "tenants": ",".join(tenants), "request_id": request_id,
            "outcome": outcome, "count": int(count), "detail": dict(detail or {}),
        }
        with self.db.tx(write=True) as cur:
            self.db.dialect.lock(cur, _LOCK)
            row = cur.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
                              ).fetchone()
            seq, prev = (int(row[0]) + 1, str(row[1])) if row else (1, auditchain.GENESIS)
            entry["seq"] = seq
            linked = auditchain.link(prev, entry, self._key)
            cur.execute("INSERT INTO audit_log (seq, ts, actor, role, action, tenants, "
                        "request_id, outcome, result_count, detail, prev, hash) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (seq, entry["ts"], actor, role, action, entry["tenants"], request_id,
                         outcome, entry["count"],
                         orjson.dumps(entry["detail"], option=orjson.OPT_SORT_KEYS).decode(),
                         linked["prev"], linked["hash"]))
        return linked

    def record(self, action: str, **details: Any) -> None:
        """The `JsonlAuditLog.record` shape, so the retention service can write here."""
        import getpass

        try:
            actor = getpass.getuser()
        except (KeyError, OSError):
            actor = "system"
        self.append(actor=actor, role="system", action=action, tenants=("*",),
                    request_id=str(details.pop("request_id", "")) or _rid(),
                    outcome=str(details.get("result", "ok")),
                    count=int(details.get("total", 0) or 0), detail=details)

    def entries(self, after: int = 0, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Entries in chain order as dicts in the shape they were hashed in."""
        last = after
        while True:
            with self.db.tx() as cur:
                rows = cur.execute(f"SELECT {', '.join(_COLS)} FROM audit_log WHERE seq > ? "
                                   "ORDER BY seq LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            for r in rows:
                yield {"seq": int(r[0]), "ts": float(r[1]), "actor": r[2], "role": r[3],
                       "action": r[4], "tenants": r[5], "request_id": r[6], "outcome": r[7],
                       "count": int(r[8]), "detail": orjson.loads(r[9]), "prev": r[10],
                       "hash": r[11]}
            last = int(rows[-1][0])

    def verify(self, anchors: Mapping[int, str] | None = None) -> Verified:
        """The entry count and head hash, or AuditChainError naming the first bad entry
        (its 0-based position in the chain; `seq` is that plus one)."""
        n = 0

        def counted() -> Iterator[dict[str, Any]]:
            nonlocal n
            for e in self.entries():
                if e["seq"] != n + 1:
                    raise AuditChainError(n, f"sequence gap: expected seq {n + 1}, "
                                          f"found {e['seq']}")
                n += 1
                yield e

        head = auditchain.verify(counted(), self._key, anchors=anchors)
        return Verified(n, head)


def _rid() -> str:
    import os

    return os.urandom(8).hex()
