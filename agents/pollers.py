"""The seam between the scheduler and the protocols it polls.

A protocol (snmp, ssh) registers a `PollerSpec`: how to read its per-device
options from config, and how to build a poller from the agent-wide
`PollerContext`. A poller never raises for a device's failure: it returns a
health record with `up=0` and a reason code, so one dead device never stops
the agent.

The context is how a poller learns where things are (state dir, credentials,
known_hosts, extra SNMP profiles): from the agent config, read and validated
once at load, instead of from the process environment, so two agents in one
process (tests, the demo) cannot see each other's settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipelines.config import Section
from pipelines.record import Kind, Record
from pipelines.vocab import RecordName

HEALTH_NAME = RecordName.DEVICE_HEALTH


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

    async def settled(self, device: Device, kept: bool) -> None:
        """The records of `device`'s last poll are in the spool (`kept`) or were
        refused by it: a poller that remembers what it has sent (log positions)
        moves on only when kept."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PollerContext:
    """What pollers need from the agent config. A `None` leaves the choice to the
    environment fallbacks that predate these settings ($PRIVTEL_CREDENTIALS,
    $PRIVTEL_CREDS_KEY(_FILE), $PRIVTEL_SSH_KNOWN_HOSTS), so an existing
    deployment keeps working unchanged."""

    state_dir: Path
    credentials_file: Path | None = None
    credentials_key_file: Path | None = None
    ssh_known_hosts: Path | None = None
    ssh_max_concurrent: int = 16
    snmp_profile_dirs: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.ssh_max_concurrent, int) or self.ssh_max_concurrent < 1:
            raise ValueError("ssh_max_concurrent must be a positive integer, "
                             f"not {self.ssh_max_concurrent!r}")

    @property
    def ssh_known_hosts_default(self) -> Path:
        """Where host keys live when neither config nor environment names a file:
        beside the agent's other state, not in a login user's ~/.ssh."""
        return self.state_dir / "ssh_known_hosts"


@dataclass(frozen=True, slots=True)
class PollerSpec:
    """`parse_options(section, ctx)` validates a device's `[devices.<protocol>]`
    table (ctx for what it may refer to, e.g. a profile in a configured dir);
    `make(ctx)` builds the one poller the scheduler uses for the protocol."""

    default_port: int
    parse_options: Callable[[Section, PollerContext], Any]
    make: Callable[[PollerContext], Poller]


REGISTRY: dict[str, PollerSpec] = {}


def register(protocol: str, spec: PollerSpec) -> None:
    REGISTRY[protocol] = spec


def health_record(device: Device, *, up: bool, reason: str | None, started: float,
                  **extra: Any) -> Record:
    """The per-poll health record: every poll, good or bad, produces exactly one."""
    now = time.time()
    fields: dict[str, Any] = {
        "up": 1 if up else 0,
        "reason": None if reason is None else str(reason),  # a record holds plain str
        "protocol": device.protocol,
        "poll_duration_s": round(now - started, 6),
    }
    fields.update(extra)
    return Record(kind=Kind.HEALTH, tenant=device.tenant, site=device.site,
                  device=device.name, name=HEALTH_NAME, fields=fields, ts=now)
