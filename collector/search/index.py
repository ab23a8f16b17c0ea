"""The derived identifier index: a write path beside the records.

Addresses sit inside the `fields` JSON (IP-classed fields, and free text such
as log lines). `AddressIndex` extracts every address of every record once into
`record_addresses(record_id, tenant, ts, family, addr)`, `addr` as fixed-width
hex, so any prefix is one range scan (`addr BETWEEN lo AND hi`), which works
on pseudonyms because they preserve prefixes. Rows are keyed by (tenant,
record id), like the records. A DSR erasure deletes from it too, and `prune()`
drops rows of purged records.

Every other identifier class goes to `record_tokens(record_id, tenant, ts,
token)`: the keyed `tk-...` tokens (user, e-mail, phone, host, person; the
same token in a field and inside text, so one regex finds them all) and MAC
pseudonyms in canonical colon form, from every string field. The record's
`device` (itself a host token) is not copied: `records (tenant, device, ts)`
already finds it, so the searcher asks it there, and the restriction check
below looks at it as it indexes. A subject named by any class is then one
equality probe per token (`TenantKeys.tokens`).

Indexing is also where a record that arrives after a DSR restriction gets its
`restricted` flag: the index is the first code to see its addresses, so it
checks them against the restrictions in force (a hook the owner passes in,
see `AddressIndex`) in the same transaction.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from collector.search.query import Network
from collector.store import Cursor, Db
from pipelines.pseudonym import FieldClass, classify
from pipelines.pseudonym.idscan import TOKEN
from pipelines.pseudonym.scan import find, format_mac


def _hex(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, str]:
    if a.version == 6 and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return (4, f"{int(a):08x}") if a.version == 4 else (6, f"{int(a):032x}")


def net_range(n: Network) -> tuple[int, str, str]:
    """(family, lo, hi) in the index's hex form."""
    fam, lo = _hex(n.network_address)
    _, hi = _hex(n.broadcast_address)
    return fam, lo, hi


def addresses_of(fields: Mapping[str, Any]) -> set[tuple[int, str]]:
    """Every address a record's fields hold: in any string, and integer IP fields."""
    return identifiers_of(fields)[0]


def identifiers_of(fields: Mapping[str, Any]) -> tuple[set[tuple[int, str]], set[str]]:
    """(addresses, tokens) a record's fields hold: addresses as in `addresses_of`;
    every `tk-` token and MAC (canonical colon form) in its strings. One pass of
    the address finder per string serves both."""
    addrs: set[tuple[int, str]] = set()
    tokens: set[str] = set()
    for v in fields.values():
        if not isinstance(v, str):
            continue
        if "tk-" in v:
            tokens.update(TOKEN.findall(v))
        for f in find(v):
            if f.kind == "mac":
                tokens.add(format_mac(int(f.value), ":"))  # type: ignore[arg-type]
            else:
                addrs.add(_hex(f.value))  # type: ignore[arg-type]
    for k, v in fields.items():
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 \
                and classify(k) is FieldClass.IP:
            addrs.add((4, f"{v:08x}"))
    return addrs, tokens


@dataclass(frozen=True, slots=True)
class Restriction:
    """One restriction in force for one tenant: the pseudonymous ranges and tokens
    (any other identifier class) of one restrict request, over record times in
    [since, until) where those are set. They stay together because a lift must
    cover all of them (dsr.py)."""

    networks: tuple[Network, ...]
    since: float | None = None
    until: float | None = None
    tokens: frozenset[str] = frozenset()


Restrictions = Mapping[str, Sequence[Restriction]]  # per tenant
# Reads the restrictions in force with the indexing step's cursor (see dsr.py).
RestrictionsHook = Callable[[Cursor], Restrictions]
_LOCK = 0x7072697A  # one indexing step at a time across processes


