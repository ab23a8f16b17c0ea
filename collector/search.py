"""Search over pseudonymised records: filters, address and prefix search,
forward-pseudonymised indicators, cursor pages, NDJSON export.

Address search needs an index the records table does not have: addresses sit
inside the `fields` JSON (IP-classed fields, and free text such as log lines).
`AddressIndex` extracts every address of every record once into
`record_addresses(record_id, tenant, ts, family, addr)`, `addr` as fixed-width
hex, so any prefix is one range scan (`addr BETWEEN lo AND hi`), which works
on pseudonyms because they preserve prefixes. It is a derived table: a DSR
erasure deletes from it too, and `prune()` drops rows of purged records.

Indexing is also where a record that arrives after a DSR restriction gets
its `restricted` flag: the index is the first code to see its addresses, so
it checks them against the restrictions in force (which the DSR code works
out and hands over as a hook, see `AddressIndex.restrictions`) in the same
transaction. A search of a tenant under a restriction first indexes whatever
has arrived and reads only indexed rows, so nothing unchecked is shown.

Indicators (raw addresses from a threat feed) are pseudonymised forward with
the tenant's key by `TenantKeys`, which holds the keys for this process and
has no method that returns one or reverses a pseudonym.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from collector.api.db import Cursor, Db
from pipelines.config import ConfigError
from pipelines.pseudonym import (
    FieldClass,
    PrivacyPolicy,
    Pseudonymiser,
    TenantKey,
    classify,
)
from pipelines.pseudonym.keys import archive_name, archived_epochs, current_epoch
from pipelines.pseudonym.scan import find, parse_v4
from pipelines.record import Kind
from plumbing.keyfiles import read_tenant_key

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_INDICATORS = 100
MAX_TEXT = 256
_TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")
_KEY_FILE = re.compile(r"^tenant-([a-z0-9][a-z0-9_\-]{0,62})\.key$")
_QUERY_KEYS = ("tenant", "since", "until", "site", "device", "kind", "name", "text", "ip",
               "indicators", "limit", "cursor")
_RECORD_COLS = ("id", "tenant", "site", "device", "kind", "name", "ts", "fields",
                "retention_class", "expires_at", "restricted")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class QueryError(ValueError):
    """A query the API refuses (400). The text never repeats an address or text
    the caller sent: it names the parameter and what is expected."""


class NoKeyError(QueryError):
    """The server holds no key for the tenant, so it cannot pseudonymise indicators."""


# --- keys ---------------------------------------------------------------------


class TenantKeys:
    """The tenant keys this API process holds, used forward only.

    Holding keys on the query side is the price of indicator search: a raw
    address can only be matched by computing its pseudonym. Whoever takes over
    this process can re-identify that tenant's pseudonyms, so keys are loaded
    only for tenants listed, read from owner-only files, kept out of every
    repr, log and response, and each use is audited (see docs/api.md).
    """

    def __init__(self, keys: Mapping[str, list[TenantKey]] | None = None,
                 policy: PrivacyPolicy | None = None) -> None:
        self.policy = policy or PrivacyPolicy()
        self._lock = threading.Lock()
        self._p: dict[str, list[Pseudonymiser]] = {}
        for tenant, ks in (keys or {}).items():
            if not _TENANT_RE.match(tenant):
                raise ConfigError("tenant keys", tenant, "is not a valid tenant name")
            self._p[tenant] = [Pseudonymiser(k, self.policy)
                               for k in sorted(ks, key=lambda k: -k.epoch)]

    @classmethod
    def from_dir(cls, directory: str | Path, policy: PrivacyPolicy | None = None
                 ) -> TenantKeys:
        """`tenant-<name>.key` as `privtel keys init` writes it, and the
        `tenant-<name>.key.epoch<N>` archives that rotation leaves beside it (the
        rule of `pipelines.pseudonym.keys.archive_name`); each must be mode 0600."""
        d = Path(directory)
        if not d.is_dir():
            raise ConfigError(str(d), "", "tenant key directory does not exist")
        names = sorted(p.name for p in d.iterdir())
        keys: dict[str, list[TenantKey]] = {}
        for name in names:
            m = _KEY_FILE.match(name)
            if not m:
                continue
            archived = archived_epochs(names, name)
            files = [(d / name, current_epoch(1, archived))]
            files += [(d / archive_name(name, e), e) for e in archived]
            for path, epoch in files:
                k = read_tenant_key(path, epoch)
                keys.setdefault(m.group(1), []).append(k)
        return cls(keys, policy)

    @property
    def tenants(self) -> list[str]:
        return sorted(self._p)

    def has(self, tenant: str) -> bool:
        return tenant in self._p

    def _get(self, tenant: str) -> list[Pseudonymiser]:
        try:
            return self._p[tenant]
        except KeyError:
            raise NoKeyError("the server holds no pseudonymisation key for this tenant, "
                             "so raw indicators cannot be searched") from None

    def networks(self, tenant: str, raw: Network) -> list[Network]:
        """The pseudonymous ranges a raw address or prefix maps to, one per key epoch.
        A prefix longer than the policy preserves has no pseudonymous range."""
        keep = self.policy.preserve_prefix_v4 if raw.version == 4 \
            else self.policy.preserve_prefix_v6
        if raw.prefixlen != raw.max_prefixlen and raw.prefixlen > keep:
            raise QueryError(f"indicator prefixes must be at most /{keep} for IPv{raw.version}"
                             " (pseudonyms keep no structure below that)")
        out = []
        with self._lock:
            for p in self._get(tenant):
                pseudo = ipaddress.ip_address(p.ip(raw.network_address))
                out.append(ipaddress.ip_network(f"{pseudo}/{raw.prefixlen}", strict=False))
        return out

    def ips(self, tenant: str, raw: str) -> list[str]:
        with self._lock:
            return [p.ip(raw) for p in self._get(tenant)]

    def text(self, tenant: str, s: str) -> str:
        """Free text with every address pseudonymised under the current key."""
        with self._lock:
            return self._get(tenant)[0].text(s)

    def __repr__(self) -> str:
        return f"TenantKeys(tenants={self.tenants})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("TenantKeys is not picklable")


# --- address index ------------------------------------------------------------


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
    out: set[tuple[int, str]] = set()
    for k, v in fields.items():
        if isinstance(v, str):
            for f in find(v):
                if f.kind in ("v4", "v6"):
                    out.add(_hex(f.value))  # type: ignore[arg-type]
        elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 \
                and classify(k) is FieldClass.IP:
            out.add((4, f"{v:08x}"))
    return out


@dataclass(frozen=True, slots=True)
class Restriction:
    """One restriction in force for one tenant: the pseudonymous ranges of one
    restrict request, over record times in [since, until) where those are set.
    The ranges stay together because a lift must cover all of them (dsr.py)."""

    networks: tuple[Network, ...]
    since: float | None = None
    until: float | None = None


Restrictions = Mapping[str, Sequence[Restriction]]  # per tenant


class _Standing:
    """Restrictions as a lookup for the indexer: per (tenant, family) and prefix
    length, the masked network and its time spans, so an address costs one dict
    probe per prefix length in use, not one comparison per restricted range."""

    def __init__(self, by_tenant: Restrictions) -> None:
        self.tenants = frozenset(t for t, rs in by_tenant.items() if any(r.networks for r in rs))
        self._spans: dict[tuple[str, int], dict[int, dict[int, list[tuple[
            float | None, float | None]]]]] = {}
        for t, rs in by_tenant.items():
            for r in rs:
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

    `restrictions` (set by `collector.dsr.DsrService`, since this module must
    not import the DSR code) reads the restrictions in force with the step's
    cursor; every record indexed whose address and time fall in one of its
    tenant's is flagged `restricted` in the same transaction, so a record is
    never indexed (and so never shown to a guarded search) unchecked. An index
    without the hook flags nothing: only the API's, which has it, may index a
    store that has restrictions."""

    def __init__(self, db: Db, *, batches_per_step: int = 200, min_interval_s: float = 2.0,
                 prune_interval_s: float = 600.0, margin_s: float = 300.0) -> None:
        self.db, self.batches_per_step = db, batches_per_step
        self.min_interval_s, self.prune_interval_s = min_interval_s, prune_interval_s
        self.margin_s = margin_s
        self.analyze_after = 1000
        self.restrictions: Callable[[Cursor], Restrictions] | None = None
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
                    if self.db.dialect == "sqlite":
                        cur.execute("PRAGMA analysis_limit = 1000")
                    for table in ("records", "record_addresses", "indexed_records"):
                        cur.execute(f"ANALYZE {table}")
            return total

    def _lock_pg(self, cur: Any) -> None:
        if self.db.dialect == "postgres":
            cur.execute("SELECT pg_advisory_xact_lock(?)", (0x7072697A,))

    def _index(self, cur: Any, rows: list[Any], standing: _Standing) -> None:
        addrs = []
        for rid, tenant, ts, fields in rows:
            for fam, addr in addresses_of(self.db.json(fields)):
                addrs.append((rid, tenant, float(ts), fam, addr))
        if rows:
            cur.executemany("INSERT INTO indexed_records (record_id) VALUES (?) "
                            "ON CONFLICT DO NOTHING", [(r[0],) for r in rows])
        if addrs:
            cur.executemany("INSERT INTO record_addresses (record_id, tenant, ts, family, "
                            "addr) VALUES (?, ?, ?, ?, ?)", addrs)
        if standing.tenants:
            hit = sorted({a[0] for a in addrs
                          if a[1] in standing.tenants and standing.hit(a[1], a[3], a[4], a[2])})
            for i in range(0, len(hit), 500):
                chunk = hit[i:i + 500]
                cur.execute(f"UPDATE records SET restricted = ? WHERE id IN "
                            f"({', '.join('?' for _ in chunk)}) AND restricted = ?",
                            [self.db.bool(True), *chunk, self.db.bool(False)])

    def _step(self) -> tuple[int, int]:
        since = self._watermark - self.margin_s
        with self.db.tx(write=True) as cur:
            self._lock_pg(cur)
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
                    "SELECT r.id, r.tenant, r.ts, r.fields FROM records r WHERE r.agent_id = ? "
                    "AND r.batch_id = ? AND NOT EXISTS (SELECT 1 FROM indexed_records i "
                    "WHERE i.record_id = r.id)", (agent_id, batch_id)).fetchall()
                if rows and standing is None:
                    standing = self._read_restrictions(cur)  # under the lock: see dsr.py
                self._index(cur, rows, standing or _NO_RESTRICTIONS)
                n += len(rows)
            cur.executemany("INSERT INTO indexed_batches (agent_id, batch_id, received_at) "
                            "VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                            [(a, b, float(t)) for a, b, t in batches])
        self._watermark = max(self._watermark, max(float(t) for _, _, t in batches))
        return len(batches), n

    def sweep(self, limit: int = 5000) -> int:
        """Index every record not indexed yet, whatever its batch: a full scan, so rare."""
        total = 0
        while True:
            with self.db.tx(write=True) as cur:
                self._lock_pg(cur)
                rows = cur.execute(
                    "SELECT r.id, r.tenant, r.ts, r.fields FROM records r WHERE NOT EXISTS "
                    "(SELECT 1 FROM indexed_records i WHERE i.record_id = r.id) LIMIT ?",
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
                        " WHERE r.id = record_addresses.record_id)")
            n = cur.rowcount
            cur.execute("DELETE FROM indexed_records WHERE NOT EXISTS (SELECT 1 FROM records r"
                        " WHERE r.id = indexed_records.record_id)")
            cur.execute("DELETE FROM indexed_batches WHERE NOT EXISTS (SELECT 1 FROM batches b"
                        " WHERE b.agent_id = indexed_batches.agent_id AND b.batch_id = "
                        "indexed_batches.batch_id)")
            return n


# --- queries ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchQuery:
    tenant: str
    since: float | None = None
    until: float | None = None
    site: str | None = None
    device: str | None = None
    kind: str | None = None
    name: str | None = None
    text: str | None = None
    ip: Network | None = None
    indicators: tuple[Network, ...] = ()
    limit: int = DEFAULT_LIMIT
    cursor: tuple[float, str] | None = None

    def audit_detail(self) -> dict[str, Any]:
        """What the audit trail keeps of the query: filters, the pseudonymous ip, the
        text with any address masked, the number of indicators (never their values)."""
        d: dict[str, Any] = {}
        for k in ("since", "until", "site", "device", "kind", "name"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        if self.text is not None:
            d["text"] = mask_addresses(self.text)
        if self.ip is not None:
            d["ip"] = str(self.ip)
        if self.indicators:
            d["indicators"] = len(self.indicators)
        d["limit"] = self.limit
        return d


def mask_addresses(s: str) -> str:
    out = s
    for f in sorted(find(s), key=lambda f: -len(f.text)):
        out = out.replace(f.text, "<address>")
    return out


def _time(name: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        raise QueryError(f"{name} must be unix seconds or an ISO 8601 time")
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str) and len(v) <= 40:
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise QueryError(f"{name} must be unix seconds or an ISO 8601 time "
                             "like 2026-01-31T12:00:00Z") from None
        if dt.tzinfo is None:
            raise QueryError(f"{name} needs a time zone (e.g. a trailing Z for UTC)")
        f = dt.timestamp()
    else:
        raise QueryError(f"{name} must be unix seconds or an ISO 8601 time")
    if not 0 <= f < 4102444800:
        raise QueryError(f"{name} must be between 1970 and 2100")
    return f


def _str(body: Mapping[str, Any], name: str, maxlen: int = 128) -> str | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, str) or not 0 < len(v) <= maxlen:
        raise QueryError(f"{name} must be a non-empty string of at most {maxlen} characters")
    if "\x00" in v:
        raise QueryError(f"{name} must not contain NUL characters")
    return v


def parse_network(name: str, v: Any) -> Network:
    if not isinstance(v, str) or not 0 < len(v) <= 64:
        raise QueryError(f"{name} must be an IPv4/IPv6 address or CIDR prefix")
    s = v.strip()
    try:
        if "/" not in s:
            a4 = parse_v4(s)
            a = a4 if a4 is not None else ipaddress.ip_address(s)
            return ipaddress.ip_network(a)
        return ipaddress.ip_network(s, strict=False)
    except ValueError:
        raise QueryError(f"{name} must be an IPv4/IPv6 address or CIDR prefix") from None


def decode_cursor(v: Any) -> tuple[float, str]:
    bad = QueryError("cursor is not one this API issued; start again without a cursor")
    if not isinstance(v, str) or not 0 < len(v) <= 200:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
        ts, rid = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise bad from None
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not isinstance(rid, str) \
            or not re.fullmatch(r"[0-9a-f]{32}", rid):
        raise bad
    return float(ts), rid


def encode_cursor(ts: float, rid: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([ts, rid])).rstrip(b"=").decode()


def parse_query(body: Any) -> SearchQuery:
    """A search body from the API (or the CLI) into a query; QueryError for anything off."""
    if not isinstance(body, Mapping):
        raise QueryError("the request body must be a JSON object")
    unknown = sorted(set(body) - set(_QUERY_KEYS))
    if unknown:
        names = ", ".join(repr(mask_addresses(str(u)[:40])) for u in unknown[:5])
        raise QueryError(f"unknown field(s) {names}; known: {', '.join(_QUERY_KEYS)}")
    tenant = body.get("tenant")
    if not isinstance(tenant, str) or not _TENANT_RE.match(tenant):
        raise QueryError("tenant is required: lowercase letters, digits, '-' or '_'")
    kind = _str(body, "kind", 16)
    if kind is not None and kind not in {k.value for k in Kind}:
        raise QueryError(f"kind must be one of {', '.join(k.value for k in Kind)}")
    limit = body.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise QueryError("limit must be a positive integer")
    if limit > MAX_LIMIT:
        raise QueryError(f"limit must be at most {MAX_LIMIT}; page with the cursor instead")
    since, until = _time("since", body.get("since")), _time("until", body.get("until"))
    if since is not None and until is not None and since >= until:
        raise QueryError("since must be before until")
    inds = body.get("indicators")
    indicators: tuple[Network, ...] = ()
    if inds is not None:
        if not isinstance(inds, list) or not 0 < len(inds) <= MAX_INDICATORS:
            raise QueryError(f"indicators must be a list of 1 to {MAX_INDICATORS} addresses "
                             "or CIDR prefixes")
        indicators = tuple(parse_network(f"indicators[{i}]", v) for i, v in enumerate(inds))
    ip = body.get("ip")
    cursor = body.get("cursor")
    return SearchQuery(
        tenant=tenant, since=since, until=until, site=_str(body, "site"),
        device=_str(body, "device"), kind=kind, name=_str(body, "name", 64),
        text=_str(body, "text", MAX_TEXT),
        ip=None if ip is None else parse_network("ip", ip), indicators=indicators,
        limit=limit, cursor=None if cursor is None else decode_cursor(cursor))


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

    def _guard(self, tenant: str, include_restricted: bool) -> bool:
        """Whether the query must read only checked (indexed) rows; if so, index first."""
        if include_restricted or not self.index.guarded(tenant):
            return False
        self.index.refresh(eager=True)
        return True

    def _sql(self, q: SearchQuery, nets: list[Network], include_restricted: bool,
             limit: int | None, checked_only: bool = False) -> tuple[str, list[Any]]:
        pg = self.db.dialect == "postgres"
        where: list[str] = ["tenant = ?"]
        args: list[Any] = [q.tenant]
        if not include_restricted:
            where.append("NOT restricted" if pg else "restricted = 0")
        if checked_only:
            where.append("EXISTS (SELECT 1 FROM indexed_records i WHERE i.record_id = "
                         "records.id)")
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
            where.append("fields::text ILIKE ? ESCAPE '\\'" if pg
                         else "fields LIKE ? ESCAPE '\\'")
            args.append(pattern)
        if q.ip is not None or q.indicators:
            parts = []
            sub_args: list[Any] = [q.tenant]
            for n in nets:
                fam, lo, hi = net_range(n)
                parts.append("(family = ? AND addr BETWEEN ? AND ?)")
                sub_args += [fam, lo, hi]
            where.append("id IN (SELECT record_id FROM record_addresses WHERE tenant = ? AND ("
                         + " OR ".join(parts) + "))")
            args += sub_args
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
                "name": r[5], "ts": float(r[6]), "fields": self.db.json(r[7]),
                "retention_class": r[8], "expires_at": r[9], "restricted": bool(r[10])}

    def search(self, q: SearchQuery, *, include_restricted: bool = False,
               fresh: bool = False) -> Page:
        nets = self.ranges(q)
        checked = self._guard(q.tenant, include_restricted)
        if fresh or (nets and not checked):
            self.index.refresh(force=fresh)
        sql, args = self._sql(q, nets, include_restricted, q.limit + 1, checked)
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
        nets = self.ranges(q)
        checked = self._guard(q.tenant, include_restricted)
        if nets and not checked:
            self.index.refresh()
        while True:
            qq = dataclasses.replace(q, cursor=cursor, limit=page)
            sql, args = self._sql(qq, nets, include_restricted, page, checked)
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
        by_id = {r["id"]: r for r in rows}
        marks = ", ".join("?" for _ in by_id)
        with self.db.tx() as cur:
            notes = cur.execute(f"SELECT record_id, id, ts, note, request_id FROM annotations "
                                f"WHERE record_id IN ({marks}) ORDER BY ts", list(by_id)
                                ).fetchall()
        for r in rows:
            r["annotations"] = []
        for rid, nid, ts, note, req in notes:
            by_id[rid]["annotations"].append({"id": nid, "ts": float(ts), "note": note,
                                              "request_id": req})

    def stats(self, tenant: str) -> dict[str, int]:
        """Unrestricted record counts by kind: what the NOC role may see. Under a
        restriction new records are indexed (and so flagged) first; unlike a search
        the count does not also wait for a record committed a moment later."""
        self._guard(tenant, False)
        pg = self.db.dialect == "postgres"
        with self.db.tx() as cur:
            rows = cur.execute("SELECT kind, COUNT(*) FROM records WHERE tenant = ? AND "
                               + ("NOT restricted" if pg else "restricted = 0")
                               + " GROUP BY kind", (tenant,)).fetchall()
        return {str(k): int(n) for k, n in rows}


def ndjson(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for r in rows:
        yield orjson.dumps(r) + b"\n"
