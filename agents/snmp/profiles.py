"""Declarative SNMP profiles: which OIDs to read and what records they become.

One TOML file per profile under `agents/snmp/profiles/` (then any directory in
`PRIVTEL_SNMP_PROFILE_DIR`, colon-separated, then the agent config's
`[snmp] profile_dirs`; a later directory overrides a name), so an operator adds a device
family without touching code. A profile applies when its `match` list holds a
prefix of the device's sysObjectID (an empty list matches every device), or
when a device names it in `profiles = [...]`.

    name = "ucd-snmp"
    match = ["1.3.6.1.4.1.8072"]

    [[scalars]]                       # one GET -> one record
    record = "host.memory"
    kind = "metric"                   # metric (default), inventory, event
    fields = [
      { name = "mem_total_kb", oid = "1.3.6.1.4.1.2021.4.5.0", type = "gauge" },
    ]
    compute = { mem_total_bytes = "mem_total_kb * 1024" }
    drop = ["mem_total_kb"]

    [[tables]]                        # one walk -> a record per row (or one aggregate)
    record = "host.storage"
    entry = "1.3.6.1.2.1.25.2.3.1"
    index = { name = "storage_index", type = "integer" }   # integer, ip, string, oid
    columns = [ { name = "descr", column = 3, type = "string" } ]
    aggregate = { cpu_util_pct = "mean:load" }             # optional: one record

Types: gauge, counter, integer, string, oid, ip, mac, timeticks (seconds) and
enum (with `values = { "1" = "up" }`). A field of type ip must be named
`*_ip` so the pseudonymiser classifies it as an address: a profile cannot
smuggle an address out under a neutral name. `compute` takes + - * / ** over
field names and numbers; a missing input makes the result None.

Profiles with `handler = "system"` or `"if-mib"` name built-in collectors whose
logic (64/32-bit counter choice, rates) does not fit a table of OIDs.
"""

from __future__ import annotations

import ast
import functools
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.snmp.values import (
    IP_ADDRESS,
    OBJECT_ID,
    TIMETICKS,
    Oid,
    Value,
    VarBind,
    as_text,
    is_prefix,
    oid_str,
    parse_oid,
)
from pipelines.config import ConfigError, Section, parse_toml
from pipelines.record import Kind

BUILTIN_DIR = Path(__file__).with_name("profiles")
ENV_DIRS = "PRIVTEL_SNMP_PROFILE_DIR"
TYPES = ("gauge", "counter", "integer", "string", "oid", "ip", "mac", "timeticks", "enum")
INDEX_TYPES = ("integer", "ip", "string", "oid")
HANDLERS = ("system", "if-mib")
AGGREGATES = ("mean", "sum", "max", "min", "count")
KINDS = {"metric": Kind.METRIC, "inventory": Kind.INVENTORY, "event": Kind.EVENT}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_RECORD = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")
_PROFILE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: str
    oid: Oid = ()
    column: int = 0
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Group:
    """A scalar group (oids) or a table (entry + columns); both end in records."""

    record: str
    kind: Kind
    fields: tuple[FieldSpec, ...]
    entry: Oid = ()
    index_name: str = ""
    index_type: str = "integer"
    compute: tuple[tuple[str, ast.expr], ...] = ()
    drop: tuple[str, ...] = ()
    aggregate: tuple[tuple[str, str, str], ...] = ()  # (out field, function, column field)

    @property
    def is_table(self) -> bool:
        return bool(self.entry)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    match: tuple[Oid, ...]
    groups: tuple[Group, ...] = ()
    handler: str | None = None
    file: str = ""

    def matches(self, sys_object_id: Oid | None) -> bool:
        if not self.match:
            return True
        return sys_object_id is not None and any(is_prefix(p, sys_object_id)
                                                 for p in self.match)

    def scalar_oids(self) -> list[Oid]:
        return [f.oid for g in self.groups if not g.is_table for f in g.fields]

    def table_entries(self) -> list[Oid]:
        return [g.entry for g in self.groups if g.is_table]


# -- loading and validation -------------------------------------------------

