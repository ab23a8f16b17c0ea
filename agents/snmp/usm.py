"""SNMPv3 USM primitives for the fast path (RFC 3414, RFC 3826, RFC 7860), via `cryptography`.

Keys: a passphrase is stretched to a key once (1 MB of hashing, cached) and
localised to each authoritative engine id (cached). Authentication is the
truncated HMAC of the whole message; privacy is AES-CFB (128, and 192/256 with
the Blumenthal key extension net-snmp uses) or DES-CBC. Everything else
(3DES, Cisco's Reeder AES key extension) stays with pysnmp.
"""

from __future__ import annotations

import functools
import os
import struct

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import constant_time, hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# auth name -> (hash, authParameters length)
AUTH: dict[str, tuple[type[hashes.HashAlgorithm], int]] = {
    "md5": (hashes.MD5, 12), "sha": (hashes.SHA1, 12), "sha224": (hashes.SHA224, 16),
    "sha256": (hashes.SHA256, 24), "sha384": (hashes.SHA384, 32), "sha512": (hashes.SHA512, 48),
}
# priv name -> key length
PRIV = {"des": 16, "aes": 16, "aes192": 24, "aes256": 32}


def supported(auth: str, priv: str) -> bool:
    return (auth == "none" or auth in AUTH) and (priv == "none" or priv in PRIV)


def _digest(algo: type[hashes.HashAlgorithm], data: bytes) -> bytes:
    h = hashes.Hash(algo())
    h.update(data)
    return h.finalize()


@functools.lru_cache(maxsize=256)
def password_to_key(auth: str, password: bytes) -> bytes:
    """RFC 3414 A.2: hash 1 MB of the repeated passphrase."""
    if not password:
        raise ValueError("empty USM passphrase")
    algo = AUTH[auth][0]
    chunk = (password * (1048576 // len(password) + 1))[:1048576]
    return _digest(algo, chunk)


@functools.lru_cache(maxsize=4096)
def localize(auth: str, password: bytes, engine_id: bytes) -> bytes:
    ku = password_to_key(auth, password)
    return _digest(AUTH[auth][0], ku + engine_id + ku)


@functools.lru_cache(maxsize=4096)
def priv_key(auth: str, priv: str, password: bytes, engine_id: bytes) -> bytes:
    """The localised privacy key, extended the Blumenthal way when the hash is short."""
    k = localize(auth, password, engine_id)
    need = PRIV[priv]
    while len(k) < need:
        k += _digest(AUTH[auth][0], k)
    return k[:need]


def sign(auth: str, key: bytes, whole_msg: bytes) -> bytes:
    algo, n = AUTH[auth]
    h = hmac.HMAC(key, algo())
    h.update(whole_msg)
    return h.finalize()[:n]


def verify(auth: str, key: bytes, whole_msg: bytes, span: tuple[int, int], mac: bytes) -> bool:
    """Check a received MAC, computed over the message with the MAC field at `span`
    zeroed: the HMAC reads the two sides through a memoryview, no zeroed copy."""
    algo, n = AUTH[auth]
    s, e = span
    if len(mac) != n or e - s != n:
        return False
    view = memoryview(whole_msg)
    h = hmac.HMAC(key, algo())
    h.update(view[:s])
    h.update(bytes(n))
    h.update(view[e:])
    return constant_time.bytes_eq(h.finalize()[:n], mac)


class Salt:
    """The 64-bit salt counter (RFC 3826 3.1.2.1): random start, incremented per message."""

    def __init__(self) -> None:
        self._n = int.from_bytes(os.urandom(8), "big")

    def next(self) -> int:
        self._n = (self._n + 1) & 0xFFFFFFFFFFFFFFFF
        return self._n


@functools.lru_cache(maxsize=4096)
def _aes(key: bytes) -> algorithms.AES:
    return algorithms.AES(key)  # key checks once per key, not per message


def encrypt(priv: str, key: bytes, boots: int, etime: int, salt: int,
            plaintext: bytes) -> tuple[bytes, bytes]:
    """(ciphertext, privParameters) for one scoped PDU."""
    if priv == "des":
        priv_params = struct.pack(">II", boots & 0xFFFFFFFF, salt & 0xFFFFFFFF)
        iv = bytes(a ^ b for a, b in zip(key[8:16], priv_params, strict=True))
        pad = (-len(plaintext)) % 8
        enc = Cipher(TripleDES(key[:8] * 3), modes.CBC(iv)).encryptor()
        return enc.update(plaintext + b"\x00" * pad) + enc.finalize(), priv_params
    priv_params = struct.pack(">Q", salt)
    iv = struct.pack(">II", boots, etime) + priv_params
    enc = Cipher(_aes(key), CFB(iv)).encryptor()
    return enc.update(plaintext) + enc.finalize(), priv_params


def decrypt(priv: str, key: bytes, boots: int, etime: int, priv_params: bytes,
            ciphertext: bytes | memoryview) -> bytes:
    if len(priv_params) != 8:
        raise ValueError("privParameters must be 8 bytes")
    if priv == "des":
        if len(ciphertext) % 8:
            raise ValueError("DES ciphertext is not a multiple of 8 bytes")
        iv = bytes(a ^ b for a, b in zip(key[8:16], priv_params, strict=True))
        dec = Cipher(TripleDES(key[:8] * 3), modes.CBC(iv)).decryptor()
        return dec.update(ciphertext) + dec.finalize()
    iv = struct.pack(">II", boots & 0xFFFFFFFF, etime & 0xFFFFFFFF) + priv_params
    dec = Cipher(_aes(key), CFB(iv)).decryptor()
    return dec.update(ciphertext) + dec.finalize()
