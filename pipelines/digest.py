"""The hashes and MACs privtel computes, all through `cryptography`.

The project takes its cryptography from one library; these helpers keep the
choice of primitive (SHA-256, HMAC-SHA256) and constant-time comparison in
one place rather than spread over stdlib `hashlib`/`hmac` calls.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import constant_time, hashes, hmac


def sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


def sha256_hex(data: bytes) -> str:
    return sha256(data).hex()


class HmacSha256:
    """HMAC-SHA256 under one key, keyed once: each MAC copies the keyed state,
    which halves the cost of the pseudonymiser's hot token path."""

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.HMAC(key, hashes.SHA256())

    def __call__(self, data: bytes) -> bytes:
        h = self._keyed.copy()
        h.update(data)
        return h.finalize()

    def hex(self, data: bytes) -> str:
        return self(data).hex()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def same(a: bytes | str, b: bytes | str) -> bool:
    """Constant-time equality, for secrets, MACs and their hex forms."""
    ab = a.encode() if isinstance(a, str) else a
    bb = b.encode() if isinstance(b, str) else b
    return constant_time.bytes_eq(ab, bb)
