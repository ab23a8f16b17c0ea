"""The warm record path: per-layout plans and the short way of building the
output record must give what the validating constructor gives, and refuse
what it refuses."""

from __future__ import annotations

import pytest

from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.pseudonym.leakguard import find_leaks
from pipelines.record import MAX_STRING, Kind, Record, RecordError, encode

HEX = "00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef"


def rec(**fields: object) -> Record:
    return Record(kind=Kind.METRIC, tenant="acme", site="hq", device="sw-1", name="if",
                  fields=fields, ts=1700000000.25)  # type: ignore[arg-type]


@pytest.fixture
def p() -> Pseudonymiser:
    return Pseudonymiser(TenantKey.from_hex(HEX, epoch=2))


def test_pseudonymised_record_equals_the_validated_one(p: Pseudonymiser) -> None:
    r = rec(if_index=3, if_alias="uplink to 10.1.2.3", mgmt_addr="192.0.2.7", speed_bps=10**9,
            serial="FOC123", ratio=0.5, up=True, gone=None)
    for o in (p.record(r), p.record(r)):  # cold, then every cache warm
        v = Record(kind=o.kind, tenant=o.tenant, site=o.site, device=o.device, name=o.name,
                   fields=dict(o.fields), ts=o.ts, id=o.id)
        assert o == v and encode([o]) == encode([v])
        assert o.id == r.id and o.fields["pkid"] == p.key_id
        assert "10.1.2.3" not in encode([o]).decode() and not find_leaks([o], p)


def test_over_long_scrubbed_text_still_raises(p: Pseudonymiser) -> None:
    text = ("1.1.1.1 " * (MAX_STRING // 8))[:MAX_STRING]
    assert len(p.text(text)) > MAX_STRING  # pseudonyms are longer than 1.1.1.1
    with pytest.raises(RecordError, match="longer than"):
        p.record(rec(if_alias=text))


def test_a_known_layout_still_looks_at_each_value(p: Pseudonymiser) -> None:
    first = p.record(rec(in_octets=5, if_alias="a"))
    second = p.record(rec(in_octets="peer 10.9.8.7", if_alias="b"))  # same names, now text
    assert first.fields["in_octets"] == 5
    out = second.fields["in_octets"]
    assert isinstance(out, str) and "10.9.8.7" not in out and out.startswith("peer ")
    assert not find_leaks([second], p)
    reordered = p.record(rec(if_alias="peer 10.9.8.7", in_octets=5))
    assert reordered.fields["if_alias"] == out and list(reordered.fields)[:2] == [
        "if_alias", "in_octets"]
