"""The value model both SNMP clients produce, so they can be compared byte for byte.

A varbind is `(oid, tag, value)`: the OID as a tuple of ints, the BER tag of
the value as it came off the wire, and a plain Python value (int, bytes,
OID tuple, or None for NULL and the three exception values). Keeping the tag
lets profiles tell Counter32 from Gauge32 and noSuchObject from a real NULL
without dragging pyasn1 objects through the poller.
"""

from __future__ import annotations

from typing import TypeAlias

Oid: TypeAlias = tuple[int, ...]
Value: TypeAlias = int | bytes | tuple[int, ...] | None
VarBind: TypeAlias = tuple[Oid, int, Value]

INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_ID = 0x06
IP_ADDRESS = 0x40
COUNTER32 = 0x41
GAUGE32 = 0x42
TIMETICKS = 0x43
OPAQUE = 0x44
COUNTER64 = 0x46
NO_SUCH_OBJECT = 0x80
NO_SUCH_INSTANCE = 0x81
END_OF_MIB_VIEW = 0x82

EXCEPTIONS = frozenset({NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW})


def parse_oid(text: str) -> Oid:
    """'1.3.6.1' or '.1.3.6.1' -> (1, 3, 6, 1); a ValueError names the bad text."""
    parts = text.strip().lstrip(".").split(".")
    try:
        oid = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"not a numeric OID: {text!r}") from None
    if len(oid) < 2 or any(x < 0 or x >= 2**32 for x in oid) or oid[0] > 2:
        raise ValueError(f"not a valid OID: {text!r}")
    return oid


def oid_str(oid: Oid) -> str:
    return ".".join(map(str, oid))


def is_prefix(prefix: Oid, oid: Oid) -> bool:
    return oid[: len(prefix)] == prefix


MAX_TEXT = 4096


def as_text(v: Value) -> str:
    """An OCTET STRING as text for display fields (sysDescr, ifDescr), capped in length
    so one odd agent cannot produce a record the schema refuses."""
    if isinstance(v, bytes):
        return v[:MAX_TEXT].decode("utf-8", errors="replace").rstrip("\x00")
    if isinstance(v, tuple):
        return oid_str(v)
    return "" if v is None else str(v)
