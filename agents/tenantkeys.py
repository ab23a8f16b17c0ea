"""Tenant keys: reading the key file, its epoch, and rotating it.

Tenant-key rotation (on demand with `privtel tenant-key rotate`, or on the
schedule `[keys] tenant_key_rotate_days`) is one implementation,
`rotate_tenant_key_file`: the current key is archived beside the key file as
`<name>.epoch<N>` and a fresh key written for epoch N+1. The key file's
modification time is when its epoch began; the epoch in use is the configured
one or, when archives exist, one past the newest archive, so an agent that
rotated on its own restarts in the right epoch without a config edit.

`KeySchedule` is the agent's scheduled rotation; `load_pseudonymiser` is the
one-shot path (`privtel agent poll-once`, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from agents.config import AgentConfig
from pipelines.config import ConfigError
from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.pseudonym.keys import archive_name, current_epoch, rotation_due
from pipelines.pseudonym.keys import archived_epochs as key_archives
from plumbing.files import write_private
from plumbing.keyfiles import read_tenant_key

log = logging.getLogger(__name__)

__all__ = ["ROTATION_RETRY_S", "KeySchedule", "TenantKeyFile", "archive_path", "archived_epochs",
           "load_pseudonymiser", "load_tenant_key", "read_tenant_key", "rotate_tenant_key_file"]


ROTATION_RETRY_S = 3600.0


@dataclass(frozen=True, slots=True)
class TenantKeyFile:
    """The key in a tenant key file, its epoch, and when that epoch began."""

    path: Path
    key: TenantKey
    since: float


def archive_path(path: Path, epoch: int) -> Path:
    return path.with_name(archive_name(path.name, epoch))


def archived_epochs(path: Path) -> list[int]:
    return key_archives(os.listdir(path.parent), path.name)


def load_tenant_key(path: Path, configured_epoch: int) -> TenantKeyFile:
    """The current key; its epoch is one past the newest archive when that is later
    than the configured epoch (the agent rotated on its own since the config was written)."""
    epochs = archived_epochs(path)
    epoch = current_epoch(configured_epoch, epochs)
    key = read_tenant_key(path, epoch)
    if epochs and read_tenant_key(archive_path(path, epochs[-1]), epochs[-1]) == TenantKey(
            key.secret, epochs[-1]):
        # archived but never replaced: a rotation was cut short; it is due again now
        return TenantKeyFile(path, TenantKey(key.secret, epochs[-1]), 0.0)
    return TenantKeyFile(path, key, path.stat().st_mtime)


def rotate_tenant_key_file(path: Path, epoch: int) -> tuple[TenantKey, TenantKey, Path]:
    """Archive the key of `epoch` as `<name>.epoch<epoch>`, write a fresh one for
    epoch+1; returns (old, new, archive). The archive is written before the key file
    is replaced, so a crash between the two loses no key, and running again finishes
    the job; an archive that holds a different key is never overwritten."""
    old = read_tenant_key(path, epoch)
    archive = archive_path(path, epoch)
    if archive.exists():
        if read_tenant_key(archive, epoch) != old:
            raise ConfigError(str(archive), "", "already exists and holds another key; "
                              "is the epoch the current one?")
    else:
        write_private(archive, (old.to_hex() + "\n").encode(), exclusive=True)
    new = TenantKey.generate(epoch + 1)
    write_private(path, (new.to_hex() + "\n").encode(), exclusive=False)
    return old, new, archive


def device_label_key(tenant_key: Path) -> TenantKey:
    """The tenant's device-label key, beside the tenant key as `<name>.device`; made
    (owner-only) on first use and never rotated, so device ids survive key epochs."""
    path = tenant_key.with_name(tenant_key.name + ".device")
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            write_private(path, TenantKey.generate(0).to_hex().encode(), exclusive=True)
    return read_tenant_key(path, 0)


def load_pseudonymiser(cfg: AgentConfig) -> Pseudonymiser:
    key = load_tenant_key(cfg.keys.tenant_key, cfg.keys.tenant_key_epoch).key
    return Pseudonymiser(key, cfg.privacy, device_label_key(cfg.keys.tenant_key))


class KeySchedule:
    """Rotates the tenant key when its epoch is older than the configured period
    (`[keys] tenant_key_rotate_days`; off when unset). `check()` hands back the
    pseudonymiser for the new key; records made before the swap keep their old
    `pkid`, and the shipper lists in each batch header the key ids its records carry."""

    def __init__(self, cfg: AgentConfig, registry: CollectorRegistry, *,
                 clock: Callable[[], float] = time.time) -> None:
        days = cfg.keys.tenant_key_rotate_days
        self.period_s = days * 86400.0 if days else 0.0
        self.current = load_tenant_key(cfg.keys.tenant_key, cfg.keys.tenant_key_epoch)
        self._policy = cfg.privacy
        self._clock = clock
        self._lock = asyncio.Lock()
        self._not_before = 0.0
        self._device_key = device_label_key(cfg.keys.tenant_key)
        self.pseudonymiser = Pseudonymiser(self.current.key, self._policy, self._device_key)
        self.rotations = Counter("privtel_agent_tenant_key_rotations",
                                 "Scheduled tenant-key rotations done", registry=registry)
        self.failures = Counter("privtel_agent_tenant_key_rotation_failures",
                                "Scheduled tenant-key rotations that failed (retried hourly)",
                                registry=registry)

    def due(self) -> bool:
        now = self._clock()
        return (self.period_s > 0 and now >= self._not_before
                and rotation_due(self.current.since, self.period_s, now))

    async def check(self) -> Pseudonymiser | None:
        """Rotate if due; the new pseudonymiser when it did. A failure is logged and
        retried an hour later, never raised: polling goes on under the old key."""
        if not self.due():
            return None
        async with self._lock:
            if not self.due():
                return None
            cur = self.current
            try:
                old, new, archive = await asyncio.to_thread(
                    rotate_tenant_key_file, cur.path, cur.key.epoch)
            except (OSError, ConfigError) as e:
                self.failures.inc()
                self._not_before = self._clock() + ROTATION_RETRY_S
                log.error("scheduled tenant-key rotation failed, keeping the current key: %s",
                          e if isinstance(e, ConfigError) else type(e).__name__)
                return None
            self.current = TenantKeyFile(cur.path, new, self._clock())
            self.pseudonymiser = Pseudonymiser(new, self._policy, self._device_key)
            self.rotations.inc()
            log.info("tenant key rotated on schedule", extra={
                "old_key_id": old.key_id, "new_key_id": new.key_id, "epoch": new.epoch,
                "archive": archive.name})
            return self.pseudonymiser
