"""The one record type that every poller emits and every store keeps.

A record is deliberately flat: scalar fields only, so that the pseudonymiser
can reason about every value by its field class, the codec stays a single
orjson call, and stores can keep fields as one JSON column.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from pipelines.names import PATTERN as NAME_PATTERN
from pipelines.names import is_name
from pipelines.vocab import HEALTH_REASONS as HEALTH_REASONS  # re-exported

Scalar = str | int | float | bool | None

_NAME_RE = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")
_FIELD_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_FIELDS = 256
MAX_STRING = 16384
_KEYS = ("id", "kind", "tenant", "site", "device", "ts", "name", "fields")




class RecordError(ValueError):
    """A record that breaks the schema; the message names the offending part."""


class Kind(StrEnum):
    METRIC = "metric"
    HEALTH = "health"
    EVENT = "event"
    LOG = "log"
    INVENTORY = "inventory"


def new_id() -> str:
    return os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class Record:
    """One observation. `device` is always the pseudonymous device id."""

    kind: Kind
    tenant: str
    site: str
    device: str
    name: str
    fields: Mapping[str, Scalar]
    ts: float = field(default_factory=time.time)
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        validate(self)

    def with_fields(self, fields: Mapping[str, Scalar], **changes: Any) -> Record:
        """A copy with new fields (and optionally other attributes), same id.

        The pseudonymiser rebuilds every record it passes on, and `__init__` with
        its full validation costs several times the pseudonymising itself. This
        record was validated when it was made and its attributes are frozen, so
        when only `fields` and at most `device` change, only those are checked
        (by the rules of `validate`, as the batch decoder does) and the copy is
        built without `__init__`. Anything that does not pass goes the validating
        way, so every rejection still comes from `validate` with its message."""
        if (type(self) is Record and type(fields) is dict and len(fields) <= MAX_FIELDS
                and _known_fields.issuperset(fields) and _values_ok(fields)):
            device: Any = (self.device if not changes else
                           changes.get("device") if len(changes) == 1 else None)
            if type(device) is str and 0 < len(device) <= 128:
                r = _new(Record)
                _set_kind(r, self.kind)
                _set_tenant(r, self.tenant)
                _set_site(r, self.site)
                _set_device(r, device)
                _set_name(r, self.name)
                _set_fields(r, fields)
                _set_ts(r, self.ts)
                _set_id(r, self.id)
                return r
        values = {k: getattr(self, k) for k in _KEYS}
        values.update(changes)
        values["fields"] = fields
        return Record(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "tenant": self.tenant,
            "site": self.site,
            "device": self.device,
            "ts": self.ts,
            "name": self.name,
            "fields": dict(self.fields),
        }


_SCALARS = (str, int, float, bool, type(None))
_INT_MIN, _INT_MAX = -(2**63), 2**64
_known_fields: set[str] = set()


def _field_name_ok(k: object) -> bool:
    """Field names repeat across millions of records: check each spelling once."""
    if k in _known_fields:
        return True
    if not isinstance(k, str) or not _FIELD_RE.fullmatch(k):
        return False
    if len(_known_fields) < 65536:
        _known_fields.add(k)
    return True


def validate(r: Record) -> None:
    if not isinstance(r.kind, Kind):
        raise RecordError(f"kind must be one of {[k.value for k in Kind]}")
    if not is_name(r.tenant):
        raise RecordError(f"tenant must match {NAME_PATTERN}")
    for attr in ("site", "device"):
        v = getattr(r, attr)
        if not isinstance(v, str) or not 0 < len(v) <= 128:
            raise RecordError(f"{attr} must be a non-empty string of at most 128 characters")
    if not isinstance(r.name, str) or not _NAME_RE.fullmatch(r.name):
        raise RecordError("name must match [a-z][a-z0-9_.-]{0,63}")
    if type(r.ts) not in (int, float) or not 0 < r.ts < 4102444800:
        raise RecordError("ts must be unix seconds between 1970 and 2100")
    if not isinstance(r.id, str) or not _ID_RE.fullmatch(r.id):
        raise RecordError("id must be 32 lowercase hex characters")
    if not isinstance(r.fields, Mapping):
        raise RecordError("fields must be a mapping")
    if len(r.fields) > MAX_FIELDS:
        raise RecordError(f"at most {MAX_FIELDS} fields per record")
    known = _known_fields
    for k, v in r.fields.items():
        if k not in known and not _field_name_ok(k):
            raise RecordError(f"field name {k!r} must match [a-z][a-z0-9_]{{0,63}}")
        t = type(v)
        if t is str:
            if len(v) > MAX_STRING:  # type: ignore[arg-type]
                raise RecordError(f"field {k} is longer than {MAX_STRING} characters")
        elif t is int:
            if not _INT_MIN <= v < _INT_MAX:  # type: ignore[operator]
                raise RecordError(f"field {k} is outside the 64-bit range")
        elif t not in _SCALARS:
            raise RecordError(f"field {k} must be a scalar, not {t.__name__}")


def from_dict(d: Any) -> Record:
    if not isinstance(d, dict):
        raise RecordError("a record must be a JSON object")
    unknown = set(d) - set(_KEYS)
    missing = set(_KEYS) - set(d)
    if unknown:
        raise RecordError(f"unknown record keys: {sorted(unknown)}")
    if missing:
        raise RecordError(f"missing record keys: {sorted(missing)}")
    try:
        kind = Kind(d["kind"])
    except ValueError:
        raise RecordError(f"kind must be one of {[k.value for k in Kind]}") from None
    return Record(
        kind=kind,
        tenant=d["tenant"],
        site=d["site"],
        device=d["device"],
        name=d["name"],
        fields=d["fields"],
        ts=d["ts"],
        id=d["id"],
    )


def encode(records: Iterable[Record]) -> bytes:
    """Records as one orjson array: the body of a batch before compression."""
    return orjson.dumps([r.to_dict() for r in records])


def encode_one(r: Record) -> bytes:
    """One record's JSON as it appears inside `encode`'s array: what the agent's spool
    stores, so a batch body is joined from stored bytes instead of encoded again."""
    return orjson.dumps(r.to_dict())


def join_encoded(parts: Iterable[bytes]) -> bytes:
    """The body `encode` makes, from records already encoded one by one with `encode_one`
    (orjson writes compact JSON, so the array is the parts joined by commas)."""
    return b"[" + b",".join(parts) + b"]"


def decode(data: bytes) -> list[Record]:
    try:
        items = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise RecordError(f"records are not valid JSON: {e.msg}") from None
    if not isinstance(items, list):
        raise RecordError("records must be a JSON array")
    return _decode_items(items)


_KIND_OF = {k.value: k for k in Kind}
_new = object.__new__
(_set_kind, _set_tenant, _set_site, _set_device, _set_name, _set_fields, _set_ts,
 _set_id) = (Record.__dict__[k].__set__ for k in ("kind", "tenant", "site", "device", "name",
                                                  "fields", "ts", "id"))


def _values_ok(fields: dict[str, Any]) -> bool:
    for v in fields.values():
        t = type(v)
        if t is str:
            if len(v) > MAX_STRING:
                return False
        elif t is int:
            if not _INT_MIN <= v < _INT_MAX:
                return False
        elif t is not float and t is not bool and v is not None:
            return False
    return True


def _decode_items(items: list[Any]) -> list[Record]:
    """The batch decoder's fast path: the same rules as `validate`, but each distinct
    tenant, name, site and device string is checked once per body (records of a
    batch repeat them), and a record that passes is built without going through
    `__init__`, which costs more than the checks. Anything the fast path does
    not accept goes through `from_dict`, so every rejection still comes from
    `validate` with its own message."""
    out: list[Record] = []
    append = out.append
    tenants: set[str] = set()
    names: set[str] = set()
    texts: set[str] = set()
    known = _known_fields
    for d in items:
        if type(d) is not dict or len(d) != 8:
            append(from_dict(d))
            continue
        try:  # eight keys, all eight present: exactly the record keys
            kind, tenant, site, device = d["kind"], d["tenant"], d["site"], d["device"]
            name, fields, ts, rid = d["name"], d["fields"], d["ts"], d["id"]
        except KeyError:
            append(from_dict(d))
            continue
        if not (type(kind) is str and kind in _KIND_OF
                and type(tenant) is str and (tenant in tenants or _remember(
                    tenants, tenant, is_name(tenant)))
                and type(site) is str and (site in texts or _remember(
                    texts, site, 0 < len(site) <= 128))
                and type(device) is str and (device in texts or _remember(
                    texts, device, 0 < len(device) <= 128))
                and type(name) is str and (name in names or _remember(
                    names, name, _NAME_RE.fullmatch(name) is not None))
                and (type(ts) is float or type(ts) is int) and 0 < ts < 4102444800
                and type(rid) is str and _ID_RE.fullmatch(rid) is not None
                and type(fields) is dict and len(fields) <= MAX_FIELDS
                and known.issuperset(fields) and _values_ok(fields)):
            append(from_dict(d))
            continue
        r = _new(Record)
        _set_kind(r, _KIND_OF[kind])
        _set_tenant(r, tenant)
        _set_site(r, site)
        _set_device(r, device)
        _set_name(r, name)
        _set_fields(r, fields)
        _set_ts(r, ts)
        _set_id(r, rid)
        append(r)
    return out


def _remember(seen: set[str], value: str, ok: bool) -> bool:
    if ok and len(seen) < 4096:
        seen.add(value)
    return ok
