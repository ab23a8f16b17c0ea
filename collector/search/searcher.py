"""Running queries: SQL built from a `SearchQuery` through the store's dialect,
cursor pages, NDJSON export, DSR annotations attached.

Indicators (raw addresses from a threat feed) are pseudonymised forward with
the tenant's key (`TenantKeys`) and matched through the address index;
subjects of any other class (user, e-mail, phone, host, person, MAC) become
their keyed tokens and are matched through the token index. A record matches
if it holds any of them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from collector.search.index import AddressIndex, net_range
from collector.search.keys import TenantKeys
from collector.search.query import Network, SearchQuery, encode_cursor
from collector.store import Db

_RECORD_COLS = ("id", "tenant", "site", "device", "kind", "name", "ts", "fields",
                "retention_class", "expires_at", "restricted")


@dataclass
class Page:
    records: list[dict[str, Any]]
    next_cursor: str | None
    pseudonymous_ranges: list[str] = field(default_factory=list)


class Searcher:
    """Runs queries; `include_restricted` is for the DSR code only.

    For a tenant under a restriction a query first indexes what has arrived
    (`refresh(eager=True)`), which flags the new records of a restricted subject,
    and then reads only indexed rows: a record committed between the two has not
    been checked yet, so it waits for the next query instead of being shown."""

    def __init__(self, db: Db, keys: TenantKeys | None = None,
                 index: AddressIndex | None = None) -> None:
        self.db = db
        self.keys = keys or TenantKeys()
        self.index = index or AddressIndex(db)

    def ranges(self, q: SearchQuery) -> list[Network]:
        nets: list[Network] = [] if q.ip is None else [q.ip]
        for n in q.indicators:
            nets.extend(self.keys.networks(q.tenant, n))
        return nets

    def tokens(self, q: SearchQuery) -> list[str]:
        """The index tokens the query names: its pseudonymous `token` and its subjects'."""
        out = [] if q.token is None else [q.token]
        if q.subjects:
            out += self.keys.tokens(q.tenant, q.subjects)
        return sorted(set(out))

    def _guard(self, tenant: str, include_restricted: bool) -> bool:
        """Whether the query must read only checked (indexed) rows; if so, index first."""
        if include_restricted or not self.index.guarded(tenant):
            return False
        self.index.refresh(eager=True)
        return True

    def _sql(self, q: SearchQuery, nets: list[Network], include_restricted: bool,
             limit: int | None, checked_only: bool = False,
             tokens: list[str] | None = None) -> tuple[str, list[Any]]:
        d = self.db.dialect
        where: list[str] = ["tenant = ?"]
        args: list[Any] = [q.tenant]
        if not include_restricted:
            where.append(f"restricted = {d.false}")
        if checked_only:
            where.append("EXISTS (SELECT 1 FROM indexed_records i WHERE i.tenant = "
                         "records.tenant AND i.record_id = records.id)")
        for col in ("site", "device", "kind", "name"):
            v = getattr(q, col)
            if v is not None:
                where.append(f"{col} = ?")
                args.append(v)
        if q.since is not None:
            where.append("ts >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("ts < ?")
            args.append(q.until)
        if q.text is not None:
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", q.text) + "%"
            where.append(d.ilike("fields"))
            args.append(pattern)
        if q.ip is not None or q.by_identifier or q.token is not None:
            where.append(match_subject(nets, tokens or [], q.tenant, args))
        if q.cursor is not None:
            where.append("(ts > ? OR (ts = ? AND id > ?))")
            args += [q.cursor[0], q.cursor[0], q.cursor[1]]
        sql = (f"SELECT {', '.join(_RECORD_COLS)} FROM records WHERE " + " AND ".join(where)
               + " ORDER BY ts, id")
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return sql, args

    def _row(self, r: Any) -> dict[str, Any]:
        return {"id": r[0], "tenant": r[1], "site": r[2], "device": r[3], "kind": r[4],
                "name": r[5], "ts": float(r[6]), "fields": self.db.dialect.json(r[7]),
                "retention_class": r[8], "expires_at": r[9], "restricted": bool(r[10])}

    def search(self, q: SearchQuery, *, include_restricted: bool = False,
               fresh: bool = False) -> Page:
        nets, toks = self.ranges(q), self.tokens(q)
        checked = self._guard(q.tenant, include_restricted)
        if fresh or ((nets or toks) and not checked):
            self.index.refresh(force=fresh)
        sql, args = self._sql(q, nets, include_restricted, q.limit + 1, checked, toks)
        with self.db.tx() as cur:
            rows = cur.execute(sql, args).fetchall()
        more = len(rows) > q.limit
        out = [self._row(r) for r in rows[:q.limit]]
        self.annotate(out)
        nxt = encode_cursor(out[-1]["ts"], out[-1]["id"]) if more and out else None
        return Page(out, nxt, [str(n) for n in nets if q.indicators])

    def iterate(self, q: SearchQuery, *, include_restricted: bool = False,
                page: int = 500) -> Iterator[dict[str, Any]]:
        """Every match in time order, page by page (NDJSON export), from `q.cursor` on."""
        cursor = q.cursor
        nets, toks = self.ranges(q), self.tokens(q)
        checked = self._guard(q.tenant, include_restricted)
        if (nets or toks) and not checked:
            self.index.refresh()
        while True:
            qq = dataclasses.replace(q, cursor=cursor, limit=page)
            sql, args = self._sql(qq, nets, include_restricted, page, checked, toks)
            with self.db.tx() as cur:
                rows = [self._row(r) for r in cur.execute(sql, args).fetchall()]
            self.annotate(rows)
            yield from rows
            if len(rows) < page:
                return
            cursor = (rows[-1]["ts"], rows[-1]["id"])

    def annotate(self, rows: list[dict[str, Any]]) -> None:
        """Attach DSR corrections (annotations) to the records they correct."""
        if not rows:
            return
        by_key = {(r["tenant"], r["id"]): r for r in rows}
        for r in rows:
            r["annotations"] = []
        with self.db.tx() as cur:
            for tenant in sorted({t for t, _ in by_key}):
                ids = [i for t, i in by_key if t == tenant]
                marks = ", ".join("?" for _ in ids)
                notes = cur.execute(f"SELECT record_id, id, ts, note, request_id FROM "
                                    f"annotations WHERE tenant = ? AND record_id IN ({marks})"
                                    f" ORDER BY ts", [tenant, *ids]).fetchall()
                for rid, nid, ts, note, req in notes:
                    by_key[tenant, rid]["annotations"].append(
                        {"id": nid, "ts": float(ts), "note": note, "request_id": req})

    def stats(self, tenant: str) -> dict[str, int]:
        """Unrestricted record counts by kind: what the NOC role may see. Under a
        restriction new records are indexed (and so flagged) first; unlike a search
        the count does not also wait for a record committed a moment later."""
        self._guard(tenant, False)
        with self.db.tx() as cur:
            rows = cur.execute("SELECT kind, COUNT(*) FROM records WHERE tenant = ? AND "
                               f"restricted = {self.db.dialect.false} GROUP BY kind",
                               (tenant,)).fetchall()
        return {str(k): int(n) for k, n in rows}


def match_subject(nets: list[Network], tokens: list[str], tenant: str, args: list[Any]
                  ) -> str:
    """WHERE part: the record holds an address in one of `nets` or one of `tokens`
    (the derived indexes; a host token may also be the record's own device), as one
    `id IN (...)` so the planner can keep a semi-join; appends its arguments.
    Nothing named matches nothing."""
    parts = []
    if nets:
        ranges = []
        args.append(tenant)
        for n in nets:
            fam, lo, hi = net_range(n)
            ranges.append("(family = ? AND addr BETWEEN ? AND ?)")
            args += [fam, lo, hi]
        parts.append("SELECT record_id FROM record_addresses WHERE tenant = ? AND ("
                     + " OR ".join(ranges) + ")")
    if tokens:
        marks = ", ".join("?" for _ in tokens)
        parts.append(f"SELECT record_id FROM record_tokens WHERE tenant = ? AND token IN "
                     f"({marks})")
        parts.append(f"SELECT id FROM records WHERE tenant = ? AND device IN ({marks})")
        args += [tenant, *tokens, tenant, *tokens]
    return "id IN (" + " UNION ALL ".join(parts) + ")" if parts else "1 = 0"


def ndjson(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for r in rows:
        yield orjson.dumps(r) + b"\n"
