"""The NOC's shared state in the store: agent liveness, device states, worker assignment.

Why the store: each ingest worker stores the batches the broker happened to
give it, so a view built from what one worker saw is partial, doubles when
several workers are scraped, and is lost on restart. Here every committed batch
is merged into one row per device (`noc_devices`, each field with its poll time,
newer wins) and one per agent (`noc_agents`: last seen, last heartbeat and its
interval); every worker reads the rows back into its `NocMetrics`.

One series per device: workers register in `noc_workers` with a lease, and a
device (or agent) is served by the live worker that wins a rendezvous hash of
(worker id, key). Every worker computes the same owner from the same table, a
device keeps its worker while that worker lives (its series keeps its `instance`
label, so rates run on across a restart of the worker), and a worker that closes
or lets its lease lapse hands its devices to the others at their next scrape.

Agent silence: an agent is up while its last batch or heartbeat is younger than
`silence_factor` x its heartbeat interval (`default_interval_s` until its first
heartbeat says otherwise).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson

from collector.metrics.noc import (
    AgentView,
    DeviceState,
    NocMetrics,
    apply_records,
)
from collector.store.base import SqlStore
from collector.store.dialect import Cursor
from pipelines.record import Record
from pipelines.vocab import RecordName

log = logging.getLogger(__name__)
_LOCK = 0x70726e63  # advisory lock: NOC merges read-then-write one device row
_REFRESH_SLACK_S = 30.0  # rows written by a worker whose clock runs behind are still read


@dataclass(frozen=True, slots=True)
class LivenessSettings:
    worker_id: str
    silence_factor: float = 3.0
    default_interval_s: float = 60.0
    worker_lease_s: float = 30.0
    refresh_min_s: float = 1.0
    forget_after_s: float = 30 * 86400.0

    def __post_init__(self) -> None:
        if not self.worker_id or len(self.worker_id) > 200:
            raise ValueError("worker_id must be 1-200 characters")
        if self.silence_factor < 1:
            raise ValueError("silence_factor must be at least 1")
        for name in ("default_interval_s", "worker_lease_s", "forget_after_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


def _rank(worker: str, key: str) -> bytes:
    return hashlib.blake2b(f"{worker}\0{key}".encode(), digest_size=8).digest()


class SharedNoc:
    """Store side of the NOC (one connection of its own); thread-safe, blocking."""

    def __init__(self, db: SqlStore, settings: LivenessSettings, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.db, self.settings, self._clock = db, settings, clock
        self._lock = threading.Lock()
        self._last_refresh = 0.0
        self._since = 0.0
        self._workers: tuple[str, ...] = (settings.worker_id,)
        self._owner_cache: dict[str, bool] = {}
        self._agents: list[AgentView] = []
        self._registered_at = 0.0
        self._pruned_at = 0.0

    # --- writing (ingest side, after commit) ----------------------------------------------
    def commit(self, agent_id: str, tenant: str, records: Sequence[Record],
               scratch: NocMetrics) -> None:
        """Merge one committed batch into the shared rows; `scratch` supplies the caps."""
        now = self._clock()
        fresh: dict[tuple[str, str], DeviceState] = {}
        touched = apply_records(fresh, records, scratch.handlers,
                                lambda r: DeviceState(r.tenant, r.site, r.device))
        beats = [r for r in records if r.name == RecordName.AGENT_HEARTBEAT]
        site = records[0].site if records else None
        with self.db.tx(write=True) as cur:
            self.db.dialect.lock(cur, _LOCK)
            row = cur.execute("SELECT last_seen, heartbeat_ts, interval_s, devices, site FROM "
                              "noc_agents WHERE tenant = ? AND agent_id = ?",
                              (tenant, agent_id)).fetchone()
            last_seen, hb_ts, interval, n_dev, old_site = row if row else (0.0, None, None,
                                                                           None, "")
            for b in beats:
                if hb_ts is None or b.ts >= hb_ts:
                    hb_ts, n_dev = float(b.ts), b.fields.get("devices")
                    iv = b.fields.get("interval_s")
                    interval = float(iv) if isinstance(iv, int | float) and iv > 0 else interval
            args = (max(float(last_seen), now), hb_ts, interval,
                    n_dev if isinstance(n_dev, int) else None, site or old_site, tenant, agent_id)
            if row:
                cur.execute("UPDATE noc_agents SET last_seen = ?, heartbeat_ts = ?, "
                            "interval_s = ?, devices = ?, site = ? WHERE tenant = ? AND "
                            "agent_id = ?", args)
            else:
                cur.execute("INSERT INTO noc_agents (last_seen, heartbeat_ts, interval_s, "
                            "devices, site, tenant, agent_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            args)
            for key in sorted(touched):
                self._merge_device(cur, fresh[key], agent_id, now)

    def _merge_device(self, c: Cursor, new: DeviceState, agent_id: str, now: float) -> None:
        row = c.execute("SELECT state, listed_at FROM noc_devices WHERE tenant = ? AND "
                        "device = ?", (new.tenant, new.device)).fetchone()
        if row is None:
            state, listed = new, new.listed_at
        else:
            state = DeviceState.from_dict(new.tenant, new.device, self.db.dialect.json(row[0]))
            state.merge(new)
            listed = max((x for x in (row[1], new.listed_at) if x is not None), default=None)
        blob = orjson.dumps(state.to_dict()).decode()
        if row is None:
            c.execute("INSERT INTO noc_devices (tenant, device, agent_id, listed_at, state, "
                      "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                      (new.tenant, new.device, agent_id, listed, blob, now))
        else:
            c.execute("UPDATE noc_devices SET agent_id = ?, listed_at = ?, state = ?, "
                      "updated_at = ? WHERE tenant = ? AND device = ?",
                      (agent_id, listed, blob, now, new.tenant, new.device))

    # --- workers ----------------------------------------------------------------------------
    def register(self) -> None:
        now = self._clock()
        with self.db.tx(write=True) as cur:
            cur.execute("DELETE FROM noc_workers WHERE worker_id = ?", (self.settings.worker_id,))
            cur.execute("INSERT INTO noc_workers (worker_id, seen_at) VALUES (?, ?)",
                        (self.settings.worker_id, now))
        self._registered_at = now

    def deregister(self) -> None:
        with self.db.tx(write=True) as cur:
            cur.execute("DELETE FROM noc_workers WHERE worker_id = ?", (self.settings.worker_id,))

    def owns(self, key: str) -> bool:
        hit = self._owner_cache.get(key)
        if hit is None:
            me = self.settings.worker_id
            hit = self._owner_cache[key] = max(self._workers, key=lambda w: _rank(w, key)) == me
        return hit

    def agents(self) -> Iterable[AgentView]:
        return self._agents

    def prune(self, noc: NocMetrics, now: float) -> None:
        """The state stays bounded: an agent not heard from for `forget_after_s`
        (decommissioned, not merely silent) and devices nothing reported or listed
        for as long are dropped from the store and from memory."""
        horizon = now - self.settings.forget_after_s
        with self.db.tx(write=True) as cur:
            cur.execute("DELETE FROM noc_devices WHERE updated_at < ?", (horizon,))
            cur.execute("DELETE FROM noc_agents WHERE last_seen < ?", (horizon,))
            cur.execute("DELETE FROM noc_workers WHERE seen_at < ?", (horizon,))
        noc.forget_older(horizon)
        self._pruned_at = now

    # --- reading (exposition side) -----------------------------------------------------------
    def refresh(self, noc: NocMetrics) -> None:
        """Load what changed since the last refresh (at most every `refresh_min_s`)."""
        with self._lock:
            now = self._clock()
            if now - self._last_refresh < self.settings.refresh_min_s:
                return
            s = self.settings
            if now - self._registered_at > s.worker_lease_s / 3:
                self.register()
            if now - self._pruned_at > 3600:
                self.prune(noc, now)
            with self.db.tx() as cur:
                workers = sorted({str(w) for (w,) in cur.execute(
                    "SELECT worker_id FROM noc_workers WHERE seen_at >= ?",
                    (now - s.worker_lease_s,)).fetchall()} | {s.worker_id})
                if tuple(workers) != self._workers:
                    # another share of the devices: read every row again, keep only ours
                    self._workers, self._owner_cache, self._since = tuple(workers), {}, 0.0
                    noc.retain(lambda t, d: self.owns(f"device/{t}/{d}"))
                since = self._since
                agent_rows = cur.execute("SELECT tenant, agent_id, site, last_seen, "
                                         "heartbeat_ts, interval_s FROM noc_agents").fetchall()
                rows = cur.execute("SELECT tenant, device, agent_id, listed_at, state, updated_at "
                                   "FROM noc_devices WHERE updated_at >= ?",
                                   (since - _REFRESH_SLACK_S,)).fetchall()
            self._agents = []
            for tenant, agent, site, seen, hb, iv in agent_rows:
                interval = float(iv) if iv else s.default_interval_s
                self._agents.append(AgentView(
                    str(tenant), str(site), str(agent), float(seen),
                    now - float(seen) <= s.silence_factor * interval,
                    None if hb is None else float(hb), interval))
            newest = since
            for tenant, device, agent, listed, state, updated in rows:
                newest = max(newest, float(updated))
                if not self.owns(f"device/{tenant}/{device}"):
                    continue  # another worker serves it: not decoded, not held
                st = DeviceState.from_dict(str(tenant), str(device), self.db.dialect.json(state))
                st.agent = None if agent is None else str(agent)
                st.listed_at = None if listed is None else float(listed)
                noc.put(st)
            self._since, self._last_refresh = newest, now
