"""The collector process: ingest -> retention tag -> store -> metrics, until SIGTERM.

The store call runs in a worker thread so a slow disk never stalls the MQTT
keepalive; the ingest worker acknowledges a batch only after this sink returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from collector.config import CollectorConfig
from collector.ingest import IngestWorker
from collector.metrics import InstrumentedStore, NocMetrics, StoreMetrics
from collector.retention import RetentionService
from collector.store.base import BatchMeta, Store, open_store
from pipelines import keys
from pipelines.config import require_private
from pipelines.envelope import Header
from pipelines.record import Record

log = logging.getLogger(__name__)


def _read_private(path: Path) -> bytes:
    require_private(str(path), path.stat().st_mode)
    return path.read_bytes()


def load_keys(cfg: CollectorConfig) -> tuple[dict[str, Any], dict[str, keys.CollectorPrivateKey]]:
    agent_keys = {a.agent_id: keys.load_verify_key(a.public_key.read_bytes()) for a in cfg.agents}
    private = [keys.load_collector_private_key(_read_private(p)) for p in cfg.private_keys]
    return agent_keys, {k.key_id: k for k in private}


class Collector:
    """One collector worker. Several may run against one store and one share group."""

    def __init__(self, cfg: CollectorConfig, *, registry: CollectorRegistry | None = None,
                 topic_filter: str | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or CollectorRegistry()
        raw_store = open_store(cfg.store_url)
        raw_store.migrate()
        self.store_metrics = StoreMetrics(self.registry, raw_store.backend)
        self.store: Store = InstrumentedStore(raw_store, self.store_metrics)  # type: ignore[assignment]
        self.noc = NocMetrics(self.registry)
        self.retention = RetentionService(
            self.store, policy_path=cfg.retention_policy, registry=self.registry,
            interval_s=cfg.purge_interval_s)
        agent_keys, collector_keys = load_keys(cfg)
        extra = {"topic_filter": topic_filter} if topic_filter else {}
        self.ingest = IngestWorker(
            broker_url=cfg.mqtt_url, sink=self._sink, quarantine=self._quarantine,
            agent_keys=agent_keys, collector_keys=collector_keys, registry=self.registry,
            agent_tenants={a.agent_id: a.tenant for a in cfg.agents},
            protocol=cfg.mqtt_protocol, shared_group=cfg.shared_group, client_id=cfg.client_id,
            ca_file=cfg.ca_file, cert_file=cfg.cert_file, key_file=cfg.key_file,
            max_batch_bytes=cfg.max_batch_bytes, replay_window_s=cfg.replay_window_s, **extra)
        self.metrics_port: int | None = None

    async def _sink(self, header: Header, records: list[Record]) -> bool:
        meta = BatchMeta(agent_id=header.agent_id, batch_id=header.batch_id, seq=header.seq,
                         tenant=header.tenant, created=header.created, received_at=time.time())
        tagged = self.retention.tag(records)
        stored = await asyncio.to_thread(self.store.write_batch, meta, tagged)
        if stored:
            self.noc.observe(records)
        return stored

    async def _quarantine(self, reason: str, topic: str, header: Header | None,
                          payload: bytes) -> None:
        await asyncio.to_thread(
            self.store.quarantine, reason, topic,
            header.agent_id if header else None, header.batch_id if header else None,
            len(payload), hashlib.sha256(payload).hexdigest())

    async def run(self, stop: asyncio.Event) -> None:
        host, port = self.cfg.metrics_listen
        server, _ = start_http_server(port, host, registry=self.registry)
        self.metrics_port = server.server_port
        log.info("collector metrics on /metrics", extra={"port": self.metrics_port})
        purge = asyncio.create_task(self.retention.run(stop), name="privtel-retention")
        try:
            async with self.ingest:
                await stop.wait()
        finally:
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
            server.shutdown()
            self.store.close()
