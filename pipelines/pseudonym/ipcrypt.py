"""IPCrypt (draft-denis-ipcrypt) modes built on `cryptography`'s AES.

- deterministic: one AES-128 block over the 16-byte (IPv4-mapped) address.
- ndx: AES-XTS with a random 16-byte tweak; output is tweak || ciphertext, so
  the same address never looks the same twice (for logs where linking is unwanted).
- pfx: prefix-preserving; each bit is flipped by the low bit of
  AES_K1(p) xor AES_K2(p) over the padded prefix p.

ipcrypt-nd (KIASU-BC) is deliberately absent: it injects the tweak into every
AES round, which `cryptography` does not expose, and we write no AES rounds of
our own. ndx gives the same unlinkability with a larger tweak.
"""

from __future__ import annotations

import ipaddress
import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pipelines.pseudonym.errors import KeyMaterialError

_MAPPED = 0xFFFF << 32
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def to16(addr: IPAddress) -> int:
    return _MAPPED | int(addr) if addr.version == 4 else int(addr)


def from16(value: int) -> IPAddress:
    """IPv4-mapped results read as IPv4, as the draft's reference code does."""
    if value >> 32 == 0xFFFF:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return ipaddress.IPv6Address(value)


class Deterministic:
    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 16:
            raise KeyMaterialError("ipcrypt-deterministic needs a 16-byte key")
        c = Cipher(algorithms.AES(key), modes.ECB())
        self._enc, self._dec = c.encryptor(), c.decryptor()

    def encrypt(self, addr: IPAddress) -> IPAddress:
        return from16(int.from_bytes(self._enc.update(to16(addr).to_bytes(16, "big")), "big"))

    def decrypt(self, addr: IPAddress) -> IPAddress:
        return from16(int.from_bytes(self._dec.update(to16(addr).to_bytes(16, "big")), "big"))


class Ndx:
    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 32 or key[:16] == key[16:]:
            raise KeyMaterialError("ipcrypt-ndx needs a 32-byte key with two different halves")
        self._key = key

    def encrypt(self, addr: IPAddress, tweak: bytes | None = None) -> bytes:
        t = os.urandom(16) if tweak is None else tweak
        if len(t) != 16:
            raise ValueError("ipcrypt-ndx tweak must be 16 bytes")
        e = Cipher(algorithms.AES(self._key), modes.XTS(t)).encryptor()
        return t + e.update(to16(addr).to_bytes(16, "big")) + e.finalize()

    def decrypt(self, data: bytes) -> IPAddress:
        if len(data) != 32:
            raise ValueError("ipcrypt-ndx ciphertext must be 32 bytes")
        d = Cipher(algorithms.AES(self._key), modes.XTS(data[:16])).decryptor()
        return from16(int.from_bytes(d.update(data[16:]) + d.finalize(), "big"))


class Pfx:
    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 32 or key[:16] == key[16:]:
            raise KeyMaterialError("ipcrypt-pfx needs a 32-byte key with two different halves")
        self._e1 = Cipher(algorithms.AES(key[:16]), modes.ECB()).encryptor()
        self._e2 = Cipher(algorithms.AES(key[16:]), modes.ECB()).encryptor()

    def _flip(self, block: bytes) -> int:
        return (self._e1.update(block)[15] ^ self._e2.update(block)[15]) & 1

    def encrypt(self, addr: IPAddress) -> IPAddress:
        x = to16(addr)
        start = 96 if addr.version == 4 else 0
        blocks = b"".join(((1 << n) | (x >> (128 - n))).to_bytes(16, "big")
                          for n in range(start, 128))
        a, b = self._e1.update(blocks), self._e2.update(blocks)
        flips = 0
        for i in range(15, len(blocks), 16):
            flips = (flips << 1) | ((a[i] ^ b[i]) & 1)
        y = x ^ flips
        return ipaddress.IPv4Address(y & 0xFFFFFFFF) if addr.version == 4 else \
            ipaddress.IPv6Address(y)

    def decrypt(self, addr: IPAddress) -> IPAddress:
        y = to16(addr)
        start = 96 if addr.version == 4 else 0
        x = y >> (128 - start) << (128 - start) if start else 0
        for n in range(start, 128):
            block = ((1 << n) | (x >> (128 - n))).to_bytes(16, "big")
            pos = 127 - n
            x |= (((y >> pos) & 1) ^ self._flip(block)) << pos
        return ipaddress.IPv4Address(x & 0xFFFFFFFF) if addr.version == 4 else \
            ipaddress.IPv6Address(x)
