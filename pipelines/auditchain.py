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
           start: str = GENESIS, anchors: Mapping[int, str] | None = None) -> str:
    """The last hash of a valid chain (`start` if empty); AuditChainError at the first break.

    A chain cannot tell on its own that entries were cut off its end: what is
    left still verifies. `anchors` (entry count -> head hash after that many
    entries, as recorded elsewhere by `anchor_line`) closes that gap: every
    anchored head must still be in the chain, at its place."""
    prev, n = start, 0
    for i, e in enumerate(entries):
        if not isinstance(e, Mapping):
            raise AuditChainError(i, "is not a JSON object")
        if e.get("prev") != prev:
            raise AuditChainError(i, "does not follow the entry before it")
        h = e.get("hash")
        if not isinstance(h, str) or not same(h, entry_hash(prev, e, key)):
            raise AuditChainError(i, "hash does not match its content")
        prev, n = h, i + 1
        if anchors and n in anchors and not same(anchors[n], h):
            raise AuditChainError(i, "differs from the head anchored after it")
    if anchors and max(anchors) > n:
        raise AuditChainError(n, f"is missing: the chain ends after {n} entries but an anchor "
                              f"recorded {max(anchors)} (entries were cut off the end)")
    return prev


def anchor_line(entries: int, head: str, ts: float) -> bytes:
    """One line of an anchor file: kept apart from the log (another host, WORM storage,
    a ticket), it proves the log once held `entries` entries ending in `head`."""
    return orjson.dumps({"entries": entries, "head": head, "ts": ts}) + b"\n"


def parse_anchors(data: bytes) -> dict[int, str]:
    """An anchor file's lines into entry count -> head; a garbled line is an error
    (an anchor file that cannot be read proves nothing)."""
    out: dict[int, str] = {}
    for i, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            a = orjson.loads(line)
            n, head = a["entries"], a["head"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"anchor line {i} is not an anchor") from None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or not isinstance(head, str):
            raise ValueError(f"anchor line {i} is not an anchor")
        if out.get(n, head) != head:
            raise ValueError(f"anchor line {i} contradicts an earlier anchor for {n} entries")
        out[n] = head
    return out


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
