"""Seal/open round trips and each rejection reason, on the pure envelope."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from transport_helpers import Keys, header, records

from pipelines import envelope, keys
from pipelines.envelope import EnvelopeError, open_sealed, peek_header, seal, seal_body
from pipelines.record import encode, encode_one, join_encoded


@pytest.mark.parametrize("suite", keys.SUITES)
def test_round_trip(suite: str) -> None:
    k = Keys("ag1", suite)
    recs = records("t1", 5)
    data = seal(header("t1", "ag1", seq=7), recs, k.collector.public, k.signing)
    h, got = open_sealed(data, k.agent_keys, k.collector_keys)
    assert got == recs
    assert (h.seq, h.suite, h.records) == (7, suite, 5)
    assert h.collector_key_id == k.collector.key_id
    assert peek_header(data) == h
    assert b"eth" not in data and b"in_octets" not in data


def test_a_split_frame_verifies_without_a_second_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest splits a batch once to route on its claimed header and verifies that
    same frame: the header is parsed once, and a forged frame still fails."""
    k = Keys("ag1")
    recs = records("t1", 3)
    data = seal(header("t1", "ag1"), recs, k.collector.public, k.signing)
    frame = envelope.split(data)
    assert peek_header(frame) == frame.header == peek_header(data)
    parses: list[bytes] = []
    real = envelope._header_from_json

    def counted(b: bytes) -> envelope.Header:
        parses.append(b)
        return real(b)

    monkeypatch.setattr(envelope, "_header_from_json", counted)
    v = envelope.verify(frame, k.agent_keys)
    assert parses == [] and v.header == frame.header
    assert envelope.open_verified(v, k.collector_keys) == recs
    forged = replace(frame, signature=bytes(64))
    with pytest.raises(EnvelopeError) as e:
        envelope.verify(forged, k.agent_keys)
    assert e.value.reason == "bad_signature"


def reason(data: bytes, k: Keys, **kw: object) -> str:
    with pytest.raises(EnvelopeError) as e:
        open_sealed(data, k.agent_keys, k.collector_keys, **kw)  # type: ignore[arg-type]
    return e.value.reason


def test_every_flipped_byte_is_rejected() -> None:
    k = Keys("ag1")
    data = seal(header("t1", "ag1"), records("t1"), k.collector.public, k.signing)
    for i in range(0, len(data), 7):
        bad = bytearray(data)
        bad[i] ^= 0x01
        assert reason(bytes(bad), k) in {"malformed", "bad_signature", "unknown_agent"}
    assert reason(data[:-1], k) == "malformed"
    assert reason(data[: len(data) // 2], k) == "malformed"


def test_unknown_agent_and_wrong_signer() -> None:
    k = Keys("ag1")
    data = seal(header("t1", "ag2"), records("t1"), k.collector.public, k.signing)
    assert reason(data, k) == "unknown_agent"
    other = ed25519.Ed25519PrivateKey.generate()
    forged = seal(header("t1", "ag1"), records("t1"), k.collector.public, other)
    assert reason(forged, k) == "bad_signature"
    # The right key id but another key's signature: the id matches, verification fails.
    good = seal(header("t1", "ag1"), records("t1"), k.collector.public, k.signing)
    resigned = good[:-64] + other.sign(envelope.SIGNATURE_CONTEXT + good[:-64])
    assert reason(resigned, k) == "bad_signature"


def test_unknown_collector_key_and_rotation() -> None:
    k = Keys("ag1")
    new = keys.generate_collector_key()
    data = seal(header("t1", "ag1"), records("t1"), new.public, k.signing)
    assert reason(data, k) == "unknown_key"
    both = {**k.collector_keys, new.key_id: new}
    old = seal(header("t1", "ag1"), records("t1"), k.collector.public, k.signing)
    assert open_sealed(data, k.agent_keys, both)[0].collector_key_id == new.key_id
    assert open_sealed(old, k.agent_keys, both)[0].collector_key_id == k.collector.key_id


def test_wrong_private_key_under_the_right_id_fails_decrypt() -> None:
    k = Keys("ag1")
    data = seal(header("t1", "ag1"), records("t1"), k.collector.public, k.signing)
    impostor = keys.generate_collector_key()
    swapped = {k.collector.key_id: impostor}
    with pytest.raises(EnvelopeError) as e:
        open_sealed(data, k.agent_keys, swapped)
    assert e.value.reason == "decrypt_failed"


def test_oversized_on_both_sides() -> None:
    k = Keys("ag1")
    with pytest.raises(EnvelopeError) as e:
        seal(header("t1", "ag1"), records("t1", 50), k.collector.public, k.signing, max_size=500)
    assert e.value.reason == "oversized"
    data = seal(header("t1", "ag1"), records("t1", 50), k.collector.public, k.signing)
    assert reason(data, k, max_size=len(data) - 1) == "oversized"
    assert reason(data, k, max_body=100) == "oversized"


def test_header_lies_are_refused_at_seal() -> None:
    k = Keys("ag1")
    # a record of another tenant: the agent refuses it at submit (test_shipper_unit), and a
    # batch that holds one anyway is refused where the envelope binds the tenant, on opening
    wrong = seal(header("t2", "ag1"), records("t1"), k.collector.public, k.signing)
    assert reason(wrong, k) == "invalid_record"
    with pytest.raises(ValueError, match="collector_key_id"):
        seal(replace(header("t1", "ag1"), collector_key_id="0" * 16), records("t1"),
             k.collector.public, k.signing)
    with pytest.raises(EnvelopeError, match="batch must be"):
        seal(replace(header("t1", "ag1"), batch_id="xyz"), records("t1"), k.collector.public,
             k.signing)


def test_freshness_window() -> None:
    h = header("t1", "ag1", created=time.time() - 3600)
    with pytest.raises(EnvelopeError) as e:
        envelope.check_fresh(h, max_age_s=600)
    assert e.value.reason == "too_old"
    envelope.check_fresh(h, max_age_s=7200)
    with pytest.raises(EnvelopeError, match="future"):
        envelope.check_fresh(header("t1", "ag1", created=time.time() + 3600), max_age_s=600)


def test_garbage_is_malformed() -> None:
    k = Keys("ag1")
    for data in (b"", b"PTB1", b"hello world" * 10, b"PTB1\x00\x02{}" + b"\x00" * 70):
        assert reason(data, k) == "malformed"


def test_seal_body_of_stored_json_is_the_batch_seal_makes() -> None:
    """The agent joins each record's stored JSON into the body: byte for byte what
    `encode` makes, so the collector opens it to the same records."""
    k = Keys("ag1")
    recs = [*records("t1", 40), replace(records("t1", 1)[0], fields={
        "pkid": "k1", "ratio": 0.1 + 0.2, "big": 2**63, "neg": -(2**63), "none": None,
        "flag": True, "text": "caf\u00e9 \"q\" \\ \u2028 \x01"})]
    assert join_encoded(encode_one(r) for r in recs) == encode(recs)
    assert join_encoded([]) == encode([])
    h = header("t1", "ag1")
    data = seal_body(h, join_encoded(encode_one(r) for r in recs), len(recs),
                     k.collector.public, k.signing)
    got_h, got = open_sealed(data, k.agent_keys, k.collector_keys)
    assert got == recs and got_h.records == len(recs)
