"""Key material for sealed batches: HPKE collector keys, Ed25519 agent keys, key ids.

Pure: everything here turns bytes into keys and back; reading files (and
refusing group-readable ones) is the caller's job. A key id is derived from
the public key alone, so an agent, a collector and an operator can each compute
it and agree without a registry.

Two HPKE suites (RFC 9180), both with HKDF-SHA256 and AES-256-GCM:

- ``x25519``: DHKEM(X25519), the default.
- ``mlkem768-x25519``: the ML-KEM-768 + X25519 hybrid (X-Wing), for traffic
  that must stay secret after a quantum computer exists. cryptography exposes
  it only as a constructor over its two halves and cannot serialise the
  combined key, so a hybrid key file is the two halves' standard PEM blocks one
  after the other (ML-KEM-768 first, then X25519).

Private keys may be stored encrypted (PKCS#8 with a passphrase, cryptography's
best available scheme), so a copied key file alone is useless; every loader
here takes the passphrase, and says plainly when one is missing or wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from pipelines.digest import sha256_hex

SUITES = ("x25519", "mlkem768-x25519")
_KEM = {"x25519": hpke.KEM.X25519, "mlkem768-x25519": hpke.KEM.MLKEM768_X25519}


class KeyFormatError(ValueError):
    """Key bytes that cannot be used; the message says which and why (never the key)."""


def suite(name: str) -> hpke.Suite:
    """The HPKE suite for a suite name from config or a batch header."""
    try:
        kem = _KEM[name]
    except KeyError:
        raise KeyFormatError(
            f"unknown HPKE suite {name!r}; use one of {', '.join(SUITES)}") from None
    return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def key_id(raw_public: bytes) -> str:
    """16 hex characters of SHA-256 over the raw public key bytes."""
    return sha256_hex(raw_public)[:16]


@dataclass(frozen=True, slots=True, eq=False)
class CollectorPublicKey:
    """A collector's HPKE public key as agents use it: what to encrypt to, and its id."""

    suite: str
    key: Any
    raw: bytes
    pem: bytes

    @property
    def key_id(self) -> str:
        return key_id(self.raw)


@dataclass(frozen=True, slots=True, eq=False)
class CollectorPrivateKey:
    """A collector's HPKE private key, keeping its PEM because the hybrid key cannot re-export."""

    suite: str
    key: Any
    pem: bytes
    public: CollectorPublicKey

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def __repr__(self) -> str:
        return f"CollectorPrivateKey(suite={self.suite!r}, key_id={self.key_id!r})"


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks, rest = [], data.strip()
    while rest:
        if not rest.startswith(b"-----BEGIN "):
            raise KeyFormatError("expected a PEM block")
        end = rest.find(b"-----END ")
        if end < 0:
            raise KeyFormatError("unterminated PEM block")
        close = rest.find(b"-----", end + 9)
        if close < 0:
            raise KeyFormatError("unterminated PEM block")
        blocks.append(rest[: close + 5] + b"\n")
        rest = rest[close + 5:].strip()
    return blocks


def parse_passphrase(data: bytes) -> bytes:
    """A passphrase file's content: one line, the trailing newline not part of it."""
    phrase = data.rstrip(b"\r\n")
    if not phrase or b"\n" in phrase:
        raise KeyFormatError("a passphrase file holds one non-empty line")
    return phrase


def _load_private(block: bytes, passphrase: bytes | None = None) -> Any:
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in block
    if encrypted and passphrase is None:
        raise KeyFormatError("the private key is encrypted; name its passphrase file "
                             "(passphrase_file next to the key in the config)")
    try:
        return serialization.load_pem_private_key(
            block, password=passphrase if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            raise KeyFormatError("cannot decrypt the private key: wrong passphrase, or not "
                                 "an encrypted PKCS#8 key") from None
        raise KeyFormatError("not a PKCS#8 private key") from None


def encrypt_private_pem(pem: bytes, passphrase: bytes) -> bytes:
    """`pem` (one or more unencrypted private key blocks) re-written as encrypted PKCS#8."""
    if not passphrase:
        raise KeyFormatError("an empty passphrase does not encrypt anything")
    return b"".join(_priv_pem(_load_private(b), passphrase) for b in _pem_blocks(pem))


def _load_public(block: bytes) -> Any:
    try:
        return serialization.load_pem_public_key(block)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFormatError("not a SubjectPublicKeyInfo public key") from None


def _priv_pem(k: Any, passphrase: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.NoEncryption() if passphrase is None
        else serialization.BestAvailableEncryption(passphrase))
    return bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 enc))


def _pub_pem(k: Any) -> bytes:
    return bytes(k.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo))