class _Standing:
    """Restrictions as a lookup for the indexer: per (tenant, family) and prefix
    length, the masked network and its time spans, so an address costs one dict
    probe per prefix length in use, not one comparison per restricted range."""

    def __init__(self, by_tenant: Restrictions) -> None:
        self.tenants = frozenset(t for t, rs in by_tenant.items()
                                 if any(r.networks or r.tokens for r in rs))
        self._spans: dict[tuple[str, int], dict[int, dict[int, list[tuple[
            float | None, float | None]]]]] = {}
        self._tokens: dict[tuple[str, str], list[tuple[float | None, float | None]]] = {}
        for t, rs in by_tenant.items():
            for r in rs:
                for tok in r.tokens:
                    self._tokens.setdefault((t, tok), []).append((r.since, r.until))
                for n in r.networks:
                    fam, bits, plen, net = _span(n)
                    (self._spans.setdefault((t, fam), {}).setdefault(plen, {})
                     .setdefault(net >> (bits - plen), []).append((r.since, r.until)))

    def hit(self, tenant: str, fam: int, addr: str, ts: float) -> bool:
        """Whether an index row (family, fixed-width hex, record time) is restricted."""
        by_len = self._spans.get((tenant, fam))
        if not by_len:
            return False
        a, bits = int(addr, 16), 32 if fam == 4 else 128
        for plen, nets in by_len.items():
            for since, until in nets.get(a >> (bits - plen), ()):
                if (since is None or ts >= since) and (until is None or ts < until):
                    return True
        return False


    def token_hit(self, tenant: str, token: str, ts: float) -> bool:
        """Whether an index token row (identifier token, record time) is restricted."""
        return any((since is None or ts >= since) and (until is None or ts < until)
                   for since, until in self._tokens.get((tenant, token), ()))


def _span(n: Network) -> tuple[int, int, int, int]:
    """(family, bits, prefix length, network as int) in the index's terms, where an
    IPv4-mapped IPv6 range counts as IPv4 (as `_hex` stores such addresses)."""
    if n.version == 6 and n.prefixlen >= 96 and n.network_address.ipv4_mapped is not None:
        return 4, 32, n.prefixlen - 96, int(n.network_address) & 0xFFFFFFFF
    return n.version, n.max_prefixlen, n.prefixlen, int(n.network_address)


_NO_RESTRICTIONS = _Standing({})


