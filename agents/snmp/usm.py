"""SNMPv3 USM primitives for the fast path (RFC 3414, RFC 3826, RFC 7860), via `cryptography`.

Keys: a passphrase is stretched to a key once (1 MB of hashing, cached) and
localised to each authoritative engine id (cached). Authentication is the
truncated HMAC of the whole message; privacy is AES-CFB (128, and 192/256 with
the Blumenthal key extension net-snmp uses) or DES-CBC. Everything else
(3DES, Cisco's Reeder AES key extension) stays with pysnmp.
"""

from __future__ import annotations

import functools
import hmac as stdhmac
import os
import struct

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# auth name -> (hash, authParameters length)
AUTH: dict[str, tuple[type[hashes.HashAlgorithm], int]] = {
    "md5": (hashes.MD5, 12), "sha": (hashes.SHA1, 12), "sha224": (hashes.SHA224, 16),
    "sha256": (hashes.SHA256, 24), "sha384": (hashes.SHA384, 32), "sha512": (hashes.SHA512, 48),
}
# auth name -> hashlib name: the standard library's HMAC (OpenSSL underneath, like
# `cryptography`) can copy a keyed context, which `Authenticator` relies on
_HASHLIB = {"md5": "md5", "sha": "sha1", "sha224": "sha224", "sha256": "sha256",
            "sha384": "sha384", "sha512": "sha512"}
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


class Authenticator:
    """HMAC with one localised key (RFC 3414 6.3, RFC 7860), keyed once.

    The key's inner and outer pads are hashed when this is made; each message
    copies that state (OpenSSL's HMAC context copy) instead of keying afresh,
    which is most of the cost for a request-sized message. A received MAC is
    checked over the message with the MAC field zeroed, read through a
    memoryview on either side of it: no zeroed copy of the message is made."""

    __slots__ = ("_base", "n")

    def __init__(self, auth: str, key: bytes) -> None:
        self._base = stdhmac.new(key, digestmod=_HASHLIB[auth])
        self.n = AUTH[auth][1]

    def sign(self, whole_msg: bytes) -> bytes:
        h = self._base.copy()
        h.update(whole_msg)
        return h.digest()[:self.n]

    def verify(self, whole_msg: bytes, span: tuple[int, int], mac: bytes) -> bool:
        n = self.n
        s, e = span
        if len(mac) != n or e - s != n:
            return False
        view = memoryview(whole_msg)
        h = self._base.copy()
        h.update(view[:s])
        h.update(bytes(n))
        h.update(view[e:])
        return stdhmac.compare_digest(h.digest()[:n], mac)


@functools.lru_cache(maxsize=4096)
def authenticator(auth: str, key: bytes) -> Authenticator:
    return Authenticator(auth, key)


def sign(auth: str, key: bytes, whole_msg: bytes) -> bytes:
    return authenticator(auth, key).sign(whole_msg)


def verify(auth: str, key: bytes, whole_msg: bytes, span: tuple[int, int], mac: bytes) -> bool:
    """Check a received MAC, computed over the message with the MAC field at `span`
    zeroed (see `Authenticator.verify`)."""
    return authenticator(auth, key).verify(whole_msg, span, mac)


class Salt:
    """The 64-bit salt counter (RFC 3826 3.1.2.1): random start, incremented per message."""

    def __init__(self) -> None:
        self._n = int.from_bytes(os.urandom(8), "big")

    def next(self) -> int:
        self._n = (self._n + 1) & 0xFFFFFFFFFFFFFFFF
        return self._n


class Privacy:
    """One localised privacy key, ready to encrypt and decrypt scoped PDUs: AES-CFB128
    (RFC 3826) through `cryptography`'s own CFB mode, the AES key object made once per
    key and a cipher context per message (the library's CFB decrypts a 5 kB reply in
    ~7 us, faster than anything built over ECB in Python); DES-CBC likewise."""

    __slots__ = ("_aes", "key", "priv")

    def __init__(self, priv: str, key: bytes) -> None:
        self.priv, self.key = priv, key
        self._aes = None if priv == "des" else algorithms.AES(key)

    def encrypt(self, boots: int, etime: int, salt: int, plaintext: bytes) -> tuple[bytes, bytes]:
        """(ciphertext, privParameters) for one scoped PDU."""
        if self._aes is None:
            return _des_encrypt(self.key, boots, salt, plaintext)
        priv_params = struct.pack(">Q", salt)
        iv = struct.pack(">II", boots & 0xFFFFFFFF, etime & 0xFFFFFFFF) + priv_params
        enc = Cipher(self._aes, CFB(iv)).encryptor()
        return enc.update(plaintext) + enc.finalize(), priv_params

    def decrypt(self, boots: int, etime: int, priv_params: bytes,
                ciphertext: bytes | memoryview) -> bytes:
        if len(priv_params) != 8:
            raise ValueError("privParameters must be 8 bytes")
        if self._aes is None:
            return _des_decrypt(self.key, priv_params, ciphertext)
        iv = struct.pack(">II", boots & 0xFFFFFFFF, etime & 0xFFFFFFFF) + priv_params
        dec = Cipher(self._aes, CFB(iv)).decryptor()
        return dec.update(ciphertext) + dec.finalize()


def _des_encrypt(key: bytes, boots: int, salt: int, plaintext: bytes) -> tuple[bytes, bytes]:
    priv_params = struct.pack(">II", boots & 0xFFFFFFFF, salt & 0xFFFFFFFF)
    iv = bytes(a ^ b for a, b in zip(key[8:16], priv_params, strict=True))
    pad = (-len(plaintext)) % 8
    enc = Cipher(TripleDES(key[:8] * 3), modes.CBC(iv)).encryptor()
    return enc.update(plaintext + b"\x00" * pad) + enc.finalize(), priv_params


def _des_decrypt(key: bytes, priv_params: bytes, ciphertext: bytes | memoryview) -> bytes:
    if len(ciphertext) % 8:
        raise ValueError("DES ciphertext is not a multiple of 8 bytes")
    iv = bytes(a ^ b for a, b in zip(key[8:16], priv_params, strict=True))
    dec = Cipher(TripleDES(key[:8] * 3), modes.CBC(iv)).decryptor()
    return dec.update(ciphertext) + dec.finalize()
