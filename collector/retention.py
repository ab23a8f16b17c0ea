"""Retention enforcement: stamp records on ingest, purge what has expired.

`RetentionService` owns the policy in force. `reload()` swaps in a new policy
only if the file validates; a bad edit is logged and counted and the old
policy stays, because a collector that stops ingesting over a typo would lose
more than it protects. Purges run on a schedule (`run`) and on demand
(`purge`), each leaving one audit entry and updating the metrics, dry runs
included, so the audit log shows who looked as well as what was deleted.
Parked batches (`collector.parking`) go by the policy's
`[operational.parked_batches]` period, counted from when they were parked;
without that setting they are kept until an operator replays or purges them.
Every purge first applies the legal holds (`collector.holds`: held records are
skipped, the count is in the audit entry and the metrics) and, for tenants
that were offboarded, treats `contract_end` records as expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from collector import holds, offboard
from collector.parking import ParkingLot
from collector.store.base import SqlStore, Store, TaggedRecord
from pipelines.config import ConfigError
from pipelines.lifecycle import TaskComponent
from pipelines.record import Record
from pipelines.retention import Policy, default_policy, parse_policy
from plumbing.files import append_private

log = logging.getLogger(__name__)


class AuditSink(Protocol):
    def record(self, action: str, **details: Any) -> None: ...


class JsonlAuditLog:
    """Append-only JSON lines, one per action, file mode 0600; each line is
    written with a single `write` on an O_APPEND descriptor so concurrent
    writers never interleave within a line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigError(str(self.path), "", "audit log directory does not exist")
        self._lock = threading.Lock()

    def record(self, action: str, **details: Any) -> None:
        entry = {"ts": time.time(), "action": action, "actor": _actor(), **details}
        line = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS) + b"\n"
        with self._lock:
            append_private(self.path, line)


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


class RetentionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.purged = Counter("privtel_retention_purged_records", "Records deleted by the "
                              "retention purge, by class.", ["retention_class"], registry=registry)
        self.runs = Counter("privtel_retention_purge_runs", "Purge runs by trigger and result.",
                            ["trigger", "result"], registry=registry)
        self.last_run = Gauge("privtel_retention_last_purge_timestamp_seconds", "End of the "
                              "last successful purge.", registry=registry)
        self.duration = Gauge("privtel_retention_last_purge_duration_seconds", "Duration of the "
                              "last successful purge.", registry=registry)
        self.parked_purged = Counter("privtel_retention_purged_parked_batches", "Parked "
                                     "batches deleted by the retention purge.",
                                     registry=registry)
        self.unmatched = Counter("privtel_retention_unmatched_records", "Records no rule "
                                 "matched, stored under the most restrictive default class.",
                                 ["kind"], registry=registry)
        self.reloads = Counter("privtel_retention_policy_reloads", "Policy loads by result.",
                               ["result"], registry=registry)
        self.gaps = Gauge("privtel_retention_policy_gaps", "Gaps the policy in force reports.",
                          registry=registry)
        self.held = Gauge("privtel_legal_hold_records", "Records a legal hold keeps from the "
                          "purge and erasure, by tenant, as of the last purge.", ["tenant"],
                          registry=registry)
        self.holds = Gauge("privtel_legal_holds_active", "Legal holds in force, as of the "
                           "last purge.", registry=registry)
        for trigger in ("scheduled", "on_demand"):
            for result in ("ok", "error", "dry_run"):
                self.runs.labels(trigger, result)
        for result in ("ok", "error"):
            self.reloads.labels(result)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    deleted: dict[str, int]
    dry_run: bool
    now: float
    seconds: float
    parked: int = 0  # parked batches deleted (would go, under dry_run)

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


