"""The agent process: poll -> pseudonymise -> leak guard -> shipper, until SIGTERM.

The leak guard sits between the pseudonymiser and the shipper on purpose: the
spool is the first place anything is written, so a record that still holds a
raw address must be stopped before it, not after.

Tenant-key rotation (on demand with `privtel tenant-key rotate`, or on the
schedule `[keys] tenant_key_rotate_days`) is one implementation,
`rotate_tenant_key_file`: the current key is archived beside the key file as
`<name>.epoch<N>` and a fresh key written for epoch N+1. The key file's
modification time is when its epoch began; the epoch in use is the configured
one or, when archives exist, one past the newest archive, so an agent that
rotated on its own restarts in the right epoch without a config edit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, start_http_server

from agents import config as agent_config
from agents.config import AgentConfig
from agents.files import write_private
from agents.guard import Guard
from agents.pollers import HEALTH_NAME
from agents.scheduler import Scheduler
from agents.shipper import Shipper
from agents.snmp.traps import TrapReceiver, parse_trap_config
from pipelines import keys
from pipelines.config import ConfigError, Section, require_private
from pipelines.pseudonym import PrivacyPolicy, PseudonymError, Pseudonymiser, TenantKey
from pipelines.pseudonym.keys import archive_name, current_epoch, rotation_due
from pipelines.pseudonym.keys import archived_epochs as key_archives
from pipelines.record import Record

log = logging.getLogger(__name__)


ROTATION_RETRY_S = 3600.0


@dataclass(frozen=True, slots=True)
class TenantKeyFile:
    """The key in a tenant key file, its epoch, and when that epoch began."""

    path: Path
    key: TenantKey
    since: float


def read_tenant_key(path: Path, epoch: int) -> TenantKey:
    """The key in an owner-only file of 64 hex characters."""
    require_private(str(path), path.stat().st_mode)
    try:
        return TenantKey.from_hex(path.read_text(encoding="ascii", errors="replace"), epoch)
    except PseudonymError as e:
        raise ConfigError(str(path), "", str(e)) from None


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


def _policy(cfg: AgentConfig) -> PrivacyPolicy:
    return PrivacyPolicy.from_section(Section(cfg.extra.get("privacy", {}), cfg.file, "privacy"))


def load_pseudonymiser(cfg: AgentConfig) -> Pseudonymiser:
    key = load_tenant_key(cfg.keys.tenant_key, cfg.keys.tenant_key_epoch).key
    return Pseudonymiser(key, _policy(cfg))


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
        self._policy = _policy(cfg)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._not_before = 0.0
        self.pseudonymiser = Pseudonymiser(self.current.key, self._policy)
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
            self.pseudonymiser = Pseudonymiser(new, self._policy)
            self.rotations.inc()
            log.info("tenant key rotated on schedule", extra={
                "old_key_id": old.key_id, "new_key_id": new.key_id, "epoch": new.epoch,
                "archive": archive.name})
            return self.pseudonymiser


class Agent:
    """One agent: scheduler and shipper under one stop event."""

    def __init__(self, cfg: AgentConfig, *, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.registry = registry or CollectorRegistry()
        self.keys = KeySchedule(cfg, self.registry, clock=clock)
        self.guard = Guard(self.keys.pseudonymiser, self.registry, cfg.state_dir / "quarantine",
                           cfg.state_dir)
        self.records_polled = 0
        self.records_shipped = 0
        self.up_devices: set[str] = set()
        self.shipper: Shipper | None = None
        self.scheduler: Scheduler | None = None

    async def _emit(self, records: list[Record]) -> None:
        self.records_polled += len(records)
        for r in records:
            if r.name == HEALTH_NAME:
                (self.up_devices.add if r.fields.get("up") else self.up_devices.discard)(r.device)
        rotated = await self.keys.check()
        if rotated is not None:
            self.guard.pseudonymiser = rotated
        clean = self.guard.apply(records)
        assert self.shipper is not None
        await self.shipper.submit(clean)
        self.records_shipped += len(clean)

    async def _start_traps(self) -> TrapReceiver | None:
        """The trap/inform receiver, when the config has a `[traps]` table."""
        if "traps" not in self.cfg.extra:
            return None
        cfg = self.cfg
        receiver = TrapReceiver(
            parse_trap_config(Section(cfg.extra["traps"], cfg.file, "traps")), self._emit,
            tenant=cfg.tenant, site=cfg.site,
            devices_by_address={d.address: d.name for d in cfg.devices})
        await receiver.start()
        return receiver

    def reload(self) -> bool:
        """SIGHUP: new device set and collector public key (rotation) from the config file;
        a bad file is logged and everything keeps running as it was."""
        try:
            cfg = agent_config.load(self.cfg.file)
            key = keys.load_collector_public_key(cfg.keys.collector_public_key.read_bytes())
        except (ConfigError, OSError, ValueError) as e:
            log.error("config reload failed, keeping the running config: %s", e)
            return False
        if cfg.pollers != self.cfg.pollers:
            # pollers hold per-device state (counter baselines, sessions) built on the old
            # settings; swapping them under polls in flight is not worth the risk
            log.error("config reload refused: [credentials], [ssh] or [snmp] changed; "
                      "restart the agent to apply them; keeping the running config")
            return False
        if self.scheduler is not None:
            self.scheduler.reload(cfg.devices)
        if self.shipper is not None:
            self.shipper.set_collector_key(key)
        log.info("config reloaded", extra={"devices": len(cfg.devices),
                                           "collector_key_id": key.key_id})
        return True

    async def run(self, stop: asyncio.Event, *, flush_timeout_s: float = 10.0) -> None:
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        server = None
        if cfg.metrics_listen:
            server, _ = start_http_server(cfg.metrics_listen[1], cfg.metrics_listen[0],
                                          registry=self.registry)
        key_id = self.guard.pseudonymiser.key_id
        try:
            async with Shipper(cfg, registry=self.registry, pseudonym_key_ids=(key_id,)) as sh:
                self.shipper = sh
                self.scheduler = Scheduler(cfg.devices, self._emit, registry=self.registry,
                                           max_concurrent=cfg.max_concurrent_polls,
                                           context=cfg.pollers)
                await self.scheduler.start()
                traps = await self._start_traps()
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
                log.info("agent started", extra={"agent_id": cfg.agent_id,
                                                 "devices": len(cfg.devices)})
                await stop.wait()
                log.info("agent stopping: flushing the spool")
                await self.scheduler.close()
                if traps is not None:
                    await traps.close()
                flushed = await sh.flush(flush_timeout_s)
                if not flushed:
                    log.warning("broker did not acknowledge everything before shutdown; "
                                "the rest stays in the spool for the next start")
        finally:
            if server is not None:
                server.shutdown()


async def poll_once(cfg: AgentConfig) -> list[dict[str, Any]]:
    """Every device once, pseudonymised as it would be shipped; nothing is sent."""
    registry = CollectorRegistry()
    guard = Guard(load_pseudonymiser(cfg), registry, None)

    async def emit(records: list[Record]) -> None:  # poll_once returns what it polled
        return None

    scheduler = Scheduler(cfg.devices, emit, registry=registry,
                          max_concurrent=cfg.max_concurrent_polls, context=cfg.pollers)
    try:
        records = await scheduler.poll_once()
    finally:
        await scheduler.close()
    return [r.to_dict() for r in guard.apply(records)]

