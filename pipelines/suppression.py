"""Suppression lists: the collector's signed word that a tenant's agents must stop
collecting the records of people who objected (GDPR Art. 21, NDPA s.36).

A list names pseudonymous ranges (the subject's addresses as the tenant's key
turns them into pseudonyms, one range per key epoch) and keyed tokens (the
subject's login names, e-mail addresses, phone numbers, host names, MACs, in
their one token form per class): the agent compares
them with records it has already pseudonymised, so no raw identifier travels
or is stored. The list is the whole current set, not a change: the newest one
replaces the last, a retained message on `suppress_topic(tenant)` reaches an
agent that was offline, and lifting an objection is a new list without it.

Wire form: ``MAGIC || payload || signature``, the payload orjson
``{"v", "tenant", "ts", "ranges": [...], "tokens": [...]}`` (`tokens` may be absent),
the signature Ed25519 over
``SIGNATURE_CONTEXT || payload`` with the DPO's suppression key, whose public
half each agent is configured with (`[keys] suppression_public_key`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from pipelines import signed
from pipelines.envelope import TOPIC_PREFIX
from pipelines.pseudonym.scan import find

VERSION = 1
MAGIC = b"PTS1"
SIGNATURE_CONTEXT = b"privtel/v1 suppression\x00"
MAX_RANGES = 100_000
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SuppressionError(ValueError):
    """A list that cannot be trusted; the agent keeps the one it has and counts it."""


@dataclass(frozen=True, slots=True)
class SuppressionList:
    tenant: str
    ts: float
    ranges: tuple[Network, ...]
    tokens: frozenset[str] = frozenset()

    @classmethod
    def of(cls, tenant: str, ts: float, entries: Iterable[str]) -> SuppressionList:
        """From a DSR subject's entries: a range has a `/`, anything else is a token."""
        items = list(entries)
        return cls(tenant, ts, tuple(ipaddress.ip_network(e) for e in items if "/" in e),
                   frozenset(e for e in items if "/" not in e))

    def __len__(self) -> int:
        return len(self.ranges) + len(self.tokens)

    def matches(self, device: str, fields: Mapping[str, Any]) -> bool:
        """The record carries one of the subject's pseudonyms, in a field, in text or as
        its device."""
        if self.tokens and (device in self.tokens or any(
                isinstance(v, str) and (v in self.tokens or ("tk-" in v and any(
                    t in v for t in self.tokens))) for v in fields.values())):
            return True
        return bool(self.ranges) and matches(fields, self.ranges)


def suppress_topic(tenant: str) -> str:
    """Per tenant: only the collector side may write it, the tenant's agents read it."""
    return f"{TOPIC_PREFIX}/{tenant}/suppress"


def sign_list(s: SuppressionList, key: ed25519.Ed25519PrivateKey) -> bytes:
    if len(s) > MAX_RANGES:
        raise ValueError(f"a suppression list carries at most {MAX_RANGES} entries")
    return signed.sign(MAGIC, SIGNATURE_CONTEXT, {
        "v": VERSION, "tenant": s.tenant, "ts": s.ts,
        "ranges": sorted(str(n) for n in s.ranges), "tokens": sorted(s.tokens)}, key)


def open_list(data: bytes, key: ed25519.Ed25519PublicKey, *, tenant: str) -> SuppressionList:
    """Verify and parse; a list for another tenant is refused even when well signed."""
    try:
        d = signed.verify(data, MAGIC, SIGNATURE_CONTEXT, VERSION, key, "suppression list")
    except signed.SignedMessageError as e:
        raise SuppressionError(str(e)) from None
    try:
        ranges = tuple(ipaddress.ip_network(n) for n in d["ranges"])
        tokens = frozenset(str(t) for t in d.get("tokens", ()))
        ts = float(d["ts"])
    except (KeyError, TypeError, ValueError) as e:
        raise SuppressionError(f"malformed suppression list: {type(e).__name__}") from None
    if d["tenant"] != tenant:
        raise SuppressionError("suppression list addressed to another tenant")
    if len(ranges) + len(tokens) > MAX_RANGES:
        raise SuppressionError("suppression list too long")
    return SuppressionList(tenant, ts, ranges, tokens)


def addresses(fields: Mapping[str, Any]
              ) -> Iterator[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address in a record's (scalar) fields, a field of its own or inside text."""
    for s in fields.values():
        if not isinstance(s, str):
            continue
        for f in find(s):
            if not isinstance(f.value, int):  # a MAC is not an address range member
                yield f.value


def matches(fields: Mapping[str, Any], ranges: Sequence[Network] | Iterable[Network]) -> bool:
    nets = list(ranges)
    return any(a.version == n.version and a in n for a in addresses(fields) for n in nets)
