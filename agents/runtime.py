"""The agent process: poll -> pseudonymise -> leak guard -> shipper, until SIGTERM.

The leak guard sits between the pseudonymiser and the shipper on purpose: the
spool is the first place anything is written, so a record that still holds a
raw address must be stopped before it, not after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, start_http_server

from agents import config as agent_config
from agents.config import AgentConfig
from agents.pollers import HEALTH_NAME
from agents.scheduler import Scheduler
from agents.shipper import Shipper
from agents.snmp.traps import TrapReceiver, parse_trap_config
from pipelines import keys
from pipelines.config import ConfigError, Section, require_private
from pipelines.pseudonym import PrivacyPolicy, Pseudonymiser, TenantKey
from pipelines.pseudonym.leakguard import find_leaks
from pipelines.record import Record

log = logging.getLogger(__name__)


def load_pseudonymiser(cfg: AgentConfig) -> Pseudonymiser:
    path = cfg.keys.tenant_key
    require_private(str(path), path.stat().st_mode)
    key = TenantKey.from_hex(path.read_text().strip(), epoch=cfg.keys.tenant_key_epoch)
    policy = PrivacyPolicy.from_section(Section(cfg.extra.get("privacy", {}), cfg.file, "privacy"))
    return Pseudonymiser(key, policy)


class Guard:
    """Pseudonymises records and holds back any that still leak, with a count and a
    local quarantine file (owner-only) naming the record ids, never the values."""

    def __init__(self, pseudonymiser: Pseudonymiser, registry: CollectorRegistry,
                 quarantine_dir: Path | None) -> None:
        self.pseudonymiser = pseudonymiser
        self.quarantine_dir = quarantine_dir
        self.leaks = Counter("privtel_agent_leak_quarantined_records",
                             "Records held back because a raw address survived pseudonymisation",
                             registry=registry)

    def apply(self, records: Sequence[Record]) -> list[Record]:
        out = self.pseudonymiser.records(list(records))
        leaks = find_leaks(out, self.pseudonymiser)
        if not leaks:
            return out
        bad = {rid for rid, _ in leaks}
        self.leaks.inc(len(bad))
        for rid, field in leaks:
            log.error("record held back: raw address in field after pseudonymisation",
                      extra={"record_id": rid, "field": field})
        if self.quarantine_dir is not None:
            self._quarantine([r for r in out if r.id in bad])
        return [r for r in out if r.id not in bad]

    def _quarantine(self, records: list[Record]) -> None:
        assert self.quarantine_dir is not None
        self.quarantine_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.quarantine_dir / f"leaks-{int(time.time())}.ndjson"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as f:
            for r in records:
                f.write(orjson.dumps(r.to_dict()) + b"\n")


class Agent:
    """One agent: scheduler and shipper under one stop event."""

    def __init__(self, cfg: AgentConfig, *, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or CollectorRegistry()
        self.guard = Guard(load_pseudonymiser(cfg), self.registry, cfg.state_dir / "quarantine")
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
                                           max_concurrent=cfg.max_concurrent_polls)
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
                          max_concurrent=cfg.max_concurrent_polls)
    try:
        records = await scheduler.poll_once()
    finally:
        await scheduler.close()
    return [r.to_dict() for r in guard.apply(records)]