class AddressIndex:
    """Follows the `batches` table: each refresh indexes the records of batches
    received since the last one (minus `margin_s` for commits that land out of
    order), so its cost grows with what arrived, not with the store. A full
    sweep (every record not yet indexed) runs with the prune, every
    `prune_interval_s`, as a safety net for anything the window missed.

    `restrictions` (passed in by whoever wires the index to the DSR rules, the
    API: this module does not know them) reads the restrictions in force with
    the step's cursor; every record indexed whose address and time fall in one
    of its tenant's is flagged `restricted` in the same transaction, so a record
    is never indexed (and so never shown to a guarded search) unchecked. An
    index without the hook flags nothing: only the API's, which has it, may
    index a store that has restrictions."""

    def __init__(self, db: Db, *, restrictions: RestrictionsHook | None = None,
                 batches_per_step: int = 200, min_interval_s: float = 2.0,
                 prune_interval_s: float = 600.0, margin_s: float = 300.0) -> None:
        self.db, self.batches_per_step = db, batches_per_step
        self.min_interval_s, self.prune_interval_s = min_interval_s, prune_interval_s
        self.margin_s = margin_s
        self.analyze_after = 1000
        self.restrictions = restrictions
        self._watermark = -math.inf
        self._last = -math.inf
        self._last_sweep = time.monotonic()
        self._last_analyze = -math.inf
        self._lock = threading.Lock()
        # Which tenants are under a restriction, as last read (monotonic time, lookup):
        # read again by every step that indexes rows, after every restrict or unrestrict
        # (`holding`), and at most `min_interval_s` old otherwise, for another process's.
        self._known: tuple[float, _Standing] | None = None
        self._gen = 0
        self._held: dict[str, int] = {}
        self._guard_lock = threading.Lock()

    def _read_restrictions(self, cur: Cursor) -> _Standing:
        if self.restrictions is None:
            return _NO_RESTRICTIONS
        gen, at = self._gen, time.monotonic()
        standing = _Standing(self.restrictions(cur))
        with self._guard_lock:
            if self._gen == gen:  # a DSR that ended meanwhile may have changed them
                self._known = (at, standing)
        return standing

    def guarded(self, tenant: str) -> bool:
        """Whether `tenant` is under a restriction, so its searches must index first
        and read only indexed rows. Cached; one small query at most every
        `min_interval_s`, none when there is no hook."""
        if self.restrictions is None:
            return False
        with self._guard_lock:
            if self._held.get(tenant):
                return True
            known = self._known
        if known is None or time.monotonic() - known[0] >= self.min_interval_s:
            with self.db.tx() as cur:
                return tenant in self._read_restrictions(cur).tenants
        return tenant in known[1].tenants

    @contextmanager
    def holding(self, tenants: Sequence[str]) -> Iterator[None]:
        """Treat `tenants` as guarded while a restrict or unrestrict runs, then forget
        what was read: from the moment its row is written no search of theirs may
        trust an answer read before it, not even for the instant until this ends."""
        with self._guard_lock:
            for t in tenants:
                self._held[t] = self._held.get(t, 0) + 1
        try:
            yield
        finally:
            with self._guard_lock:
                for t in tenants:
                    self._held[t] -= 1
                    if not self._held[t]:
                        del self._held[t]
                self._gen += 1
                self._known = None

    def refresh(self, force: bool = False, *, eager: bool = False) -> int:
        """Index what arrived since the last refresh; returns how many records. Without
        `force`, at most once per `min_interval_s`, so paging does not re-check; with
        it (DSRs, which must miss nothing), also the full sweep and the prune. `eager`
        (a search of a tenant under a restriction) skips only the rate limit: what
        arrived must be indexed, and so checked against the restrictions, first."""
        with self._lock:
            now = time.monotonic()
            if not force and not eager and now - self._last < self.min_interval_s:
                return 0
            self._last = now
            total = 0
            while True:
                n_batches, n_records = self._step()
                total += n_records
                if n_batches < self.batches_per_step:
                    break
            if force or now - self._last_sweep >= self.prune_interval_s:
                self._last_sweep = now
                self.prune()
                total += self.sweep()
            if total >= self.analyze_after and now - self._last_analyze >= 300:
                # Without fresh statistics both planners probe records by id through
                # the (tenant, ts) index: PostgreSQL 0.5 s instead of 1 ms for a /24
                # (it assumes 1 row until autovacuum runs), SQLite 30 ms instead of 1.
                self._last_analyze = now
                with self.db.tx(write=True) as cur:
                    self.db.dialect.analyse(cur, ("records", "record_addresses",
                                                  "record_tokens", "indexed_records"))
            return total

    def _index(self, cur: Cursor, rows: list[Any], standing: _Standing) -> None:
        d = self.db.dialect
        addrs, toks = [], []
        devices = []
        for rid, tenant, ts, fields, device in rows:
            devices.append((rid, tenant, float(ts), device))
            found, tokens = identifiers_of(d.json(fields))
            for fam, addr in found:
                addrs.append((rid, tenant, float(ts), fam, addr))
            for tok in tokens:
                toks.append((rid, tenant, float(ts), tok))
        if rows:
            cur.executemany(d.insert_ignore("indexed_records", ("tenant", "record_id", "ts")),
                            [(r[1], r[0], float(r[2])) for r in rows])
        if addrs:
            cur.executemany("INSERT INTO record_addresses (record_id, tenant, ts, family, "
                            "addr) VALUES (?, ?, ?, ?, ?)", addrs)
        if toks:
            cur.executemany("INSERT INTO record_tokens (record_id, tenant, ts, token) "
                            "VALUES (?, ?, ?, ?)", toks)
        if standing.tenants:
            hit: dict[str, dict[str, float]] = {}
            for a in addrs:
                if a[1] in standing.tenants and standing.hit(a[1], a[3], a[4], a[2]):
                    hit.setdefault(a[1], {})[a[0]] = a[2]
            for k in toks + devices:
                if k[1] in standing.tenants and standing.token_hit(k[1], k[3], k[2]):
                    hit.setdefault(k[1], {})[k[0]] = k[2]
            for tenant, found_ids in sorted(hit.items()):
                ids = sorted(found_ids)
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    times = sorted({found_ids[x] for x in chunk})
                    cur.execute(f"UPDATE records SET restricted = ? WHERE tenant = ? AND ts IN "
                                f"({', '.join('?' for _ in times)}) AND id IN "
                                f"({', '.join('?' for _ in chunk)}) AND restricted = ?",
                                [d.bool(True), tenant, *times, *chunk, d.bool(False)])

    def _step(self) -> tuple[int, int]:
        since = self._watermark - self.margin_s
        with self.db.tx(write=True) as cur:
            self.db.dialect.lock(cur, _LOCK)
            batches = cur.execute(
                "SELECT b.agent_id, b.batch_id, b.received_at FROM batches b WHERE "
                "b.received_at >= ? AND NOT EXISTS (SELECT 1 FROM indexed_batches i WHERE "
                "i.agent_id = b.agent_id AND i.batch_id = b.batch_id) "
                "ORDER BY b.received_at LIMIT ?",
                (since if since > -math.inf else -1e300, self.batches_per_step)).fetchall()
            if not batches:
                return 0, 0
            n = 0
            standing: _Standing | None = None
            for agent_id, batch_id, _ in batches:
                rows = cur.execute(
                    "SELECT r.id, r.tenant, r.ts, r.fields, r.device FROM records r WHERE "
                    "r.agent_id = ? "
                    "AND r.batch_id = ? AND NOT EXISTS (SELECT 1 FROM indexed_records i "
                    "WHERE i.tenant = r.tenant AND i.record_id = r.id)",
                    (agent_id, batch_id)).fetchall()
                if rows and standing is None:
                    standing = self._read_restrictions(cur)  # under the lock: see dsr.py
                self._index(cur, rows, standing or _NO_RESTRICTIONS)
                n += len(rows)
            cur.executemany(self.db.dialect.insert_ignore(
                "indexed_batches", ("agent_id", "batch_id", "received_at")),
                            [(a, b, float(t)) for a, b, t in batches])
        self._watermark = max(self._watermark, max(float(t) for _, _, t in batches))
        return len(batches), n

    def sweep(self, limit: int = 5000) -> int:
        """Index every record not indexed yet, whatever its batch: a full scan, so rare."""
        total = 0
        while True:
            with self.db.tx(write=True) as cur:
                self.db.dialect.lock(cur, _LOCK)
                rows = cur.execute(
                    "SELECT r.id, r.tenant, r.ts, r.fields, r.device FROM records r WHERE NOT "
                    "EXISTS "
                    "(SELECT 1 FROM indexed_records i WHERE i.tenant = r.tenant AND "
                    "i.record_id = r.id) LIMIT ?",
                    (limit,)).fetchall()
                self._index(cur, rows, self._read_restrictions(cur) if rows
                            else _NO_RESTRICTIONS)
            total += len(rows)
            if len(rows) < limit:
                return total

    def prune(self) -> int:
        """Drop index rows whose record (or batch) is gone: retention purge, erasure."""
        with self.db.tx(write=True) as cur:
            cur.execute("DELETE FROM record_addresses WHERE NOT EXISTS (SELECT 1 FROM records r"
                        " WHERE r.tenant = record_addresses.tenant AND r.ts = record_addresses.ts"
                        " AND r.id = record_addresses.record_id)")
            n = cur.rowcount
            cur.execute("DELETE FROM record_tokens WHERE NOT EXISTS (SELECT 1 FROM records r"
                        " WHERE r.tenant = record_tokens.tenant AND r.ts = record_tokens.ts"
                        " AND r.id = record_tokens.record_id)")
            n += cur.rowcount
            cur.execute("DELETE FROM indexed_records WHERE NOT EXISTS (SELECT 1 FROM records r"
                        " WHERE r.tenant = indexed_records.tenant AND r.ts = indexed_records.ts"
                        " AND r.id = indexed_records.record_id)")
            cur.execute("DELETE FROM indexed_batches WHERE NOT EXISTS (SELECT 1 FROM batches b"
                        " WHERE b.agent_id = indexed_batches.agent_id AND b.batch_id = "
                        "indexed_batches.batch_id)")
            return n

