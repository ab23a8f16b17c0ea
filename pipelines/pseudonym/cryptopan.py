"""Crypto-PAn (Xu, Fan, Ammar, Moon 2002) over AES-128, for any address width.

Bit i of the output is bit i of the input flipped by the first bit of
AES(first i input bits || pad bits), so two inputs sharing a k-bit prefix get
outputs sharing a k-bit prefix. For 32 bits this is bit-for-bit the reference
implementation (same 32-byte key: first half is the AES key, second half
encrypted gives the pad); the same rule extended to 128 bits is the IPv6 form
used by the common ports, and to 48 bits our MAC form.

All the AES blocks one address needs are independent, so they go to the ECB
encryptor in one call: one C round trip per address instead of 32 or 128.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pipelines.pseudonym.errors import KeyMaterialError


class CryptoPAn:
    """Prefix-preserving permutation of n-bit integers. Not thread-safe (one
    encryptor is reused); give each thread its own instance."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 32:
            raise KeyMaterialError("Crypto-PAn needs a 32-byte key")
        self._enc = Cipher(algorithms.AES(key[:16]), modes.ECB()).encryptor()
        pad = int.from_bytes(self._enc.update(key[16:]), "big")
        self._pad_low = [pad & ((1 << (128 - pos)) - 1) for pos in range(129)]

    def _otp(self, value: int, nbits: int) -> int:
        pad_low = self._pad_low
        up = 128 - nbits
        blocks = b"".join(
            ((((value >> (nbits - pos)) << (nbits - pos)) << up) | pad_low[pos]).to_bytes(16, "big")
            for pos in range(nbits)
        )
        out = self._enc.update(blocks)
        otp = 0
        for b in out[::16]:
            otp = (otp << 1) | (b >> 7)
        return otp

    def encrypt(self, value: int, nbits: int) -> int:
        if not 0 < nbits <= 128 or not 0 <= value < (1 << nbits):
            raise ValueError(f"value does not fit in {nbits} bits")
        return value ^ self._otp(value, nbits)

    def decrypt(self, value: int, nbits: int) -> int:
        """The inverse: bit by bit, because each flip depends on the original prefix."""
        if not 0 < nbits <= 128 or not 0 <= value < (1 << nbits):
            raise ValueError(f"value does not fit in {nbits} bits")
        up = 128 - nbits
        orig = 0
        for pos in range(nbits):
            keep = nbits - pos
            block = (((orig >> keep) << keep) << up) | self._pad_low[pos]
            flip = self._enc.update(block.to_bytes(16, "big"))[0] >> 7
            bit = ((value >> (keep - 1)) & 1) ^ flip
            orig |= bit << (keep - 1)
        return orig

    def encrypt_ipv4(self, value: int) -> int:
        return self.encrypt(value, 32)

    def encrypt_ipv6(self, value: int) -> int:
        return self.encrypt(value, 128)


def reverse_bits(value: int, nbits: int) -> int:
    return int(format(value, f"0{nbits}b")[::-1], 2) if nbits else 0


class LimitedPrefix:
    """Prefix preservation only down to `keep` bits; below that, no structure.

    Pass one is Crypto-PAn over all bits. Pass two is a second Crypto-PAn,
    under an independent key, over the host bits in reversed order, so every
    output host bit depends on every input host bit: two hosts of one /24 that
    share a /28 no longer share it after pseudonymisation. Both passes are
    permutations, so the whole stays reversible for the key holder.
    """

    def __init__(self, outer: CryptoPAn, host: CryptoPAn, nbits: int, keep: int) -> None:
        if not 0 <= keep <= nbits:
            raise ValueError(f"preserved prefix must be between 0 and {nbits} bits")
        self.outer, self.host, self.nbits, self.keep = outer, host, nbits, keep
        self._hbits = nbits - keep
        self._mask = (1 << self._hbits) - 1

    def encrypt(self, value: int) -> int:
        y = self.outer.encrypt(value, self.nbits)
        if not self._hbits:
            return y
        h = self._hbits
        mixed = self.host.encrypt(reverse_bits(y & self._mask, h), h)
        return (y & ~self._mask) | reverse_bits(mixed, h)

    def decrypt(self, value: int) -> int:
        if self._hbits:
            h = self._hbits
            host = reverse_bits(self.host.decrypt(reverse_bits(value & self._mask, h), h), h)
            value = (value & ~self._mask) | host
        return self.outer.decrypt(value, self.nbits)
