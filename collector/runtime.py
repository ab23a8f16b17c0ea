"""The collector process: ingest -> retention tag -> store -> outputs, until SIGTERM.

The store call runs in a worker thread (`StoreSink`) so a slow disk never stalls
the broker keepalive; the ingest worker acknowledges a batch only after it returns.
Committed batches go to the post-commit outputs (`collector.outputs`; the NOC
exporter first). Long-lived parts are `pipelines.lifecycle` components started
in order and closed in reverse by `run_components`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from collector import recheck
from collector.admission import Admission
from collector.announce import KeyAnnouncer
from collector.audit import AuditLog, read_key
from collector.config import CollectorConfig
from collector.config import load as load_config
from collector.ingest import DEFAULT_TOPIC, IngestWorker
from collector.metrics import InstrumentedStore, StoreMetrics, StoreMetricsRefresh
from collector.outputs import build_outputs, noc_renderer
from collector.parking import ParkingLot
from collector.receipts import ReceiptPublisher, load_receipt_key
from collector.retention import RetentionService
from collector.sequence import StoreSequences
from collector.store import open_db
from collector.store.base import Store, open_store
from collector.store.sink import StoreSink
from pipelines import keys
from pipelines.config import ConfigError
from pipelines.lifecycle import Component, run_components
from plumbing.files import read_private
from plumbing.metrics_http import MetricsServer
from plumbing.transport import BatchSender

log = logging.getLogger(__name__)
OUTPUTS = ("noc",)


def load_keys(cfg: CollectorConfig) -> tuple[dict[str, Any], dict[str, keys.CollectorPrivateKey]]:
    """Known agents' keys, and the collector's private keys by id in config order: the
    last one listed is the current key, the one announced and given to new agents."""
    agent_keys = {a.agent_id: keys.load_verify_key(a.public_key.read_bytes()) for a in cfg.agents}
    phrase = (None if cfg.key_passphrase_file is None
              else keys.parse_passphrase(read_private(cfg.key_passphrase_file)))
    private = []
    for p in cfg.private_keys:
        try:
            private.append(keys.load_collector_private_key(read_private(p), phrase))
        except keys.KeyFormatError as e:
            raise ConfigError(cfg.file, "keys.private_keys", f"{p}: {e}") from None
    return agent_keys, {k.key_id: k for k in private}


def current_key(collector_keys: dict[str, keys.CollectorPrivateKey]) -> keys.CollectorPublicKey:
    return list(collector_keys.values())[-1].public


def receipt_publisher(cfg: CollectorConfig, registry: CollectorRegistry,
                      sender: Callable[[], BatchSender | None]) -> ReceiptPublisher | None:
    """End-to-end receipts through `sender` (the ingest connection), when `[keys]
    receipt_key` is set."""
    if cfg.receipt_key is None:
        return None
    try:
        key = load_receipt_key(cfg.receipt_key, cfg.key_passphrase_file)
    except keys.KeyFormatError as e:
        raise ConfigError(cfg.file, "keys.receipt_key", f"{cfg.receipt_key}: {e}") from None
    return ReceiptPublisher(sender, key, registry=registry)


class Collector:
    """One collector worker. Several may run against one store and one share group."""

    def __init__(self, cfg: CollectorConfig, *, registry: CollectorRegistry | None = None,
                 topic_filter: str | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or CollectorRegistry()
        recheck.COUNTS.register(self.registry)
        raw_store = open_store(cfg.store_url)
        raw_store.migrate()
        self.store_metrics = StoreMetrics(self.registry, raw_store.backend)
        self.store: Store = InstrumentedStore(raw_store, self.store_metrics)
        self.outputs = build_outputs(OUTPUTS, self.registry, cfg=cfg,
                                     configured={"remote_write": cfg.remote_write})
        # the query-side connection: audit chain, parked batches, the sequence window
        self.audit_db = open_db(cfg.store_url)
        self.parking = ParkingLot(self.audit_db)
        self.retention = RetentionService(
            self.store, policy_path=cfg.retention_policy, registry=self.registry,
            audit=AuditLog(self.audit_db, read_key(cfg.audit_key_file)),
            interval_s=cfg.purge_interval_s, jurisdictions=cfg.jurisdictions(),
            parking=self.parking)
        self.sink = StoreSink(self.store, self.retention.tag, self.outputs)
        agent_keys, collector_keys = load_keys(cfg)
        self.current_key = current_key(collector_keys)
        self.announcer = KeyAnnouncer(self.current_key, lambda: self.ingest.transport.sender())
        self.receipts = receipt_publisher(cfg, self.registry,
                                          lambda: self.ingest.transport.sender())
        self.ingest = IngestWorker(
            broker_url=cfg.mqtt_url, sink=self.sink.sink, quarantine=self.sink.quarantine,
            agent_keys=agent_keys, collector_keys=collector_keys, registry=self.registry,
            admission=Admission.from_config(cfg), park=self.parking.park_async,
            sequences=StoreSequences(self.audit_db, max_jump=cfg.max_sequence_jump),
            protocol=cfg.mqtt_protocol, shared_group=cfg.shared_group, client_id=cfg.client_id,
            ca_file=cfg.ca_file, cert_file=cfg.cert_file, key_file=cfg.key_file,
            max_batch_bytes=cfg.max_batch_bytes, replay_window_s=cfg.replay_window_s,
            topic_filter=topic_filter or DEFAULT_TOPIC,
            on_outcome=None if self.receipts is None else self.receipts.offer)
        self.metrics_port: int | None = None

    def reload(self) -> bool:
        """SIGHUP: retention policy, known agents and collector keys (rotation) from disk;
        a bad file is logged and the running set kept."""
        self.retention.reload()
        try:
            cfg = load_config(self.cfg.file)
            agent_keys, collector_keys = load_keys(cfg)
        except (ConfigError, OSError, ValueError) as e:
            log.error("config reload failed, keeping the running keys and agents: %s", e)
            return False
        self.ingest.update_keys(agent_keys=agent_keys, collector_keys=collector_keys,
                                admission=Admission.from_config(cfg))
        self._announce(cfg, current_key(collector_keys))
        log.info("config reloaded", extra={"agents": len(cfg.agents),
                                           "collector_keys": sorted(collector_keys)})
        return True

    def _announce(self, cfg: CollectorConfig, key: keys.CollectorPublicKey) -> None:
        self.current_key = key
        self.announcer.announce(key)

    def _ready(self) -> bool:
        try:
            self.store.ping()
        except Exception:
            return False
        return self.ingest.subscribed.is_set()

    def components(self) -> list[Component]:
        """In start order; `run` closes them in reverse (ingest first, outputs drain after)."""
        host, port = self.cfg.metrics_listen
        self.metrics_server = MetricsServer(self.registry, host, port, ready=self._ready,
                                            extra=noc_renderer(self.outputs))
        receipts = [] if self.receipts is None else [self.receipts]
        return [self.metrics_server, self.outputs, self.retention,
                StoreMetricsRefresh(self.store_metrics, self.store), *receipts, self.ingest,
                self.announcer]

    def _started(self) -> None:
        self.metrics_port = self.metrics_server.port
        log.info("collector serving /metrics, /healthz, /readyz", extra={"port": self.metrics_port})

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`, or until a component fails (raised after everything closed)."""
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await run_components(self.components(), stop, on_started=self._started)
        finally:
            self.store.close()
            self.audit_db.close()