_ALLOWED = (ast.BinOp, ast.UnaryOp, ast.USub, ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div,
            ast.Pow)
MAX_EXPONENT = 64


def _table(s: Section, name: str) -> dict[str, Any]:
    raw = s.raw(name, {})
    if not isinstance(raw, dict):
        raise s.error(name, "must be a table")
    for k, v in raw.items():
        if not _NAME.match(k):
            raise s.error(f"{name}.{k}", "must match [a-z][a-z0-9_]{0,63}")
        if not isinstance(v, str):
            raise s.error(f"{name}.{k}", "must be a string")
    return raw


def _check_expr(text: str, known: set[str], s: Section, key: str) -> ast.expr:
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise s.error(key, f"is not an arithmetic expression: {text!r}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id not in known:
                raise s.error(key, f"uses unknown field {node.id!r}")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise s.error(key, "may only use numbers and field names")
        elif not isinstance(node, _ALLOWED):
            raise s.error(key, f"may only use + - * / ** on fields and numbers, not "
                               f"{type(node).__name__}")
    return tree


def _oid(s: Section, key: str, text: str) -> Oid:
    try:
        return parse_oid(text)
    except ValueError as e:
        raise s.error(key, str(e)) from None


def _field(s: Section, *, table: bool) -> FieldSpec:
    name = s.str("name")
    if not _NAME.match(name):
        raise s.error("name", "must match [a-z][a-z0-9_]{0,63}")
    ftype = s.str("type", choices=TYPES)
    if ftype == "ip" and not name.endswith("_ip"):
        raise s.error("name", "holds an IP address, so it must end in _ip (that is how the "
                              "pseudonymiser knows to replace it)")
    values: dict[str, str] = {}
    if ftype == "enum":
        raw = s.raw("values")
        if not isinstance(raw, dict) or not raw or not all(
                isinstance(k, str) and k.lstrip("-").isdigit() and isinstance(v, str | int | float)
                for k, v in raw.items()):
            raise s.error("values", "must map integer strings to labels, e.g. { \"1\" = \"up\" }")
        values = {k: v for k, v in raw.items()}
    elif "values" in s:
        raise s.error("values", "is only for type enum")
    if table:
        col = s.int("column", lo=1, hi=2**32 - 1)
        s.done()
        return FieldSpec(name, ftype, column=col, values=values)
    oid = _oid(s, "oid", s.str("oid"))
    s.done()
    return FieldSpec(name, ftype, oid=oid, values=values)


def _group(s: Section, *, table: bool) -> Group:
    record = s.str("record")
    if not _RECORD.match(record):
        raise s.error("record", "must match [a-z][a-z0-9_.-]{0,63}")
    kind = KINDS[s.str("kind", "metric", choices=tuple(KINDS))]
    entry: Oid = ()
    index_name, index_type = "", "integer"
    if table:
        entry = _oid(s, "entry", s.str("entry"))
        idx = s.section("index", required=True)
        index_name = idx.str("name")
        index_type = idx.str("type", "integer", choices=INDEX_TYPES)
        if index_type == "ip" and not index_name.endswith("_ip"):
            raise idx.error("name", "holds an IP address, so it must end in _ip")
        if not _NAME.match(index_name):
            raise idx.error("name", "must match [a-z][a-z0-9_]{0,63}")
        idx.done()
    fields = tuple(_field(f, table=table) for f in s.sections("columns" if table else "fields"))
    if not fields:
        raise s.error("columns" if table else "fields", "must list at least one field")
    names = [f.name for f in fields] + ([index_name] if table else [])
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise s.error("columns" if table else "fields", f"duplicate field {sorted(dup)[0]!r}")
    known = set(names)
    compute = []
    for out, expr in _table(s, "compute").items():
        compute.append((out, _check_expr(expr, known, s, f"compute.{out}")))
        known.add(out)
    aggregate = []
    agg = _table(s, "aggregate")
    if agg and not table:
        raise s.error("aggregate", "is only for tables")
    for out, spec in agg.items():
        fn, _, col = spec.partition(":")
        if fn not in AGGREGATES or col not in known:
            raise s.error(f"aggregate.{out}",
                          f"must be <{'|'.join(AGGREGATES)}>:<field>, not {spec!r}")
        aggregate.append((out, fn, col))
    drop = tuple(s.str_list("drop", []))
    for d in drop:
        if d not in known:
            raise s.error("drop", f"names unknown field {d!r}")
    s.done()
    return Group(record, kind, fields, entry, index_name, index_type, tuple(compute), drop,
                 tuple(aggregate))


def parse_profile(text: str, file: str) -> Profile:
    s = parse_toml(text, file)
    name = s.str("name")
    if not _PROFILE.match(name):
        raise s.error("name", "must match [a-z0-9][a-z0-9_.-]{0,63}")
    s.str("description", "")
    match = tuple(_oid(s, "match", m) for m in s.str_list("match", []))
    handler = s.str("handler", None, choices=HANDLERS)
    groups = [_group(g, table=False) for g in s.sections("scalars")]
    groups += [_group(g, table=True) for g in s.sections("tables")]
    if handler is None and not groups:
        raise s.error("scalars", "a profile needs scalars, tables or a handler")
    if handler is not None and groups:
        raise s.error("handler", "a built-in handler profile cannot also list OIDs")
    s.done()
    return Profile(name, match, tuple(groups), handler, file)


def profile_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    """Built-in, then `$PRIVTEL_SNMP_PROFILE_DIR`, then `extra` (the agent config's)."""
    env = os.environ.get(ENV_DIRS, "")
    return [BUILTIN_DIR, *(Path(p) for p in env.split(":") if p), *map(Path, extra)]


def load_profiles(dirs: Sequence[str | Path] | None = None) -> dict[str, Profile]:
    """Every `*.toml` in the directories, validated; a later directory may override a name."""
    out: dict[str, Profile] = {}
    for d in (profile_dirs() if dirs is None else [Path(x) for x in dirs]):
        if not d.is_dir():
            raise ConfigError(str(d), "", "profile directory does not exist")
        for f in sorted(d.glob("*.toml")):
            p = parse_profile(f.read_text(), str(f))
            out[p.name] = p
    return out


def _fingerprint(dirs: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for d in dirs:
        for f in sorted(d.glob("*.toml")) if d.is_dir() else ():
            st = f.stat()
            out.append((str(f), st.st_mtime_ns, st.st_size))
    return tuple(out)


@functools.lru_cache(maxsize=8)
def _load_cached(dirs: tuple[Path, ...],
                 fingerprint: tuple[tuple[str, int, int], ...]) -> dict[str, Profile]:
    return load_profiles(dirs)


def profiles_for(extra_dirs: Iterable[str | Path] = ()) -> dict[str, Profile]:
    """The profiles an agent with these configured dirs uses. Cached while no file
    changed, so validating a thousand devices reads the files once, and a reload
    after an operator edited a profile sees the edit. Do not mutate the result."""
    dirs = tuple(profile_dirs(extra_dirs))
    return _load_cached(dirs, _fingerprint(dirs))


def default_profiles() -> dict[str, Profile]:
    """The built-in profiles plus `$PRIVTEL_SNMP_PROFILE_DIR`: for a poller or options
    check that is given no profile set of its own."""
    return dict(profiles_for())


def select(profiles: Mapping[str, Profile], names: Sequence[str],
           sys_object_id: Oid | None) -> list[Profile]:
    """The device's profiles: those it names, else those whose match fits its sysObjectID."""
    if names:
        missing = [n for n in names if n not in profiles]
        if missing:
            raise KeyError(f"unknown SNMP profile {missing[0]!r}")
        return [profiles[n] for n in names]
    return [p for p in profiles.values() if p.matches(sys_object_id)]


# -- turning varbinds into fields -------------------------------------------

def convert(f: FieldSpec, tag: int, v: Value) -> Any:
    t = f.type
    if v is None:
        return None
    if t in ("gauge", "counter", "integer"):
        return v if isinstance(v, int) else None
    if t == "timeticks":
        return v / 100 if isinstance(v, int) and tag == TIMETICKS else None
    if t == "string":
        return as_text(v)
    if t == "oid":
        return oid_str(v) if isinstance(v, tuple) and tag == OBJECT_ID else None
    if t == "ip":
        if isinstance(v, bytes) and len(v) == 4 and tag == IP_ADDRESS:
            return str(ipaddress.IPv4Address(v))
        if isinstance(v, bytes) and len(v) in (4, 16):
            return str(ipaddress.ip_address(v))
        return None
    if t == "mac":
        return ":".join(f"{x:02x}" for x in v) if isinstance(v, bytes) and v else None
    if t == "enum":
        return f.values.get(str(v), str(v)) if isinstance(v, int) else None
    return None


def index_value(kind: str, arcs: Oid) -> Any:
    if kind == "integer":
        return arcs[0] if len(arcs) == 1 else None
    if kind == "ip":
        if len(arcs) == 4 and all(0 <= a < 256 for a in arcs):
            return ".".join(map(str, arcs))
        return None
    if kind == "string":
        if arcs and arcs[0] == len(arcs) - 1 and all(0 <= a < 256 for a in arcs[1:]):
            return bytes(arcs[1:]).decode("utf-8", errors="replace")
        return None
    return oid_str(arcs)


def _eval(node: ast.expr, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        v = env.get(node.id)
        return v if isinstance(v, int | float) and not isinstance(v, bool) else None
    if isinstance(node, ast.UnaryOp):
        x = _eval(node.operand, env)
        return None if x is None else -x
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env), _eval(node.right, env)
        if a is None or b is None:
            return None
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if isinstance(node.op, ast.Pow):  # device-supplied exponents stay small
            return a ** b if abs(b) <= MAX_EXPONENT and (a or b >= 0) else None
        return a / b if b else None
    return None


def _finish(g: Group, fields: dict[str, Any]) -> dict[str, Any]:
    for out, expr in g.compute:
        v = _eval(expr, fields)
        fields[out] = round(v, 6) if isinstance(v, float) else v
    for d in g.drop:
        fields.pop(d, None)
    return fields


def scalar_fields(g: Group, got: Mapping[Oid, tuple[int, Value]]) -> dict[str, Any] | None:
    """A scalar group's fields, or None when the device has none of its OIDs."""
    fields: dict[str, Any] = {}
    seen = False
    for f in g.fields:
        tv = got.get(f.oid)
        if tv is None or tv[0] >= 0x80:
            fields[f.name] = None
            continue
        seen = True
        fields[f.name] = convert(f, *tv)
    return _finish(g, fields) if seen else None


def table_rows(g: Group, varbinds: Iterable[VarBind]) -> list[dict[str, Any]]:
    """A table's rows (or its one aggregate row), fields converted and computed."""
    n = len(g.entry)
    cols = {f.column: f for f in g.fields}
    rows: dict[Oid, dict[str, Any]] = {}
    for oid, tag, v in varbinds:
        if len(oid) <= n + 1 or oid[:n] != g.entry or tag >= 0x80:
            continue
        f = cols.get(oid[n])
        if f is None:
            continue
        idx = oid[n + 1:]
        row = rows.get(idx)
        if row is None:
            row = rows[idx] = {g.index_name: index_value(g.index_type, idx)}
        row[f.name] = convert(f, tag, v)
    out = [_finish(g, {**{f.name: None for f in g.fields}, **r}) for _, r in sorted(rows.items())]
    if not g.aggregate:
        return out
    if not out:
        return []
    agg: dict[str, Any] = {}
    for name, fn, col in g.aggregate:
        xs = [r[col] for r in out if isinstance(r.get(col), int | float)]
        if fn == "count":
            agg[name] = len(xs)
        elif not xs:
            agg[name] = None
        elif fn == "mean":
            agg[name] = round(sum(xs) / len(xs), 6)
        elif fn == "sum":
            agg[name] = sum(xs)
        else:
            agg[name] = max(xs) if fn == "max" else min(xs)
    return [agg]
