"""Data-subject requests: export, erase, restrict, unrestrict, correct, object,
unobject.

An objection (Art. 21) is recorded like a restriction; the objections in force
(`objections_in_force`) are the tenant's suppression list, which the caller
signs and publishes to the tenant's agents (`pipelines.suppression`): they drop
the subject's records before they are spooled. Records already stored stay as
they are; a `restrict` hides them.

A subject is identified by raw addresses and by identifiers of any other
class (`subjects`: user, e-mail, phone, host, person, MAC; the subject-file
format of `pipelines.pseudonym.subjects`), optionally with a time range. The
records hold only pseudonyms, so each is pseudonymised forward with each
tenant's key(s) and looked up in the derived index (addresses by range,
everything else by token); nothing raw is ever stored: the request row keeps
the subject as pseudonymous ranges and tokens per tenant (an entry with a `/`
is a range, any other a token).

Erasure deletes the records and every derived copy (address index, indexing
marks, correction annotations) in one transaction, then searches again and
records whether the subject is gone (`verified`). Records a legal hold covers
(`collector.holds`) are not erased: the result says how many and which holds
keep them, and an erase that finds only held records is `refused`. Restriction sets the
store's `restricted` flag: search and export skip such rows for every role,
the purge keeps them, and only these DSR calls still see them.

Lifting a restriction (Art. 18(3)) clears the flag on the subject's records,
except where a record also belongs to someone whose restriction is still in
force: one flag per record cannot say whose it is, so the recorded requests
are replayed to find the restrictions still standing, and a record holding
any of their pseudonyms stays hidden (reported as `kept`). When in doubt it
stays hidden.

A restriction also covers the subject's records that arrive after it: the same
replay (`restrictions_in_force`) is the address index's restrictions hook
(passed in where the index is built, `DsrService` checks it), which flags
each new record of a restricted range as it indexes it. See `DsrService.run`
for why a record arriving while a restrict runs is not missed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import orjson

from collector import holds
from collector.search import (
    Network,
    QueryError,
    Restriction,
    Searcher,
    SearchQuery,
    identifiers_of,
    net_range,
    parse_identifiers,
    parse_window,
    unknown_names,
)
from collector.store import Cursor, Db
from pipelines.digest import sha256_hex
from pipelines.pseudonym.subjects import Subject

KINDS = ("export", "erase", "restrict", "unrestrict", "correct", "object", "unobject")
MAX_NOTE = 2000
_KEYS = {"tenants", "addresses", "subjects", "since", "until", "reason", "note",
         "record_ids", "format", "field", "value", "reidentify"}
_FIELD_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_.")
_TENANT_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
Found = dict[str, dict[str, float]]  # per tenant, the records found: id -> ts


@dataclass(frozen=True, slots=True)
class DsrRequest:
    kind: str
    tenants: tuple[str, ...]
    addresses: tuple[Network, ...] = field(repr=False)  # raw: never stored or logged
    since: float | None = None
    until: float | None = None
    reason: str = ""
    note: str | None = field(default=None, repr=False)
    record_ids: tuple[str, ...] | None = None
    ndjson: bool = False
    subjects: tuple[Subject, ...] = field(default=(), repr=False)  # raw, as `addresses`
    replace_field: str | None = None  # correct: replace this field's value ...
    value: Any = field(default=None, repr=False)  # ... with this one
    reidentify: bool = False  # export: the subject's own identifiers in clear


@dataclass
class DsrResult:
    request_id: str
    kind: str
    status: str
    count: int
    per_tenant: dict[str, int]
    verified: bool | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    kept: dict[str, int] | None = None  # unrestrict: still hidden by another restriction
    held: dict[str, int] | None = None  # erase: kept by a legal hold
    holds: list[dict[str, str]] | None = None  # erase: which holds, and why
    suppression: dict[str, list[str]] | None = None  # object/unobject: the list now in force

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request_id": self.request_id, "kind": self.kind,
                               "status": self.status, "count": self.count,
                               "per_tenant": self.per_tenant}
        if self.verified is not None:
            out["verified"] = self.verified
        if self.kept is not None:
            out["kept"] = self.kept
        if self.held is not None:
            out["held"] = self.held
            out["holds"] = self.holds or []
        if self.suppression is not None:
            out["suppression"] = self.suppression
        return out


def parse_request(kind: str, body: Any) -> DsrRequest:
    if kind not in KINDS:
        raise QueryError(f"request kind must be one of {', '.join(KINDS)}")
    if not isinstance(body, Mapping):
        raise QueryError("the request body must be a JSON object")
    unknown = sorted(str(k) for k in set(body) - _KEYS)
    if unknown:
        raise QueryError(unknown_names(unknown, _KEYS, "field"))
    tenants = body.get("tenants")
    if not isinstance(tenants, list) or not 0 < len(tenants) <= 100 or not all(
            isinstance(t, str) and 0 < len(t) <= 63 and set(t) <= _TENANT_CHARS
            and t[0] not in "-_" for t in tenants):
        raise QueryError("tenants must be a list of 1 to 100 tenant names")
    if body.get("subjects") is None and body.get("addresses") is None:
        raise QueryError("addresses or subjects is required: the identifiers of the subject")
    nets, subjects = parse_identifiers(body, "identifying the subject")
    since, until = parse_window(body)
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 200:
        raise QueryError("reason must be a string of at most 200 characters")
    note = body.get("note")
    name, value = body.get("field"), body.get("value")
    if kind == "correct":
        if not isinstance(note, str) or not 0 < len(note) <= MAX_NOTE:
            raise QueryError(f"note is required for a correction (1 to {MAX_NOTE} characters)")
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 63
                                 or not set(name) <= _FIELD_CHARS):
            raise QueryError("field must be a record field name (a-z, 0-9, '_', '.')")
        if (name is None) != ("value" not in body):
            raise QueryError("field and value go together: the field to correct and its "
                             "new value")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise QueryError("value must be a string, number or boolean")
        if isinstance(value, str) and len(value) > MAX_NOTE:
            raise QueryError(f"value must be at most {MAX_NOTE} characters")
    elif note is not None or name is not None or "value" in body:
        raise QueryError("note, field and value are only for correct requests")
    ids = body.get("record_ids")
    if ids is not None and (not isinstance(ids, list) or not 0 < len(ids) <= 1000 or not all(
            isinstance(i, str) and len(i) == 32 and set(i) <= set("0123456789abcdef")
            for i in ids)):
        raise QueryError("record_ids must be a list of 1 to 1000 record ids (32 hex)")
    fmt = body.get("format", "json")
    if fmt not in ("json", "ndjson") or (fmt == "ndjson" and kind != "export"):
        raise QueryError("format must be json, or ndjson for export")
    reid = body.get("reidentify", False)
    if not isinstance(reid, bool) or (reid and (kind != "export" or fmt != "json")):
        raise QueryError("reidentify is true or false, and only for a JSON export")
    return DsrRequest(kind, tuple(dict.fromkeys(tenants)), nets, since, until, reason, note,
                      None if ids is None else tuple(ids), fmt == "ndjson", subjects,
                      name, value, reid)



def split_subject(entries: list[str]) -> tuple[list[Network], frozenset[str]]:
    """A request row's subject entries for one tenant: ranges (with a `/`) and
    tokens (keyed `tk-` tokens and MAC pseudonyms, everything else)."""
    nets = [ipaddress.ip_network(e) for e in entries if "/" in e]
    return nets, frozenset(e for e in entries if "/" not in e)


def restrictions_in_force(cur: Cursor) -> dict[str, list[Restriction]]:
    """Per tenant, the restrictions still in force, found by replaying the recorded
    requests in order. A restriction (one restrict request's ranges in one tenant)
    stands until an unrestrict is done whose ranges cover all of its ranges, over
    at least its time range, for all records (not narrowed by `record_ids`). A
    restrict stands whatever its recorded status, as it always has for lifting:
    when in doubt, hidden. One small query when no restriction was ever recorded,
    which matters because the address index calls this on every step that
    indexes records."""
    rows = cur.execute("SELECT kind, subject, since, until, status, detail FROM dsr_requests "
                       "WHERE kind IN ('restrict', 'unrestrict') ORDER BY ts, id").fetchall()
    standing: list[tuple[str, Restriction]] = []
    for kind, subj, since, until, status, detail in rows:
        parts = {t: split_subject(v) for t, v in orjson.loads(subj).items()}
        since = None if since is None else float(since)
        until = None if until is None else float(until)
        if kind == "restrict":
            standing += [(t, Restriction(tuple(n), since, until, k))
                         for t, (n, k) in parts.items() if n or k]
        elif status == "done" and "record_ids" not in orjson.loads(detail):
            none: tuple[list[Network], frozenset[str]] = ([], frozenset())
            standing = [(t, r) for t, r in standing if not (
                _covers(parts.get(t, none)[0], list(r.networks))
                and r.tokens <= parts.get(t, none)[1]
                and (since is None or (r.since is not None and since <= r.since))
                and (until is None or (r.until is not None and until >= r.until)))]
    out: dict[str, list[Restriction]] = {}
    for t, r in standing:
        out.setdefault(t, []).append(r)
    return out


def objections_in_force(cur: Cursor) -> dict[str, list[str]]:
    """Per tenant, the pseudonymous ranges and tokens of objections not lifted: the
    suppression list the tenant's agents must apply. An objection stands until an
    unobject is done whose subject covers all of it."""
    rows = cur.execute("SELECT kind, subject, status FROM dsr_requests WHERE kind IN "
                       "('object', 'unobject') ORDER BY ts, id").fetchall()
    standing: list[tuple[str, list[Network], frozenset[str]]] = []
    for kind, subj, status in rows:
        subject = {t: split_subject(v) for t, v in orjson.loads(subj).items()}
        if kind == "object":
            standing += [(t, nets, toks) for t, (nets, toks) in subject.items() if nets or toks]
        elif status == "done":
            standing = [(t, nets, toks) for t, nets, toks in standing
                        if not (_covers(subject.get(t, ([], frozenset()))[0], nets)
                                and toks <= subject.get(t, ([], frozenset()))[1])]
    out: dict[str, set[str]] = {}
    for t, nets, toks in standing:
        out.setdefault(t, set()).update([str(n) for n in nets], toks)
    return {t: sorted(v) for t, v in out.items()}


class DsrService:
    def __init__(self, db: Db, searcher: Searcher) -> None:
        if searcher.index.restrictions is not restrictions_in_force:
            raise ValueError("the searcher's address index must be built with "
                             "restrictions=restrictions_in_force, or records of a restricted "
                             "subject that arrive later are not hidden")
        self.db, self.searcher = db, searcher

    def _query(self, tenant: str, req: DsrRequest) -> SearchQuery:
        return SearchQuery(tenant=tenant, since=req.since, until=req.until,
                           indicators=req.addresses, subjects=req.subjects, limit=1000)

    def subject(self, req: DsrRequest) -> dict[str, list[str]]:
        """The subject as pseudonymous ranges and tokens per tenant: what the request
        row keeps. Raises NoKeyError for a tenant without a key, before any change."""
        keys = self.searcher.keys
        return {t: sorted({str(n) for a in req.addresses for n in keys.networks(t, a)}
                          | set(keys.tokens(t, req.subjects))) for t in req.tenants}

    def find(self, req: DsrRequest) -> Iterator[dict[str, Any]]:
        """Every record of the subject, restricted ones included, tenant by tenant."""
        for t in req.tenants:
            for r in self.searcher.iterate(self._query(t, req), include_restricted=True):
                if req.record_ids is None or r["id"] in req.record_ids:
                    yield r

    def count(self, req: DsrRequest) -> dict[str, int]:
        self.searcher.index.refresh(force=True)
        out = dict.fromkeys(req.tenants, 0)
        for r in self.find(req):
            out[r["tenant"]] += 1
        return out

    def _ids(self, req: DsrRequest) -> Found:
        self.searcher.index.refresh(force=True)
        return self._found(req)

    def _found(self, req: DsrRequest) -> Found:
        out: Found = {t: {} for t in req.tenants}
        for r in self.find(req):
            out[r["tenant"]][r["id"]] = r["ts"]
        return out

    def run(self, req: DsrRequest, *, actor: str, request_id: str,
            now: float | None = None) -> DsrResult:
        """Carry out a request (an export collects its records) and record it.

        A restrict or unrestrict changes which records the index must flag, but
        only once its row is in `dsr_requests`, at the end. An index step that read
        the restrictions before that row existed may flag (restrict) or hide
        (unrestrict) a record by the old rule, and that record may have committed
        after this request's first pass. So, once the row is recorded, a second
        pass indexes and looks again. Its refresh takes the index lock (in this
        process) and the step's advisory lock (PostgreSQL; SQLite serialises the
        write transactions anyway): any step that read the old rule has committed
        by then, so its records are found, and every step after it reads the new
        row. Meanwhile the tenants' searches stay guarded (`AddressIndex.holding`).
        Counts are of the first pass: what arrived during the request is treated
        like what arrives after it, flagged or lifted but not counted."""
        changes = req.kind in ("restrict", "unrestrict")
        with self.searcher.index.holding(req.tenants) if changes else nullcontext():
            result = self._run(req, actor=actor, request_id=request_id, now=now)
            if changes and result.status == "done":
                self._second_pass(req)
        if req.kind in ("object", "unobject"):
            with self.db.tx() as cur:
                force = objections_in_force(cur)
            result.suppression = {t: force.get(t, []) for t in req.tenants}
        return result

    def _second_pass(self, req: DsrRequest) -> None:
        self.searcher.index.refresh(eager=True)
        ids = self._found(req)
        if req.kind == "restrict":
            self._flag(ids, True)
        else:
            held = self._held(ids, self._standing(req, self.subject(req)))
            self._flag(_without(ids, held), False)

    def _run(self, req: DsrRequest, *, actor: str, request_id: str,
             now: float | None) -> DsrResult:
        subject = self.subject(req)  # NoKeyError before any change
        result = DsrResult(request_id, req.kind, "failed", 0, {})
        try:
            if req.kind == "export":
                self.searcher.index.refresh(force=True)
                result.records = list(self.find(req))
                if req.reidentify:
                    result.records = self._reidentify(req, result.records)
                result.per_tenant = dict.fromkeys(req.tenants, 0)
                for r in result.records:
                    result.per_tenant[r["tenant"]] += 1
            else:
                ids = self._ids(req)
                result.per_tenant = {t: len(v) for t, v in ids.items()}
                if req.kind in ("object", "unobject"):
                    pass  # recorded below; the list in force is read back by `run`
                elif req.kind == "erase":
                    held = self._under_hold(ids, result)
                    gone = _without(ids, held)
                    self._erase(gone)
                    left = self.count(req)
                    result.verified = (sum(left.values()) == sum(map(len, held.values()))
                                       and self._gone(gone))
                    if any(held.values()) and not any(gone.values()):
                        result.status = "refused"
                elif req.kind == "restrict":
                    self._flag(ids, True)
                elif req.kind == "unrestrict":
                    held = self._held(ids, self._standing(req, subject))
                    result.per_tenant = self._flag(_without(ids, held), False)
                    result.kept = {t: len(held[t]) for t in req.tenants}
                else:
                    assert req.note is not None
                    name, digests = req.replace_field, None
                    if name is not None:
                        digests = self._replace(ids, name, req.value)
                        result.per_tenant = {t: len(v) for t, v in digests.items()}
                        ids = {t: {i: ids[t][i] for i in v} for t, v in digests.items()}
                    self._correct(ids, req.note, actor, request_id, now, changed_field=name,
                                  digests=digests)
            result.count = sum(result.per_tenant.values())
            if result.status != "refused":
                result.status = "failed" if result.verified is False else "done"
            return result
        finally:
            self._record(req, result, actor, subject, now)

    def export_stream(self, req: DsrRequest, *, actor: str, request_id: str,
                      now: float | None = None) -> tuple[DsrResult, Iterator[bytes]]:
        """An export as NDJSON: a header line with the count (for progress bars), then
        one record per line. Counted first, recorded before the first byte is sent."""
        subject = self.subject(req)  # NoKeyError before anything runs
        per = self.count(req)
        result = DsrResult(request_id, "export", "done", sum(per.values()), per)
        self._record(req, result, actor, subject, now)

        def lines() -> Iterator[bytes]:
            yield orjson.dumps({"request_id": request_id, "count": result.count,
                                "per_tenant": per}) + b"\n"
            for r in self.find(req):
                yield orjson.dumps(r) + b"\n"

        return result, lines()

    def _reidentify(self, req: DsrRequest, records: list[dict[str, Any]]
                    ) -> list[dict[str, Any]]:
        """The subject's own addresses back in clear in their records, so they can
        recognise them (Art. 15, 20): each of the request's single addresses is
        pseudonymised forward under every key epoch, and exactly those pseudonyms
        are put back. Other people's pseudonyms, and addresses the subject named
        only as a prefix, stay pseudonymised. Lists the fields that changed."""
        singles = [a for a in req.addresses if a.prefixlen == a.max_prefixlen]
        out = []
        for r in records:
            back = {str(n.network_address): str(a.network_address)
                    for a in singles for n in self.searcher.keys.networks(r["tenant"], a)}
            fields, changed = {}, []
            for k, v in r["fields"].items():
                new = _put_back(v, back) if isinstance(v, str) else v
                fields[k] = new
                if new != v:
                    changed.append(k)
            out.append({**r, "fields": fields, "reidentified_fields": sorted(changed)})
        return out

    def _chunks(self, ids: Found) -> Iterator[tuple[str, list[str]]]:
        for t, v in ids.items():
            keys = list(v)
            for i in range(0, len(keys), 500):
                yield t, keys[i:i + 500]

    def _records(self, ids: Found, t: str, chunk: list[str]) -> tuple[str, list[Any]]:
        """WHERE for these records: by (tenant, ts, id), the order of the search index,
        which is the one index on records that serves a lookup by id."""
        times = sorted({ids[t][i] for i in chunk})
        return (f"tenant = ? AND ts IN ({', '.join('?' for _ in times)}) AND id IN "
                f"({', '.join('?' for _ in chunk)})", [t, *times, *chunk])

    def _erase(self, ids: Found) -> None:
        with self.db.tx(write=True) as cur:
            for t, chunk in self._chunks(ids):
                marks = ", ".join("?" for _ in chunk)
                where, args = self._records(ids, t, chunk)
                cur.execute(f"DELETE FROM records WHERE {where}", args)
                cur.execute(f"DELETE FROM record_addresses WHERE tenant = ? AND record_id IN "
                            f"({marks})", [t, *chunk])
                cur.execute(f"DELETE FROM record_tokens WHERE tenant = ? AND record_id IN "
                            f"({marks})", [t, *chunk])
                cur.execute(f"DELETE FROM annotations WHERE tenant = ? AND record_id IN "
                            f"({marks})", [t, *chunk])
                cur.execute(f"DELETE FROM indexed_records WHERE tenant = ? AND record_id IN "
                            f"({marks})", [t, *chunk])

    def _under_hold(self, ids: Found, result: DsrResult) -> dict[str, set[str]]:
        """The records among `ids` a legal hold keeps (Art. 17(3)(e): erasure does not
        reach data needed for legal claims); notes them, and the holds, in `result`.
        The sweep runs first, so a record that arrived after the hold is covered."""
        with self.db.tx(write=True) as cur:
            holds.sweep(cur)
            held = {t: holds.held_ids(cur, t, list(v)) for t, v in ids.items()}
            standing = [h for t in ids if held[t] for h in holds.active_holds(cur, t)]
        result.held = {t: len(v) for t, v in held.items()}
        result.holds = [{"id": h.id, "tenant": h.tenant, "reason": h.reason} for h in standing]
        return held

    def _gone(self, ids: Found) -> bool:
        with self.db.tx() as cur:
            for t, chunk in self._chunks(ids):
                marks = ", ".join("?" for _ in chunk)
                where, args = self._records(ids, t, chunk)
                checks = [(f"records WHERE {where}", args)] + [
                    (f"{table} WHERE tenant = ? AND record_id IN ({marks})", [t, *chunk])
                    for table in ("record_addresses", "record_tokens", "annotations")]
                for what, what_args in checks:
                    if cur.execute(f"SELECT COUNT(*) FROM {what}", what_args).fetchone()[0]:
                        return False
        return True

    def _flag(self, ids: Found, on: bool) -> dict[str, int]:
        """Set or clear `restricted`; per tenant, how many records changed."""
        value = self.db.dialect.true if on else self.db.dialect.false
        changed = dict.fromkeys(ids, 0)
        with self.db.tx(write=True) as cur:
            for t, chunk in self._chunks(ids):
                where, args = self._records(ids, t, chunk)
                cur.execute(f"UPDATE records SET restricted = {value} WHERE {where} AND "
                            f"restricted <> {value}", args)
                changed[t] += max(cur.rowcount, 0)
        return changed

    def _standing(self, req: DsrRequest, subject: dict[str, list[str]]
                  ) -> dict[str, tuple[list[Network], set[str]]]:
        """Per tenant, the pseudonymous ranges and tokens of restrictions still in
        force (`restrictions_in_force`) that are not this subject's: a restriction
        whose ranges and tokens all lie within the subject's is the one being lifted."""
        with self.db.tx() as cur:
            force = restrictions_in_force(cur)
        mine = {t: split_subject(v) for t, v in subject.items()}
        out: dict[str, tuple[list[Network], set[str]]] = {t: ([], set()) for t in req.tenants}
        for t, rs in force.items():
            if t not in out:
                continue
            nets, toks = mine.get(t, ([], frozenset()))
            for r in rs:
                if not (_covers(nets, list(r.networks)) and r.tokens <= toks):
                    out[t][0].extend(r.networks)
                    out[t][1].update(r.tokens)
        return out

    def _held(self, ids: Found, standing: dict[str, tuple[list[Network], set[str]]]
              ) -> dict[str, set[str]]:
        """The records among `ids` that hold a pseudonym or token of a standing
        restriction."""
        held: dict[str, set[str]] = {t: set() for t in ids}
        for t, chunk in self._chunks(ids):
            nets_all, toks_all = standing.get(t, ([], set()))
            nets = sorted(set(nets_all), key=str)
            toks = sorted(toks_all)
            marks = ", ".join("?" for _ in chunk)
            for i in range(0, len(nets), 100):
                parts: list[str] = []
                args: list[Any] = [t, *chunk]
                for n in nets[i:i + 100]:
                    fam, lo, hi = net_range(n)
                    parts.append("(family = ? AND addr BETWEEN ? AND ?)")
                    args += [fam, lo, hi]
                with self.db.tx() as cur:
                    found = cur.execute(f"SELECT DISTINCT record_id FROM record_addresses "
                                        f"WHERE tenant = ? AND record_id IN ({marks}) AND ("
                                        + " OR ".join(parts) + ")", args).fetchall()
                held[t].update(r for (r,) in found)
            for i in range(0, len(toks), 100):
                part = toks[i:i + 100]
                these = ", ".join("?" for _ in part)
                where, args = self._records(ids, t, chunk)
                with self.db.tx() as cur:
                    found = cur.execute(
                        f"SELECT DISTINCT record_id FROM record_tokens WHERE tenant = ? AND "
                        f"record_id IN ({marks}) AND token IN ({these})",
                        [t, *chunk, *part]).fetchall()
                    found += cur.execute(f"SELECT id FROM records WHERE {where} AND device IN "
                                         f"({these})", [*args, *part]).fetchall()
                held[t].update(r for (r,) in found)
        return held

    def _replace(self, ids: Found, name: str, value: Any) -> dict[str, dict[str, str]]:
        """Set `fields[name]` on the records that have the field; per tenant, record id
        -> SHA-256 of the old value (all that is kept of it). The new value is
        pseudonymised as the agent does for a field of that name. The record's rows in the
        address and token indexes are rebuilt from the new fields."""
        out: dict[str, dict[str, str]] = {t: {} for t in ids}
        with self.db.tx(write=True) as cur:
            for t, chunk in self._chunks(ids):
                new = self.searcher.keys.value(t, name, value)
                where, args = self._records(ids, t, chunk)
                rows = cur.execute(f"SELECT id, ts, fields FROM records WHERE {where}",
                                   args).fetchall()
                for rid, ts, raw in rows:
                    fields = self.db.dialect.json(raw)
                    if name not in fields:
                        continue
                    out[t][rid] = sha256_hex(orjson.dumps(fields[name]))
                    fields[name] = new
                    cur.execute("UPDATE records SET fields = ? WHERE tenant = ? AND ts = ? AND "
                                "id = ?", (orjson.dumps(fields).decode(), t, ts, rid))
                    addrs, toks = identifiers_of(fields)
                    for table in ("record_addresses", "record_tokens"):
                        cur.execute(f"DELETE FROM {table} WHERE tenant = ? AND record_id = ?",
                                    (t, rid))
                    cur.executemany("INSERT INTO record_addresses (record_id, tenant, ts, family,"
                                    " addr) VALUES (?, ?, ?, ?, ?)",
                                    [(rid, t, float(ts), fam, a) for fam, a in sorted(addrs)])
                    cur.executemany("INSERT INTO record_tokens (record_id, tenant, ts, token) "
                                    "VALUES (?, ?, ?, ?)",
                                    [(rid, t, float(ts), tok) for tok in sorted(toks)])
        return out

    def _correct(self, ids: Found, note: str, actor: str, request_id: str,
                 now: float | None, *, changed_field: str | None = None,
                 digests: dict[str, dict[str, str]] | None = None) -> None:
        ts = time.time() if now is None else now
        rows = []
        for t, v in ids.items():
            text = self.searcher.keys.text(t, note)  # a raw address in the note never lands
            for rid in v:
                line = text
                if changed_field is not None and digests is not None:
                    line = (f"{text} [field {changed_field} replaced; old value "
                            f"sha256:{digests[t][rid]}]")
                rows.append((os.urandom(16).hex(), rid, t, ts, actor, request_id, line))
        if rows:
            with self.db.tx(write=True) as cur:
                cur.executemany("INSERT INTO annotations (id, record_id, tenant, ts, author, "
                                "request_id, note) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def _record(self, req: DsrRequest, result: DsrResult, actor: str,
                subject: dict[str, list[str]], now: float | None) -> None:
        detail: dict[str, Any] = {"per_tenant": result.per_tenant, "reason": req.reason}
        if result.verified is not None:
            detail["verified"] = result.verified
        if result.kept is not None:
            detail["kept"] = result.kept
        if result.held is not None:
            detail["held"] = result.held
            detail["holds"] = [h["id"] for h in result.holds or []]
        if req.replace_field is not None:
            detail["field"] = req.replace_field  # old values: digests in the annotations
        if req.record_ids is not None:
            detail["record_ids"] = len(req.record_ids)  # a narrowed request lifts no restriction
        with self.db.tx(write=True) as cur:
            cur.execute("INSERT INTO dsr_requests (id, ts, actor, kind, tenants, subject, since,"
                        " until, status, record_count, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                        "?, ?, ?)",
                        (result.request_id, time.time() if now is None else now, actor,
                         req.kind, ",".join(req.tenants),
                         orjson.dumps(subject, option=orjson.OPT_SORT_KEYS).decode(),
                         req.since, req.until, result.status, result.count,
                         orjson.dumps(detail, option=orjson.OPT_SORT_KEYS).decode()))

    def requests(self, visible: Any, limit: int = 100) -> list[dict[str, Any]]:
        """Recorded requests whose tenants all pass `visible(tenant)`, newest first."""
        with self.db.tx() as cur:
            rows = cur.execute("SELECT id, ts, actor, kind, tenants, subject, since, until, "
                               "status, record_count, detail FROM dsr_requests ORDER BY ts DESC"
                               " LIMIT ?", (limit * 10,)).fetchall()
        out = []
        for r in rows:
            tenants = r[4].split(",")
            if not all(visible(t) for t in tenants):
                continue
            out.append({"id": r[0], "ts": float(r[1]), "actor": r[2], "kind": r[3],
                        "tenants": tenants, "subject": orjson.loads(r[5]), "since": r[6],
                        "until": r[7], "status": r[8], "count": int(r[9]),
                        "detail": orjson.loads(r[10])})
            if len(out) >= limit:
                break
        return out


_ADDR_EDGE = r"(?<![0-9A-Za-z.:]){}(?![0-9A-Za-z:]|\.[0-9])"


def _put_back(text: str, back: Mapping[str, str]) -> str:
    for pseudonym, raw in back.items():
        text = re.sub(_ADDR_EDGE.format(re.escape(pseudonym)), raw, text)
    return text


def _without(ids: Found, held: dict[str, set[str]]) -> Found:
    return {t: {i: ts for i, ts in v.items() if i not in held[t]} for t, v in ids.items()}


def _covers(outer: list[Network], inner: list[Network]) -> bool:
    """Every range of `inner` lies within some range of `outer`."""
    return all(any(n.version == o.version and n.subnet_of(o)  # type: ignore[arg-type]
                   for o in outer) for n in inner)
