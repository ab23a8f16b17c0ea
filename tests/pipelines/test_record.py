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


def _outcome(item: Any) -> Record | str:
    try:
        return from_dict(item)
    except RecordError as e:
        return f"RecordError: {e}"


def _decoded(item: Any) -> Record | str:
    try:
        (r,) = decode(orjson.dumps([item]))
    except RecordError as e:
        return f"RecordError: {e}"
    return r


_odd = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                 st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=140),
                 st.sampled_from(["", "x" * 129, "acme\n", "Acme", "if\n", "a" * 32 + "\n",
                                  "metric", "secret", "0" * 32]),
                 st.lists(st.integers(0, 9), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2))
_usual = ["in_octets", "out_octets", "if_name"]
_odd_fields = st.dictionaries(
    st.one_of(field_names, st.sampled_from([*_usual, "Bad", "x\n", ""])),
    st.one_of(scalars, _odd), max_size=6)


@given(st.dictionaries(st.sampled_from(["id", "kind", "tenant", "site", "device", "ts", "name",
                                        "fields", "extra"]),
                       st.one_of(_odd, _odd_fields), max_size=3),
       st.sampled_from(list(Kind)), st.dictionaries(field_names, scalars, max_size=8))
def test_batch_decoder_agrees_with_the_record_constructor(changes: dict[str, Any], kind: Kind,
                                                         fields: dict[str, Any]) -> None:
    """The decoder's fast path must accept exactly what `from_dict` accepts, build an
    equal record, and leave every rejection to `validate` (same message)."""
    rec(fields=dict.fromkeys(_usual, 0))  # names the decoder has seen before take its fast path
    item = rec(kind=kind, fields=fields).to_dict() | changes
    assert _decoded(item) == _outcome(orjson.loads(orjson.dumps(item)))


def test_batch_decoder_checks_every_record_not_only_the_first() -> None:
    good = [rec(fields={"in_octets": i}).to_dict() for i in range(5)]
    assert [r.fields["in_octets"] for r in decode(orjson.dumps(good))] == list(range(5))
    for change, message in [({"tenant": "Acme"}, "tenant must match"),
                            ({"site": ""}, "site must be a non-empty"),
                            ({"fields": {"in_octets": "a" * 16385}}, "field in_octets is longer"),
                            ({"fields": {"in_octets": [1]}}, "field in_octets must be a scalar"),
                            ({"ts": 4102444800}, "ts must be unix seconds"),
                            ({"id": good[0]["id"].upper()}, "id must be 32 lowercase hex")]:
        with pytest.raises(RecordError, match=message):
            decode(orjson.dumps([*good, good[1] | change]))


@pytest.mark.parametrize("change", [{"id": "a" * 32 + "\n"}, {"tenant": "acme\n"},
                                    {"name": "if\n"}, {"fields": {"in_octets\n": 1}}])
def test_a_trailing_newline_does_not_slip_past_a_pattern(change: dict[str, Any]) -> None:
    """`$` matches before a final newline; identifiers reach the store's COPY text
    unescaped, so every pattern must match the whole string."""
    with pytest.raises(RecordError):
        rec(**change)
    with pytest.raises(RecordError):
        decode(orjson.dumps([rec().to_dict() | change]))
