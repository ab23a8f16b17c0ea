"""Tenant keys: one 32-byte secret per tenant and epoch, never shown, never shipped.

Everything keyed in the pseudonymiser derives from this one secret, each use
under its own HKDF label, so a token key can never be mistaken for an address
key. Crypto-PAn alone takes the raw secret, because that is what makes our
IPv4 output identical to the reference implementation for the same key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pipelines.digest import hmac_sha256, same
from pipelines.pseudonym.errors import KeyMaterialError

SECRET_BYTES = 32
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_KEY_ID_LABEL = b"privtel/key-id/v1"


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class TenantKey:
    """A tenant's pseudonymisation secret for one rotation epoch.

    `key_id` is a keyed one-way function of the secret: it lets the collector
    tell epochs and tenants apart, and lets the key holder find the right key
    for a pseudonym, without revealing anything about the secret.
    """

    secret: bytes
    epoch: int = 1
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != SECRET_BYTES:
            raise KeyMaterialError(f"a tenant key must be exactly {SECRET_BYTES} bytes")
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 0:
            raise KeyMaterialError("a tenant key epoch must be a non-negative integer")
        if self.secret[:16] == self.secret[16:]:
            raise KeyMaterialError("a tenant key's two halves must differ (ipcrypt-pfx and "
                            "ipcrypt-ndx refuse such keys, and it hints at a bad generator)")
        kid = hmac_sha256(self.secret, _KEY_ID_LABEL).hex()[:16]
        object.__setattr__(self, "key_id", kid)

    @classmethod
    def from_hex(cls, hex64: str, epoch: int = 1) -> TenantKey:
        """A key from the 64 hex characters of a key file (surrounding blanks allowed)."""
        text = hex64.strip() if isinstance(hex64, str) else ""
        if not _HEX64.match(text):
            raise KeyMaterialError("a tenant key must be 64 hexadecimal characters (32 bytes)")
        return cls(bytes.fromhex(text), epoch)

    @classmethod
    def generate(cls, epoch: int = 1) -> TenantKey:
        return cls(os.urandom(SECRET_BYTES), epoch)

    def to_hex(self) -> str:
        """The secret as written to a key file; only for the code that writes that file."""
        return self.secret.hex()

    def derive(self, purpose: str, length: int = 32) -> bytes:
        """A subkey for one purpose; distinct purposes give independent keys."""
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                    info=b"privtel/" + purpose.encode() + b"/v1").derive(self.secret)

    def __repr__(self) -> str:
        return f"TenantKey(key_id={self.key_id!r}, epoch={self.epoch})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TenantKey):
            return NotImplemented
        return same(self.secret, other.secret) and self.epoch == other.epoch

    def __hash__(self) -> int:
        return hash((self.key_id, self.epoch))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("TenantKey is not picklable: keys never leave the agent")


class KeyRing:
    """The keys a holder may need: the current one to pseudonymise, older epochs
    to re-identify what they made. Rotation adds a key and makes it current."""

    def __init__(self, keys: Iterable[TenantKey] = ()) -> None:
        self._by_id: dict[str, TenantKey] = {}
        self._current: TenantKey | None = None
        for k in keys:
            self.add(k)

    def add(self, key: TenantKey) -> None:
        if key.key_id in self._by_id and self._by_id[key.key_id].epoch != key.epoch:
            raise KeyMaterialError(f"key {key.key_id} is already held under another epoch")
        self._by_id[key.key_id] = key
        if self._current is None or key.epoch >= self._current.epoch:
            self._current = key

    @property
    def current(self) -> TenantKey:
        if self._current is None:
            raise KeyMaterialError("the key ring is empty")
        return self._current

    def get(self, key_id: str) -> TenantKey:
        try:
            return self._by_id[key_id]
        except KeyError:
            raise KeyMaterialError(f"no key with id {key_id!r} is held") from None

    def rotate(self) -> TenantKey:
        """A fresh key for the next epoch, now current; the old one stays for re-identification."""
        new = TenantKey.generate(self.current.epoch + 1 if self._current else 1)
        self.add(new)
        return new

    def __iter__(self) -> Iterator[TenantKey]:
        return iter(sorted(self._by_id.values(), key=lambda k: k.epoch))

    def __len__(self) -> int:
        return len(self._by_id)


_ARCHIVE = re.compile(r"^(?P<base>.+)\.epoch(?P<epoch>[0-9]{1,6})$")


def archive_name(name: str, epoch: int) -> str:
    """Where a rotated-out key file goes: `<name>.epoch<N>` beside the current one.
    The agent, `privtel tenant-key rotate` and the query side all use this one rule."""
    return f"{name}.epoch{epoch}"


def archived_epochs(names: Iterable[str], current: str) -> list[int]:
    """Epochs archived for the key file named `current`, among the file `names`."""
    found = (_ARCHIVE.match(n) for n in names)
    return sorted(int(m["epoch"]) for m in found if m and m["base"] == current)


def current_epoch(configured: int, archived: Iterable[int]) -> int:
    """The current file's epoch: one past the newest archive when that is later than
    the configured one (the agent rotated on its own since the config was written)."""
    return max([configured, *(e + 1 for e in archived)])


def rotation_due(created_at: float, period_s: float, now: float) -> bool:
    """Scheduled rotation: a key older than its period is replaced at the next batch."""
    if period_s <= 0:
        return False
    return now - created_at >= period_s
