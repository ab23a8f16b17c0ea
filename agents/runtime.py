"""The agent process: poll -> pseudonymise -> leak guard -> objections' suppression
(`agents.suppress`) -> shipper, until SIGTERM.

The leak guard sits between the pseudonymiser and the shipper on purpose: the
spool is the first place anything is written, so a record that still holds a
raw address must be stopped before it, not after.

Tenant keys and their rotation live in `agents.tenantkeys`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from agents import config as agent_config
from agents.config import AgentConfig
from agents.guard import Guard
from agents.heartbeat import Health, Heartbeat
from agents.pollers import HEALTH_NAME
from agents.scheduler import Scheduler
from agents.shipper import Shipper
from agents.snmp.traps import TrapReceiver
from agents.suppress import Suppressor
from agents.syslog.receiver import SyslogReceiver
from agents.tenantkeys import KeySchedule, load_pseudonymiser
from pipelines import keys
from pipelines.config import ConfigError
from pipelines.lifecycle import Component, run_components
from pipelines.record import Record
from pipelines.suppression import suppress_topic
from plumbing.metrics_http import MetricsServer

log = logging.getLogger(__name__)


class Agent:
    """One agent: scheduler and shipper under one stop event."""

    def __init__(self, cfg: AgentConfig, *, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.registry = registry or CollectorRegistry()
        self.keys = KeySchedule(cfg, self.registry, clock=clock)
        self.guard = Guard(self.keys.pseudonymiser, self.registry, cfg.state_dir / "quarantine",
                           cfg.state_dir)
        pub = cfg.keys.suppression_public_key
        self.suppressor = Suppressor(cfg.tenant, None if pub is None else keys.load_verify_key(
            pub.read_bytes()), self.registry, cfg.state_dir)
        self.records_polled = 0
        self.records_shipped = 0
        self.up_devices: set[str] = set()
        self.devices = cfg.devices
        self.health = Health()
        self.shipper: Shipper | None = None
        self.scheduler: Scheduler | None = None
        self.syslog: SyslogReceiver | None = None

    async def _emit(self, records: list[Record]) -> None:
        self.records_polled += len(records)
        self.health.note(records)
        for r in records:
            if r.name == HEALTH_NAME:
                (self.up_devices.add if r.fields.get("up") else self.up_devices.discard)(r.device)
        rotated = await self.keys.check()
        if rotated is not None:
            self.guard.pseudonymiser = rotated
        clean = self.suppressor.apply(self.guard.apply(records))
        assert self.shipper is not None
        await self.shipper.submit(clean)
        self.records_shipped += len(clean)

    def _traps(self) -> TrapReceiver | None:
        """The trap/inform receiver, when the config has a `[traps]` table."""
        cfg = self.cfg
        if cfg.traps is None:
            return None
        return TrapReceiver(
            cfg.traps, self._emit,
            tenant=cfg.tenant, site=cfg.site,
            devices_by_address={d.address: d.name for d in cfg.devices})

    def _syslog(self) -> SyslogReceiver | None:
        """The syslog receiver, when the config has a `[syslog]` table."""
        cfg = self.cfg
        if cfg.syslog is None:
            return None
        self.syslog = SyslogReceiver(
            cfg.syslog, self._emit, tenant=cfg.tenant, site=cfg.site, devices=cfg.devices,
            registry=self.registry)
        return self.syslog

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
        self.devices = cfg.devices
        if self.scheduler is not None:
            self.scheduler.reload(cfg.devices)
        if self.syslog is not None:
            self.syslog.set_devices(cfg.devices)
        if self.shipper is not None:
            self.shipper.set_collector_key(key)
        log.info("config reloaded", extra={"devices": len(cfg.devices),
                                           "collector_key_id": key.key_id})
        return True

    def components(self, *, flush_timeout_s: float = 10.0) -> list[Component]:
        """In start order; closed in reverse, so sources stop before the shipper flushes."""
        cfg = self.cfg
        out: list[Component] = []
        if cfg.metrics_listen:
            out.append(MetricsServer(self.registry, *cfg.metrics_listen))
        listeners = ({} if cfg.keys.suppression_public_key is None
                     else {suppress_topic(cfg.tenant): self.suppressor.update})
        self.shipper = Shipper(cfg, registry=self.registry,
                               pseudonym_key_ids=(self.guard.pseudonymiser.key_id,),
                               flush_on_close_s=flush_timeout_s, listeners=listeners)
        self.scheduler = Scheduler(cfg.devices, self._emit, registry=self.registry,
                                   max_concurrent=cfg.max_concurrent_polls, context=cfg.pollers)
        out += [self.shipper, self.scheduler,
                Heartbeat(self._emit, lambda: self.devices, self.health, tenant=cfg.tenant,
                          site=cfg.site, agent_id=cfg.agent_id,
                          interval_s=cfg.heartbeat_interval_s)]
        out += [c for c in (self._traps(), self._syslog()) if c is not None]
        return out

    def _started(self) -> None:
        log.info("agent started", extra={"agent_id": self.cfg.agent_id,
                                         "devices": len(self.cfg.devices)})

    async def run(self, stop: asyncio.Event, *, flush_timeout_s: float = 10.0) -> None:
        """Until `stop` or the first component failure; on the way out sources stop first,
        then the shipper flushes what it holds (up to `flush_timeout_s`)."""
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        await run_components(self.components(flush_timeout_s=flush_timeout_s), stop,
                             on_started=self._started)


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

