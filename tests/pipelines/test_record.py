"""The record schema: strict on the way in, lossless through the codec."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.record import Kind, Record, RecordError, decode, encode, from_dict


def rec(**kw: Any) -> Record:
    base: dict[str, Any] = dict(kind=Kind.METRIC, tenant="acme", site="hq", device="tk-1",
                                name="if", fields={"in_octets": 1})
    base.update(kw)
    return Record(**base)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=50))
field_names = st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z")


@given(st.dictionaries(field_names, scalars, max_size=20), st.sampled_from(list(Kind)))
def test_codec_round_trip(fields: dict[str, Any], kind: Kind) -> None:
    r = rec(fields=fields, kind=kind)
    (back,) = decode(encode([r]))
    assert back == r


@pytest.mark.parametrize(("change", "message"), [
    ({"tenant": "Acme"}, "tenant must match"),
    ({"site": ""}, "site must be a non-empty string"),
    ({"device": "x" * 129}, "device must be a non-empty string"),
    ({"name": "If Table"}, "name must match"),
    ({"ts": True}, "ts must be unix seconds"),
    ({"ts": -1.0}, "ts must be unix seconds"),
    ({"id": "not-hex"}, "id must be 32 lowercase hex"),
    ({"fields": {"Bad": 1}}, "field name 'Bad' must match"),
    ({"fields": {"x": [1, 2]}}, "field x must be a scalar, not list"),
    ({"fields": {"x": {"a": 1}}}, "field x must be a scalar, not dict"),
    ({"fields": {"x": 2**64}}, "field x is outside the 64-bit range"),
    ({"fields": {"x": "a" * 16385}}, "field x is longer than 16384"),
    ({"fields": {f"f{i}": 1 for i in range(257)}}, "at most 256 fields"),
])
def test_each_rule_rejects_with_its_reason(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RecordError, match=message):
        rec(**change)


@pytest.mark.parametrize(("data", "message"), [
    (b"{not json", "not valid JSON"),
    (b'{"a": 1}', "must be a JSON array"),
    (b"[1]", "must be a JSON object"),
])
def test_decode_refuses_malformed_bodies(data: bytes, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        decode(data)


def test_from_dict_names_unknown_and_missing_keys() -> None:
    d = rec().to_dict()
    with pytest.raises(RecordError, match=r"unknown record keys: \['extra'\]"):
        from_dict(d | {"extra": 1})
    del d["site"]
    with pytest.raises(RecordError, match=r"missing record keys: \['site'\]"):
        from_dict(d)
    with pytest.raises(RecordError, match="kind must be one of"):
        from_dict(rec().to_dict() | {"kind": "secret"})


def test_with_fields_keeps_identity_and_revalidates() -> None:
    r = rec()
    r2 = r.with_fields({"out_octets": 2}, device="tk-2")
    assert (r2.id, r2.ts, r2.device, dict(r2.fields)) == (r.id, r.ts, "tk-2", {"out_octets": 2})
    with pytest.raises(RecordError):
        r.with_fields({"bad name": 1})


def test_encoded_form_is_plain_json() -> None:
    r = rec()
    assert orjson.loads(encode([r])) == [r.to_dict()]
