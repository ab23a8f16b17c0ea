"""Key files: read once, the same way, on both sides and in the CLI."""

from __future__ import annotations

from pathlib import Path

from pipelines.config import ConfigError
from pipelines.pseudonym import PseudonymError, TenantKey
from plumbing.files import read_private


def read_tenant_key(path: Path, epoch: int) -> TenantKey:
    """The tenant key in an owner-only file of 64 hex characters, for `epoch`; a
    malformed file is a `ConfigError` naming the file, never its content."""
    text = read_private(path).decode("ascii", errors="replace")
    try:
        return TenantKey.from_hex(text, epoch)
    except PseudonymError as e:
        raise ConfigError(str(path), "", str(e)) from None
