"""Replaying parked batches after the fix: the same checks, exactly once.

A `Replayer` is an ingest worker built from the collector config exactly as
the running collector builds its own (keys, agents, residency, store, retention
tags), never connected to a broker. Each parked batch goes through
`IngestWorker.replay`: every check of a live delivery, freshness judged at the
time the batch was first parked, and no sequence window (a parked batch is
late by design and must not move the window). The store's (agent, batch) key
turns a batch already stored into a duplicate. Afterwards a batch stored,
found stored, or now judged garbage (quarantined as a digest) leaves the
parking table; one refused again stays parked with the new reason. The
post-commit outputs (the NOC exporter) are not fed: they show live traffic, and
a replayed batch is history by the time it is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from collector.admission import Admission
from collector.audit import AuditLog, read_key
from collector.config import CollectorConfig
from collector.ingest import IngestWorker
from collector.parking import PARK_REASONS, ParkingLot
from collector.retention import RetentionService
from collector.runtime import load_keys
from collector.sequence import StoreSequences
from collector.store import open_db
from collector.store.sink import StoreSink


@dataclass(frozen=True, slots=True)
class Replayed:
    id: str
    outcome: str  # accepted, duplicate, a park reason (still parked) or a quarantine reason

    @property
    def parked(self) -> bool:
        return self.outcome in PARK_REASONS


class Replayer:
    """Owns its store connections; `close()` them (or use as a context manager)."""

    def __init__(self, cfg: CollectorConfig) -> None:
        self.cfg = cfg
        self.db = open_db(cfg.store_url)
        try:
            self.parking = ParkingLot(self.db)
            self.audit = AuditLog(self.db, read_key(cfg.audit_key_file))
            retention = RetentionService(None, policy_path=cfg.retention_policy,
                                         jurisdictions=cfg.jurisdictions())
            self.sink = StoreSink(self.db, retention.tag)
            agent_keys, collector_keys = load_keys(cfg)
            self.worker = IngestWorker(
                broker_url=cfg.mqtt_url, sink=self.sink.sink, quarantine=self.sink.quarantine,
                agent_keys=agent_keys, collector_keys=collector_keys,
                registry=CollectorRegistry(), admission=Admission.from_config(cfg),
                park=self.parking.park_async,
                sequences=StoreSequences(self.db, max_jump=cfg.max_sequence_jump),
                max_batch_bytes=cfg.max_batch_bytes, replay_window_s=cfg.replay_window_s)
        except BaseException:
            self.db.close()
            raise

    async def replay(self, ids: Iterable[str]) -> list[Replayed]:
        """Replay these parked batches in the order they were parked; an id not parked
        (any more) is skipped. A store outage raises `SinkFailed` and leaves the rest
        parked."""
        out = []
        for p in self.parking.find(ids=ids):
            payload = self.parking.payload(p.id)
            if payload is None:  # replayed or purged by someone else meanwhile
                continue
            outcome = await self.worker.replay(p.topic, payload, p.parked_at)
            r = Replayed(p.id, outcome)
            if not r.parked:
                self.parking.remove(p.id)
            out.append(r)
        return out

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Replayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Replayed", "Replayer"]
