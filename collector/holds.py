"""Legal holds: a dispute or an authority's request freezes a tenant's records
(all of them, a time range, or one subject's) against the purge and erasure.

A hold is a row in `legal_holds`; what it covers is marked on the records
themselves (`records.held`) by `sweep`, because the purge runs in the store
backend (PostgreSQL drops whole expiry partitions) and can only skip what a
column tells it to. The sweep clears every mark and sets them again from the
holds in force, in one transaction, so adding and releasing are the same
operation and a record that arrived after the hold was placed is covered by
the next sweep (every purge sweeps first, and so does every erasure).

A subject is named by identifiers of any class (`addresses`, or `subjects` in
the subject-file form) and kept as pseudonymous ranges and tokens per tenant,
like a DSR request row (an entry with a `/` is a range, any other a token):
the raw values are pseudonymised forward with the tenant's key when the hold
is placed and never stored. A subject hold finds records through the address
and token indexes, so the caller refreshes the index before sweeping.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from collector.search import (
    Network,
    QueryError,
    TenantKeys,
    mask_addresses,
    match_subject,
    parse_identifiers,
    parse_window,
)
from collector.store import Cursor, Db
from pipelines.pseudonym.subjects import Subject

MAX_REASON = 200
_TENANT_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
_ADD_KEYS = {"tenant", "addresses", "subjects", "since", "until", "reason"}


class HoldError(QueryError):
    """A hold request the API refuses (400); never repeats an address."""


@dataclass(frozen=True, slots=True)
class HoldSpec:
    tenant: str
    addresses: tuple[Network, ...] | None  # raw: never stored or logged
    since: float | None
    until: float | None
    reason: str
    subjects: tuple[Subject, ...] = ()  # raw identifiers of the other classes, as above

    @property
    def whole_tenant(self) -> bool:
        return self.addresses is None and not self.subjects

    def __repr__(self) -> str:
        n = "all" if self.whole_tenant else \
            f"{len(self.addresses or ()) + len(self.subjects)} identifier(s)"
        return f"HoldSpec(tenant={self.tenant!r}, subject={n})"


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    tenant: str
    subject: list[str] | None  # pseudonymous ranges and tokens; None: the whole tenant
    since: float | None
    until: float | None
    reason: str
    actor: str
    created_at: float
    released_at: float | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}


def _reason(v: Any) -> str:
    if not isinstance(v, str) or not v.strip() or len(v) > MAX_REASON:
        raise HoldError(f"reason is required (1 to {MAX_REASON} characters): the dispute, "
                        "case or authority the hold is for")
    return mask_addresses(v.strip())


def valid_tenant(t: Any) -> bool:
    return (isinstance(t, str) and 0 < len(t) <= 63 and set(t) <= _TENANT_CHARS
            and t[0] not in "-_")


def parse_hold(body: Any) -> HoldSpec:
    if not isinstance(body, Mapping):
        raise HoldError("the request body must be a JSON object")
    unknown = sorted(set(body) - _ADD_KEYS)
    if unknown:
        names = ", ".join(repr(mask_addresses(str(u)[:40])) for u in unknown[:5])
        raise HoldError(f"unknown field(s) {names}; known: {', '.join(sorted(_ADD_KEYS))}")
    tenant = body.get("tenant")
    if not valid_tenant(tenant):
        raise HoldError("tenant must be a tenant name")
    nets, subjects = parse_identifiers(body, "(omit it to hold every record of the tenant)")
    since, until = parse_window(body)
    return HoldSpec(str(tenant), nets or None, since, until, _reason(body.get("reason")),
                    subjects)


_COLS = ("id, tenant, subject, since, until, reason, actor, created_at, released_at, "
         "released_by, release_reason")


def _hold(r: Sequence[Any]) -> Hold:
    return Hold(r[0], r[1], None if r[2] is None else orjson.loads(r[2]),
                None if r[3] is None else float(r[3]), None if r[4] is None else float(r[4]),
                r[5], r[6], float(r[7]), None if r[8] is None else float(r[8]), r[9], r[10])


def active_holds(cur: Cursor, tenant: str | None = None) -> list[Hold]:
    where = "released_at IS NULL" + (" AND tenant = ?" if tenant else "")
    rows = cur.execute(f"SELECT {_COLS} FROM legal_holds WHERE {where} ORDER BY created_at, id",
                       (tenant,) if tenant else ()).fetchall()
    return [_hold(r) for r in rows]


def _covers(h: Hold) -> tuple[str, list[Any]]:
    """WHERE over records for what `h` holds."""
    parts = ["tenant = ?"]
    args: list[Any] = [h.tenant]
    if h.since is not None:
        parts.append("ts >= ?")
        args.append(h.since)
    if h.until is not None:
        parts.append("ts < ?")
        args.append(h.until)
    if h.subject is not None:
        parts.append(match_subject([ipaddress.ip_network(n) for n in h.subject if "/" in n],
                                   [t for t in h.subject if "/" not in t], h.tenant, args))
    return " AND ".join(parts), args


def sweep(cur: Cursor) -> dict[str, int]:
    """Mark exactly the records the holds in force cover; per tenant, how many are
    held. Runs inside the caller's write transaction."""
    true, false = cur.dialect.true, cur.dialect.false
    cur.execute(f"UPDATE records SET held = {false} WHERE held = {true}")
    for h in active_holds(cur):
        where, args = _covers(h)
        cur.execute(f"UPDATE records SET held = {true} WHERE {where} AND held = {false}", args)
    return held_counts(cur)


