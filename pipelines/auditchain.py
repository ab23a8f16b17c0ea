"""Hash-chained, append-only audit logs: any edit, insertion, deletion or
reordering of an entry breaks every hash after it.

Each entry is a JSON object; its hash covers the previous entry's hash and the
entry's canonical JSON (sorted keys, no whitespace, without its own `hash` and
`prev` fields). With a key the hash is an HMAC, so someone who can write the
file but does not hold the key cannot rebuild a consistent chain after an edit.
Pure: callers do the reading and appending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pipelines.digest import hmac_sha256, same, sha256_hex

GENESIS = "0" * 64


class AuditChainError(ValueError):
    def __init__(self, index: int, why: str) -> None:
        super().__init__(f"audit entry {index}: {why}")
        self.index, self.why = index, why


def canonical(entry: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in entry.items() if k not in ("hash", "prev")}
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError as e:
        raise ValueError(f"audit entry is not plain JSON: {e}") from None


def entry_hash(prev_hash: str, entry: Mapping[str, Any], key: bytes | None = None) -> str:
    data = prev_hash.encode("ascii") + b"\n" + canonical(entry)
    if key is not None:
        return hmac_sha256(key, data).hex()
    return sha256_hex(data)


def link(prev_hash: str, entry: Mapping[str, Any], key: bytes | None = None) -> dict[str, Any]:
    """The entry as it is appended: with `prev` and its own `hash`."""
    out = {k: v for k, v in entry.items() if k not in ("hash", "prev")}
    out["prev"] = prev_hash
    out["hash"] = entry_hash(prev_hash, out, key)
    return out


def verify(entries: Iterable[Mapping[str, Any]], key: bytes | None = None,
           start: str = GENESIS) -> str:
    """The last hash of a valid chain (`start` if empty); AuditChainError at the first break."""
    prev = start
    for i, e in enumerate(entries):
        if not isinstance(e, Mapping):
            raise AuditChainError(i, "is not a JSON object")
        if e.get("prev") != prev:
            raise AuditChainError(i, "does not follow the entry before it")
        h = e.get("hash")
        if not isinstance(h, str) or not same(h, entry_hash(prev, e, key)):
            raise AuditChainError(i, "hash does not match its content")
        prev = h
    return prev


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    """NDJSON audit file content into entries; a torn or garbled line is an error."""
    out = []
    for i, line in enumerate(data.splitlines()):
        if not line.strip():
            continue
        try:
            e = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AuditChainError(i, "is not valid JSON") from None
        out.append(e)
    return out
