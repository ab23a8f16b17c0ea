"""What the collector decides itself, from its own config, never from what an agent says.

- Tenant: an agent is registered for one tenant (`[[agents]] tenant`); a
  correctly signed batch claiming another is `unknown_agent`.
- Residency: a collector names its region (`[collector] region`), each tenant
  the regions its data may be processed in (`[tenants.T] regions`). A batch of
  a tenant not allowed here is refused before it is decrypted (decrypting is
  processing) and parked as `residency`; a replay on a collector of an allowed
  region stores it. A collector without a region enforces nothing.
- Sites and kinds: `[[agents]] sites`/`kinds` bind what an agent may report.
  One record outside them and the whole batch is parked (`site` or `kind`),
  with the offending records counted: dropping records instead would lose
  the rest of an authentic batch's meaning silently, while a parked batch
  can be replayed whole once the binding is fixed, and is exactly once either
  way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from collector.config import AgentEntry, CollectorConfig
from collector.parking import Refused
from pipelines.envelope import EnvelopeError, Header
from pipelines.record import Record


@dataclass(frozen=True, slots=True)
class Admission:
    agents: Mapping[str, AgentEntry] | None = None  # None: any tenant, site and kind
    region: str | None = None
    tenant_regions: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_tenants(cls, agent_tenants: Mapping[str, str] | None) -> Admission:
        """Only the tenant binding (the worker's older `agent_tenants` argument)."""
        if agent_tenants is None:
            return cls()
        return cls({a: AgentEntry(a, t, Path()) for a, t in agent_tenants.items()})

    @classmethod
    def from_config(cls, cfg: CollectorConfig) -> Admission:
        return cls({a.agent_id: a for a in cfg.agents}, cfg.region, cfg.tenant_regions())

    def before_decrypt(self, h: Header) -> None:
        """On a header whose signature verified."""
        if self.agents is not None:
            entry = self.agents.get(h.agent_id)
            if entry is None or entry.tenant != h.tenant:
                raise EnvelopeError("unknown_agent", f"agent {h.agent_id!r} is not "
                                    f"registered for tenant {h.tenant!r}")
        if self.region is not None and self.region not in self.tenant_regions.get(
                h.tenant, frozenset()):
            raise Refused("residency", f"tenant {h.tenant!r} may not be processed in region "
                          f"{self.region!r}")

    def records(self, h: Header, records: Sequence[Record]) -> None:
        """Every record within the agent's sites and kinds, or `Refused` with counts."""
        entry = None if self.agents is None else self.agents.get(h.agent_id)
        if entry is None or (entry.sites is None and entry.kinds is None):
            return
        bad = {"site": 0, "kind": 0}
        for r in records:
            if entry.sites is not None and r.site not in entry.sites:
                bad["site"] += 1
            elif entry.kinds is not None and r.kind.value not in entry.kinds:
                bad["kind"] += 1
        if bad["site"] or bad["kind"]:
            reason = "site" if bad["site"] else "kind"
            raise Refused(reason, f"agent {h.agent_id!r} sent {bad['site']} record(s) for "
                          f"sites and {bad['kind']} of kinds it is not bound to",
                          {k: n for k, n in bad.items() if n})


__all__ = ["Admission"]