def held_counts(cur: Cursor) -> dict[str, int]:
    rows = cur.execute(f"SELECT tenant, COUNT(*) FROM records WHERE held = {cur.dialect.true}"
                       " GROUP BY tenant").fetchall()
    return {str(t): int(n) for t, n in rows}


def held_ids(cur: Cursor, tenant: str, ids: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = list(ids[i:i + 500])
        rows = cur.execute(f"SELECT id FROM records WHERE tenant = ? AND held = "
                           f"{cur.dialect.true} AND id IN ({', '.join('?' for _ in chunk)})",
                           [tenant, *chunk]).fetchall()
        out.update(r for (r,) in rows)
    return out


class Holds:
    """Place, list and release holds. `keys` turns a subject's raw identifiers into
    the tenant's pseudonymous ranges and tokens; `refresh` brings the address and
    token indexes up to date before a sweep that has subject holds to apply."""

    def __init__(self, db: Db, keys: TenantKeys | None = None,
                 refresh: Any = None) -> None:
        self.db, self.keys, self._refresh = db, keys, refresh

    def sweep(self) -> dict[str, int]:
        if self._refresh is not None:
            self._refresh()
        with self.db.tx(write=True) as cur:
            return sweep(cur)

    def add(self, spec: HoldSpec, *, actor: str, now: float | None = None) -> tuple[Hold, int]:
        """The hold and how many records of its tenant are held once it is in force."""
        subject = None
        if not spec.whole_tenant:
            if self.keys is None:
                raise HoldError("this API holds no tenant keys: a subject hold needs the "
                                "tenant's key to find the subject's pseudonyms")
            subject = sorted({str(n) for a in spec.addresses or ()
                              for n in self.keys.networks(spec.tenant, a)}
                             | set(self.keys.tokens(spec.tenant, spec.subjects)))
        h = Hold(os.urandom(8).hex(), spec.tenant, subject, spec.since, spec.until, spec.reason,
                 actor, time.time() if now is None else now)
        with self.db.tx(write=True) as cur:
            cur.execute(f"INSERT INTO legal_holds ({_COLS}) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
                        (h.id, h.tenant, None if subject is None else orjson.dumps(subject
                                                                                  ).decode(),
                         h.since, h.until, h.reason, h.actor, h.created_at))
        return h, self.sweep().get(h.tenant, 0)

    def get(self, hold_id: str) -> Hold | None:
        with self.db.tx() as cur:
            r = cur.execute(f"SELECT {_COLS} FROM legal_holds WHERE id = ?", (hold_id,)
                            ).fetchone()
        return None if r is None else _hold(r)

    def list(self, tenants: Sequence[str] | None = None, *, active_only: bool = False
             ) -> list[Hold]:
        with self.db.tx() as cur:
            rows = cur.execute(f"SELECT {_COLS} FROM legal_holds ORDER BY created_at, id"
                               ).fetchall()
        out = [_hold(r) for r in rows]
        return [h for h in out if (tenants is None or h.tenant in tenants)
                and (h.active or not active_only)]

    def release(self, hold_id: str, *, actor: str, reason: str, now: float | None = None
                ) -> tuple[Hold, int]:
        """Release; returns the hold as released and how many records of its tenant
        stay held by other holds."""
        why = _reason(reason)
        with self.db.tx(write=True) as cur:
            cur.execute("UPDATE legal_holds SET released_at = ?, released_by = ?, "
                        "release_reason = ? WHERE id = ? AND released_at IS NULL",
                        (time.time() if now is None else now, actor, why, hold_id))
            if cur.rowcount == 0:
                raise HoldError("no hold in force with that id")
        h = self.get(hold_id)
        assert h is not None
        return h, self.sweep().get(h.tenant, 0)
