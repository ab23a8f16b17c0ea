"""A decoder written from docs/wire-format.md alone (no privtel envelope code) opens our batches."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from transport_helpers import Keys, header, records

from pipelines import keys
from pipelines.envelope import seal

KEMS = {"x25519": hpke.KEM.X25519, "mlkem768-x25519": hpke.KEM.MLKEM768_X25519}


def doc_decode(msg: bytes, agent_pub: ed25519.Ed25519PublicKey, collector_priv: object) -> tuple[
        dict[str, object], list[dict[str, object]]]:
    assert msg[:4] == b"PTB1"
    (hlen,) = struct.unpack(">H", msg[4:6])
    hdr = msg[6:6 + hlen]
    (clen,) = struct.unpack(">I", msg[6 + hlen:10 + hlen])
    ct = msg[10 + hlen:10 + hlen + clen]
    sig = msg[10 + hlen + clen:]
    assert len(sig) == 64
    agent_pub.verify(sig, b"privtel/v1 batch signature\x00" + msg[:10 + hlen + clen])
    h = json.loads(hdr)
    assert h["skid"] == hashlib.sha256(agent_pub.public_bytes_raw()).hexdigest()[:16]
    suite = hpke.Suite(KEMS[h["suite"]], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    frame = suite.decrypt(ct, collector_priv, info=b"privtel/v1 batch\x00" + hdr)
    body = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(frame)).read(16 << 20)
    recs = json.loads(body)
    assert len(recs) == h["n"]
    return h, recs


@pytest.mark.parametrize("suite", keys.SUITES)
def test_documented_decoder_opens_a_batch(suite: str) -> None:
    k = Keys("edge-01", suite)
    sent = records("acme", 4)
    msg = seal(header("acme", "edge-01", seq=42), sent, k.collector.public, k.signing)
    h, recs = doc_decode(msg, k.signing.public_key(), k.collector.key)
    assert (h["v"], h["agent"], h["seq"], h["suite"], h["comp"]) == (1, "edge-01", 42, suite,
                                                                      "zstd")
    assert h["ckid"] == k.collector.key_id
    assert [r["id"] for r in recs] == [r.id for r in sent]
    pem = k.collector.public.pem.decode()
    blocks = [b + "-----END PUBLIC KEY-----\n" for b in pem.split("-----END PUBLIC KEY-----")
              if b.strip()]
    raw = b"".join(s.load_pem_public_key(b.encode()).public_bytes_raw()  # type: ignore[union-attr]
                   for b in blocks)
    assert len(raw) == (32 if suite == "x25519" else 1184 + 32)
    assert h["ckid"] == hashlib.sha256(raw).hexdigest()[:16]


def test_worked_example_values() -> None:
    """The fixed-key numbers printed in the doc's worked example."""
    ck = keys.load_collector_private_key(
        x25519.X25519PrivateKey.from_private_bytes(bytes(range(32))).private_bytes(
            s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
    sk = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
    assert ck.key_id == "eedd883da0a94515"
    assert keys.signing_key_id(sk) == "24f6ed6acbfe1009"
    doc = (Path(__file__).parents[2] / "docs" / "wire-format.md").read_text()
    assert "eedd883da0a94515" in doc and "24f6ed6acbfe1009" in doc