class RetentionService(TaskComponent):
    """Tags records with the policy in force and purges the store; as a component
    (`start`/`close`) it runs the scheduled purges of `run`.

    `jurisdictions` (tenant -> jurisdiction, from the collector config) wins
    over the policy's own `[tenants]` table."""

    def __init__(self, store: Store | None, *, policy_path: str | os.PathLike[str] | None = None,
                 jurisdictions: Mapping[str, str] | None = None,
                 registry: CollectorRegistry | None = None, audit: AuditSink | None = None,
                 interval_s: float = 3600.0, clock: Callable[[], float] = time.time,
                 parking: ParkingLot | None = None) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        super().__init__(name="privtel-retention")
        self.store, self.audit, self.interval_s, self._clock = store, audit, interval_s, clock
        self.parking = parking
        self.policy_path = Path(policy_path) if policy_path is not None else None
        self.jurisdictions = dict(jurisdictions or {})
        self.metrics = RetentionMetrics(registry) if registry is not None else None
        self._mtime: float | None = None
        self._unmatched_seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self.policy = self._load()
        self._note_loaded("ok")

    def _load(self) -> Policy:
        if self.policy_path is None:
            return default_policy()
        text = self.policy_path.read_text("utf-8")
        self._mtime = self.policy_path.stat().st_mtime
        return parse_policy(text, str(self.policy_path))

    def _note_loaded(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.reloads.labels(result).inc()
            self.metrics.gaps.set(len(self.policy.gaps))
        if result == "ok":
            for gap in self.policy.gaps:
                log.warning("retention policy gap: %s", gap)

    def reload(self) -> bool:
        """Load the policy file again; True if the new one is now in force."""
        try:
            policy = self._load()
        except (ConfigError, OSError) as e:
            log.error("retention policy not reloaded, the previous one stays: %s", e)
            if self.metrics is not None:
                self.metrics.reloads.labels("error").inc()
            return False
        with self._lock:
            self._flush_unmatched()
            self.policy, self._unmatched_seen = policy, {}
        self._note_loaded("ok")
        if self.audit is not None:
            self.audit.record("retention.policy_reload", file=str(self.policy_path),
                              classes=sorted(policy.classes), gaps=len(policy.gaps))
        return True

    def reload_if_changed(self) -> bool:
        if self.policy_path is None:
            return False
        try:
            mtime = self.policy_path.stat().st_mtime
        except OSError:
            return False
        return mtime != self._mtime and self.reload()

    def tag(self, records: Iterable[Record], now: float | None = None) -> list[TaggedRecord]:
        """Stamp each record; called on ingest just before `store.write_batch`.

        The policy is asked once per distinct (kind, tenant, site) of the call (a
        batch holds a few: a poll's rows alternate between them, so runs alone
        would ask again on nearly every row); every other record of the group
        gets the same class and basis, and its expiry is computed here exactly as
        `Policy.tag` would."""
        at = self._clock() if now is None else now
        with self._lock:
            policy = self.policy
            out: list[TaggedRecord] = []
            append = out.append
            groups: dict[tuple[object, str, str],
                         tuple[str, str, float | None, str | None]] = {}
            for r in records:
                key = (r.kind, r.tenant, r.site)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = self._group(policy, r, at)
                elif group[3] is not None:
                    policy.unmatched[group[3]] += 1
                klass, basis, seconds, _ = group
                if seconds is None:
                    append(TaggedRecord(r, klass, basis, None))
                else:
                    ts = r.ts
                    append(TaggedRecord(r, klass, basis, (ts if ts < at else at) + seconds))
            self._flush_unmatched()
        return out

    def _group(self, policy: Policy, r: Record, at: float
               ) -> tuple[str, str, float | None, str | None]:
        """Class, basis and period for `r`'s kind and tenant, and the kind to count
        as unmatched for each further record of the run (None when a rule matched)."""
        kind = r.kind.value
        before = policy.unmatched[kind]
        t = policy.tag(r, self.jurisdictions.get(r.tenant), now=at)
        if policy.unmatched[kind] != before:
            return t.retention_class, t.legal_basis, policy.default.seconds, kind
        return t.retention_class, t.legal_basis, policy.classes[t.retention_class].seconds, None

    def _flush_unmatched(self) -> None:
        if self.metrics is None:
            return
        for kind, n in self.policy.unmatched.items():
            delta = n - self._unmatched_seen.get(kind, 0)
            if delta > 0:
                self.metrics.unmatched.labels(kind).inc(delta)
                self._unmatched_seen[kind] = n

    def purge(self, *, dry_run: bool = False, trigger: str = "on_demand",
              now: float | None = None) -> PurgeResult:
        if self.store is None:
            raise ValueError("this retention service has no store to purge")
        at = self._clock() if now is None else now
        started = time.perf_counter()
        held: dict[str, int] = {}
        try:
            deleted: dict[str, int] = {}
            if isinstance(self.store, SqlStore):
                held, deleted = self._holds_and_contract_end(self.store, dry_run)
            for klass, n in self.store.purge_expired(at, dry_run=dry_run).items():
                deleted[klass] = deleted.get(klass, 0) + n
            parked = self._purge_parked(at, dry_run)
        except Exception as e:
            if self.metrics is not None:
                self.metrics.runs.labels(trigger, "error").inc()
            if self.audit is not None:
                self.audit.record("retention.purge", trigger=trigger, dry_run=dry_run, now=at,
                                  result="error", error=type(e).__name__)
            raise
        result = PurgeResult(deleted, dry_run, at, time.perf_counter() - started, parked)
        if self.metrics is not None:
            self.metrics.runs.labels(trigger, "dry_run" if dry_run else "ok").inc()
            if not dry_run:
                for klass, n in deleted.items():
                    self.metrics.purged.labels(klass).inc(n)
                self.metrics.parked_purged.inc(parked)
                self.metrics.last_run.set(self._clock())
                self.metrics.duration.set(result.seconds)
        if self.audit is not None:
            self.audit.record("retention.purge", trigger=trigger, dry_run=dry_run, now=at,
                              result="ok", deleted=deleted, total=result.total,
                              parked_batches=parked, store=self.store.backend, held=held)
        log.info("retention purge (%s%s): %d records %s", trigger, ", dry run" if dry_run else "",
                 result.total, "would go" if dry_run else "deleted")
        return result

    def _purge_parked(self, at: float, dry_run: bool) -> int:
        period = self.policy.operational.get("parked_batches")
        if self.parking is None or period is None or period.seconds is None:
            return 0
        return self.parking.purge(parked_before=at - period.seconds, dry_run=dry_run)

    def _holds_and_contract_end(self, store: SqlStore, dry_run: bool
                                ) -> tuple[dict[str, int], dict[str, int]]:
        """Before the backend's purge: mark what the legal holds in force cover (the
        backend skips marked rows), and take the `contract_end` records of offboarded
        tenants, which have no expiry for the backend to see. Subject holds match
        through the address index as the API last refreshed it."""
        with store.tx(write=True) as cur:
            held = holds.sweep(cur)
            active = len(holds.active_holds(cur))
            ended = offboard.purge_contract_ended(cur, dry_run=dry_run)
        if self.metrics is not None:
            self.metrics.holds.set(active)
            for t in set(held) | {s.labels["tenant"] for m in self.metrics.held.collect()
                                  for s in m.samples}:
                self.metrics.held.labels(t).set(held.get(t, 0))
        return held, ended

    async def _main(self, stop: asyncio.Event) -> None:
        await self.run(stop)

    async def run(self, stop: asyncio.Event, *, reload_check_s: float = 30.0) -> None:
        """Scheduled purges until `stop` is set, with the policy file checked for
        changes every `reload_check_s`; a failed purge is logged and retried at the
        next tick rather than ending the loop."""
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        while not stop.is_set():
            self.reload_if_changed()
            if loop.time() >= next_purge:
                try:
                    await asyncio.to_thread(self.purge, trigger="scheduled")
                except Exception as e:
                    log.error("scheduled retention purge failed: %s", e)
                next_purge = loop.time() + self.interval_s
            wait = max(0.0, min(reload_check_s, next_purge - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
