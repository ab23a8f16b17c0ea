"""End-to-end receipts: the collector's signed word that a batch reached a final outcome.

A broker's PUBACK says only that the broker holds a batch; a broker that loses
its state (a crash between autosaves, a lost volume, a fresh node after a
failover) forgets it. So the agent keeps every batch until the collector,
after its store committed (or after it parked or quarantined the batch for
good), says so in a receipt signed with the collector's Ed25519 receipt key.

One receipt message carries the outcomes of several batches of one agent,
so the cost per batch stays small at high rates. Wire form (documented in
docs/wire-format.md): ``MAGIC || payload || signature`` where the payload is
orjson ``{"v", "tenant", "agent", "ts", "items": [[batch_id, outcome], ...]}``
and the signature is Ed25519 over ``SIGNATURE_CONTEXT || payload``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric import ed25519

from pipelines import signed
from pipelines.envelope import TOPIC_PREFIX

VERSION = 1
MAGIC = b"PTR1"
SIGNATURE_CONTEXT = b"privtel/v1 receipt\x00"
MAX_ITEMS = 4096
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


class Outcome(StrEnum):
    """What became of a batch. Every outcome is final: the agent may forget the batch."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # stored before, by an earlier delivery
    PARKED = "parked"  # kept sealed by the collector until an operator fixes the cause
    QUARANTINED = "quarantined"  # garbage or forgery; kept as a digest only


class ReceiptError(ValueError):
    """A receipt message that cannot be trusted; the agent ignores it and counts it."""


@dataclass(frozen=True, slots=True)
class Receipts:
    tenant: str
    agent_id: str
    ts: float
    items: tuple[tuple[str, Outcome], ...]


def receipt_topic(tenant: str, agent_id: str) -> str:
    """Per-agent topic: only the collector may write it, only that agent may read it."""
    return f"{TOPIC_PREFIX}/{tenant}/{agent_id}/receipts"


def sign_receipts(r: Receipts, key: ed25519.Ed25519PrivateKey) -> bytes:
    if not r.items or len(r.items) > MAX_ITEMS:
        raise ValueError(f"a receipt message carries 1 to {MAX_ITEMS} items")
    return signed.sign(MAGIC, SIGNATURE_CONTEXT, {
        "v": VERSION, "tenant": r.tenant, "agent": r.agent_id, "ts": r.ts,
        "items": [[b, str(o)] for b, o in r.items]}, key)


def open_receipts(data: bytes, key: ed25519.Ed25519PublicKey, *, tenant: str,
                  agent_id: str) -> Receipts:
    """Verify and parse; a receipt for another agent is refused even when well signed."""
    try:
        d = signed.verify(data, MAGIC, SIGNATURE_CONTEXT, VERSION, key, "receipt")
    except signed.SignedMessageError as e:
        raise ReceiptError(str(e)) from None
    try:
        items = tuple((str(b), Outcome(o)) for b, o in d["items"])
        ts = float(d["ts"])
    except (KeyError, TypeError, ValueError) as e:
        raise ReceiptError(f"malformed receipt: {type(e).__name__}") from None
    if d["tenant"] != tenant or d["agent"] != agent_id:
        raise ReceiptError("receipt addressed to another agent")
    if not items or len(items) > MAX_ITEMS or not all(_HEX32.fullmatch(b) for b, _ in items):
        raise ReceiptError("malformed receipt items")
    return Receipts(tenant, agent_id, ts, items)


def group_by_agent(done: Sequence[tuple[str, str, str, Outcome]]
                   ) -> dict[tuple[str, str], list[tuple[str, Outcome]]]:
    """(tenant, agent, batch id, outcome) rows into one item list per agent, order kept."""
    out: dict[tuple[str, str], list[tuple[str, Outcome]]] = {}
    for tenant, agent, batch_id, outcome in done:
        out.setdefault((tenant, agent), []).append((batch_id, outcome))
    return out