def _collector_public(parts: list[Any]) -> CollectorPublicKey:
    if len(parts) == 1 and isinstance(parts[0], x25519.X25519PublicKey):
        x = parts[0]
        return CollectorPublicKey("x25519", x, x.public_bytes_raw(), _pub_pem(x))
    if (len(parts) == 2 and isinstance(parts[0], mlkem.MLKEM768PublicKey)
            and isinstance(parts[1], x25519.X25519PublicKey)):
        m, x = parts
        return CollectorPublicKey(
            "mlkem768-x25519", hpke.MLKEM768X25519PublicKey(m, x),
            m.public_bytes_raw() + x.public_bytes_raw(), _pub_pem(m) + _pub_pem(x))
    raise KeyFormatError("a collector public key is one X25519 key, or an ML-KEM-768 key "
                         "followed by an X25519 key")


def _collector_private(parts: list[Any]) -> CollectorPrivateKey:
    if len(parts) == 1 and isinstance(parts[0], x25519.X25519PrivateKey):
        x = parts[0]
        return CollectorPrivateKey("x25519", x, _priv_pem(x), _collector_public([x.public_key()]))
    if (len(parts) == 2 and isinstance(parts[0], mlkem.MLKEM768PrivateKey)
            and isinstance(parts[1], x25519.X25519PrivateKey)):
        m, x = parts
        return CollectorPrivateKey(
            "mlkem768-x25519", hpke.MLKEM768X25519PrivateKey(m, x), _priv_pem(m) + _priv_pem(x),
            _collector_public([m.public_key(), x.public_key()]))
    raise KeyFormatError("a collector private key is one X25519 key, or an ML-KEM-768 key "
                         "followed by an X25519 key")


def generate_collector_key(suite_name: str = "x25519") -> CollectorPrivateKey:
    suite(suite_name)
    if suite_name == "x25519":
        return _collector_private([x25519.X25519PrivateKey.generate()])
    return _collector_private([mlkem.MLKEM768PrivateKey.generate(),
                               x25519.X25519PrivateKey.generate()])


def load_collector_private_key(pem: bytes, passphrase: bytes | None = None
                               ) -> CollectorPrivateKey:
    return _collector_private([_load_private(b, passphrase) for b in _pem_blocks(pem)])


def load_collector_public_key(pem: bytes) -> CollectorPublicKey:
    return _collector_public([_load_public(b) for b in _pem_blocks(pem)])


ANNOUNCE_TOPIC = "privtel/v1/collector/public-key"


def key_announcement(key: CollectorPublicKey) -> bytes:
    """The collector's retained announcement of its current public key. Its authenticity
    comes from the broker (TLS and an ACL where only the collector may write this topic);
    an agent still takes a new key only from its own config, so this is for operators."""
    return orjson.dumps({"v": 1, "key_id": key.key_id, "suite": key.suite,
                         "public_key": key.pem.decode()}, option=orjson.OPT_SORT_KEYS)


def parse_key_announcement(data: bytes) -> CollectorPublicKey:
    """The announced key, refused unless its id matches the key it carries."""
    try:
        d = orjson.loads(data)
        key = load_collector_public_key(d["public_key"].encode())
        claimed = (d["key_id"], d["suite"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise KeyFormatError("not a privtel key announcement") from None
    if claimed != (key.key_id, key.suite):
        raise KeyFormatError("announced key id or suite does not match the key")
    return key


def generate_signing_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def signing_key_pem(key: ed25519.Ed25519PrivateKey, passphrase: bytes | None = None) -> bytes:
    return _priv_pem(key, passphrase)


def verify_key_pem(key: ed25519.Ed25519PublicKey) -> bytes:
    return _pub_pem(key)


def load_signing_key(pem: bytes, passphrase: bytes | None = None
                     ) -> ed25519.Ed25519PrivateKey:
    blocks = _pem_blocks(pem)
    k = _load_private(blocks[0], passphrase) if len(blocks) == 1 else None
    if not isinstance(k, ed25519.Ed25519PrivateKey):
        raise KeyFormatError("an agent signing key is one Ed25519 private key")
    return k


def load_verify_key(pem: bytes) -> ed25519.Ed25519PublicKey:
    blocks = _pem_blocks(pem)
    k = _load_public(blocks[0]) if len(blocks) == 1 else None
    if not isinstance(k, ed25519.Ed25519PublicKey):
        raise KeyFormatError("an agent public key is one Ed25519 public key")
    return k


def signing_key_id(key: ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey) else key
    return key_id(pub.public_bytes_raw())


def generate_tenant_key() -> str:
    """A tenant pseudonymisation key: 32 random bytes as 64 lowercase hex characters."""
    return os.urandom(32).hex()
