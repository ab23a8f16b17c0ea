"""The audit hash chain: any edit, insertion, deletion or reordering is detected."""

from __future__ import annotations

import orjson
import pytest

from pipelines import auditchain
from pipelines.auditchain import GENESIS, AuditChainError, link, parse_lines, verify


def chain(n: int, key: bytes | None = None) -> list[dict[str, object]]:
    out, prev = [], GENESIS
    for i in range(n):
        e = link(prev, {"who": f"user{i}", "reason": "ticket", "n": i, "ts": 1.5 * i}, key)
        out.append(e)
        prev = str(e["hash"])
    return out


def test_valid_chain_verifies_and_returns_its_head() -> None:
    c = chain(5)
    assert verify(c) == c[-1]["hash"] and verify([]) == GENESIS
    data = b"".join(orjson.dumps(e) + b"\n" for e in c)
    assert verify(parse_lines(data)) == c[-1]["hash"]


@pytest.mark.parametrize("damage", ["edit", "delete", "swap", "insert", "rehash"])
def test_any_damage_is_found_at_its_index(damage: str) -> None:
    c = chain(5)
    if damage == "edit":
        c[2] = {**c[2], "reason": "other"}
    elif damage == "delete":
        del c[2]
    elif damage == "swap":
        c[1], c[2] = c[2], c[1]
    elif damage == "insert":
        c.insert(2, link(str(c[1]["hash"]), {"who": "mallory"}))
    else:  # an edit with a recomputed own hash still breaks the link after it
        c[2] = link(str(c[1]["hash"]), {**c[2], "reason": "other"})
    with pytest.raises(AuditChainError) as e:
        verify(c)
    assert e.value.index in (1, 2, 3)


def test_keyed_chain_cannot_be_rebuilt_without_the_key() -> None:
    c = chain(3, key=b"k" * 32)
    assert verify(c, key=b"k" * 32)
    with pytest.raises(AuditChainError):
        verify(c)


def test_garbled_line_is_an_error() -> None:
    with pytest.raises(AuditChainError, match="entry 1: is not valid JSON"):
        parse_lines(b'{"a":1}\n{"torn\n')


def test_anchors_catch_entries_cut_off_the_end() -> None:
    chain, prev = [], auditchain.GENESIS
    for i in range(5):
        e = auditchain.link(prev, {"n": i})
        chain.append(e)
        prev = e["hash"]
    anchors = auditchain.parse_anchors(
        auditchain.anchor_line(3, chain[2]["hash"], 1.0)
        + auditchain.anchor_line(5, chain[4]["hash"], 2.0))
    assert auditchain.verify(chain, anchors=anchors) == chain[4]["hash"]
    assert auditchain.verify(chain[:4]) == chain[3]["hash"]  # the cut alone goes unseen
    with pytest.raises(auditchain.AuditChainError, match="cut off the end"):
        auditchain.verify(chain[:4], anchors=anchors)
    forged = {3: "f" * 64}  # an anchored head that is not the chain's
    with pytest.raises(auditchain.AuditChainError, match="anchored"):
        auditchain.verify(chain, anchors=forged)


@pytest.mark.parametrize("line", [b"not json", b'{"entries": -1, "head": "x"}',
                                  b'{"entries": true, "head": "x"}', b'{"head": "x"}'])
def test_garbled_anchor_files_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError, match="anchor line 1"):
        auditchain.parse_anchors(line)
    two = auditchain.anchor_line(1, "a" * 64, 0) + auditchain.anchor_line(1, "b" * 64, 0)
    with pytest.raises(ValueError, match="contradicts"):
        auditchain.parse_anchors(two)
