"""Objections on the agent: drop the records of people who objected before they
are spooled, so nothing of theirs is stored, shipped or kept at the edge.

`Suppressor.apply` runs on records already pseudonymised (the list names
pseudonymous ranges, see `pipelines.suppression`) and counts what it drops.
The shipper's session listens on the tenant's suppress topic and hands each
(retained) message to `Suppressor.update` (one connection per agent identity:
the broker makes the certificate identity the client id); the last good list
is also kept in the state directory (owner-only, still signed) so a restart
without the broker goes on suppressing. A list that fails verification is
counted and ignored: the one in force stays, because an attacker who can write
the topic must not be able to lift an objection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipelines.record import Record
from pipelines.suppression import (
    Network,
    SuppressionError,
    SuppressionList,
    open_list,
)
from plumbing.files import write_private

log = logging.getLogger(__name__)
STATE_FILE = "suppression.list"


class Suppressor:
    def __init__(self, tenant: str, key: ed25519.Ed25519PublicKey | None,
                 registry: CollectorRegistry, state_dir: Path | None = None) -> None:
        self.tenant, self.key, self.state_dir = tenant, key, state_dir
        self.list: SuppressionList | None = None
        self.ts = -math.inf
        self.dropped = Counter("privtel_agent_records_suppressed", "Records dropped before "
                               "the spool because their subject objected.", registry=registry)
        self.rejected = Counter("privtel_agent_suppression_lists_rejected", "Suppression "
                                "lists refused (bad signature, other tenant, older).",
                                registry=registry)
        self.size = Gauge("privtel_agent_suppression_ranges", "Pseudonymous ranges in the "
                          "suppression list in force.", registry=registry)
        if state_dir is not None and (state_dir / STATE_FILE).exists():
            self.update((state_dir / STATE_FILE).read_bytes(), persist=False)

    def update(self, data: bytes, *, persist: bool = True) -> bool:
        """Install a newer list; False (counted) when it is refused."""
        if self.key is None:
            self.rejected.inc()
            log.warning("suppression list ignored: no suppression_public_key configured")
            return False
        try:
            s = open_list(data, self.key, tenant=self.tenant)
        except SuppressionError as e:
            self.rejected.inc()
            log.warning("suppression list refused: %s", e)
            return False
        if s.ts < self.ts:
            self.rejected.inc()
            log.warning("suppression list refused: older than the one in force")
            return False
        self.list, self.ts = s, s.ts
        self.size.set(len(s))
        if persist and self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(self.state_dir / STATE_FILE, data)
        log.info("suppression list in force", extra={"entries": len(s)})
        return True

    @property
    def ranges(self) -> tuple[Network, ...]:
        return () if self.list is None else self.list.ranges

    def apply(self, records: Sequence[Record]) -> list[Record]:
        if self.list is None or not len(self.list):
            return list(records)
        out = [r for r in records if not self.list.matches(r.device, r.fields)]
        if len(out) != len(records):
            self.dropped.inc(len(records) - len(out))
        return out

