"""The seam between the scheduler and the protocols it polls.

A protocol (snmp, ssh) registers a `PollerSpec`: how to read its per-device
options from config, and how to build a poller. A poller never raises for a
device's failure: it returns a health record with `up=0` and a reason code, so
one dead device never stops the agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pipelines.config import Section
from pipelines.record import Kind, Record

HEALTH_NAME = "device.health"


@dataclass(frozen=True, slots=True)
class Device:
    """A configured device. `name` is site-local and is tokenised before shipping;
    `address` never leaves the agent except as a pseudonym."""

    name: str
    address: str
    port: int
    protocol: str
    interval_s: float
    tenant: str
    site: str
    options: Any


class Poller(Protocol):
    async def poll(self, device: Device) -> list[Record]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PollerSpec:
    default_port: int
    parse_options: Callable[[Section], Any]
    make: Callable[[], Poller]


REGISTRY: dict[str, PollerSpec] = {}


def register(protocol: str, spec: PollerSpec) -> None:
    REGISTRY[protocol] = spec


def health_record(device: Device, *, up: bool, reason: str | None, started: float,
                  **extra: Any) -> Record:
    """The per-poll health record: every poll, good or bad, produces exactly one."""
    now = time.time()
    fields: dict[str, Any] = {
        "up": 1 if up else 0,
        "reason": reason,
        "protocol": device.protocol,
        "poll_duration_s": round(now - started, 6),
    }
    fields.update(extra)
    return Record(kind=Kind.HEALTH, tenant=device.tenant, site=device.site,
                  device=device.name, name=HEALTH_NAME, fields=fields, ts=now)
