"""The agent's leak guard: pseudonymise, then hold back any record still carrying a
raw identifier of any class, count it by class, and quarantine it locally.

The quarantine keeps no raw value: per held record its id, kind, name and, per
finding, the field, the class and a keyed digest of the field's value (enough to
tell two findings apart or confirm a suspicion with the key, not to read them).
Files older than the policy's `quarantine_retention_days` are purged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, Counter

from agents.learnt_names import FILE_NAME, LearntNamesFile
from pipelines.pseudonym import Pseudonymiser
from pipelines.pseudonym.leakguard import find_leaks_by_class
from pipelines.record import Record
from plumbing.files import append_private

log = logging.getLogger(__name__)


class Guard:
    def __init__(self, pseudonymiser: Pseudonymiser, registry: CollectorRegistry,
                 quarantine_dir: Path | None, names_dir: Path | None = None) -> None:
        self.quarantine_dir = quarantine_dir
        self.names = LearntNamesFile(names_dir / FILE_NAME) if names_dir is not None else None
        self.leaks = Counter("privtel_agent_leak_quarantined_records",
                             "Records held back because a raw identifier survived "
                             "pseudonymisation", registry=registry)
        self.by_class = Counter("privtel_agent_leak_findings",
                                "Raw identifiers found by the leak guard, by class",
                                ["class"], registry=registry)
        self.pseudonymiser = pseudonymiser

    @property
    def pseudonymiser(self) -> Pseudonymiser:
        return self._p

    @pseudonymiser.setter
    def pseudonymiser(self, p: Pseudonymiser) -> None:
        """A new pseudonymiser (start, key rotation) gets the names learnt under its key."""
        self._p = p
        if self.names is not None:
            self.names.load(p)

    def apply(self, records: Sequence[Record]) -> list[Record]:
        out = self._p.records(list(records))
        if self.names is not None:
            self.names.save(self._p)
        leaks = find_leaks_by_class(out, self._p)
        if not leaks:
            return out
        bad: dict[str, list[tuple[str, str]]] = {}
        for rid, field, cls in leaks:
            bad.setdefault(rid, []).append((field, cls))
            self.by_class.labels(cls).inc()
            log.error("record held back: raw identifier in field after pseudonymisation",
                      extra={"record_id": rid, "field": field, "class": cls})
        self.leaks.inc(len(bad))
        if self.quarantine_dir is not None:
            self._quarantine([r for r in out if r.id in bad], bad)
        return [r for r in out if r.id not in bad]

    def _quarantine(self, records: list[Record],
                    findings: dict[str, list[tuple[str, str]]]) -> None:
        assert self.quarantine_dir is not None
        self.quarantine_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.purge()
        path = self.quarantine_dir / f"leaks-{int(time.time())}.ndjson"
        digest = self._p.known.digest
        lines = []
        for r in records:
            values = {"site": r.site, "device": r.device, **r.fields}
            lines.append(orjson.dumps({
                "id": r.id, "kind": str(r.kind), "name": r.name, "pkid": self._p.key_id,
                "findings": [{"field": k, "class": c, "digest": digest(str(values.get(k)))}
                             for k, c in findings[r.id]]}) + b"\n")
        append_private(path, b"".join(lines))

    def purge(self, now: float | None = None) -> int:
        """Delete quarantine files older than the retention; how many."""
        if self.quarantine_dir is None or not self.quarantine_dir.exists():
            return 0
        limit = (now if now is not None else time.time()) \
            - self._p.policy.quarantine_retention_days * 86400
        n = 0
        for f in self.quarantine_dir.glob("leaks-*.ndjson"):
            if f.stat().st_mtime < limit:
                f.unlink(missing_ok=True)
                n += 1
        return n
