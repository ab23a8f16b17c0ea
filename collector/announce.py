"""Announce the collector's current public key as a retained message on the broker.

Operators (and tooling) read it to distribute the key during a rotation; agents
still take a new key only from their own config, because a key learnt from the
network would be only as trustworthy as the broker.
"""

from __future__ import annotations

import asyncio
import logging

from collector.config import CollectorConfig
from pipelines.keys import ANNOUNCE_TOPIC, CollectorPublicKey, key_announcement
from pipelines.lifecycle import Lifecycle
from plumbing.transport import SenderOptions, TlsFiles, TransportError, open_sender

log = logging.getLogger(__name__)


async def announce_public_key(cfg: CollectorConfig, key: CollectorPublicKey) -> bool:
    """Publish once (QoS 1, retained); a failure is logged, never fatal to ingest."""
    try:
        transport = open_sender(cfg.mqtt_url, SenderOptions(
            client_id=f"{cfg.client_id or 'privtel-collector'}-announce",
            protocol=cfg.mqtt_protocol, timeout_s=10,
            tls=TlsFiles(cfg.ca_file, cfg.cert_file, cfg.key_file)))
        async with asyncio.timeout(15), transport.session() as sender:
            await sender.send(ANNOUNCE_TOPIC, key_announcement(key), retain=True)
    except (TransportError, OSError, TimeoutError, ValueError) as e:
        log.warning("could not announce the collector public key (%s)", type(e).__name__)
        return False
    log.info("announced the current collector public key", extra={"key_id": key.key_id})
    return True


class KeyAnnouncer(Lifecycle):
    """Announces the current key on `start` and again on each `announce` (a rotation
    on reload); an announcement still in flight at `close` is cancelled. Before
    `start`, `announce` only records the key to announce at start."""

    def __init__(self, cfg: CollectorConfig, key: CollectorPublicKey) -> None:
        self.cfg, self.key = cfg, key
        self._tasks: set[asyncio.Task[bool]] = set()

    def announce(self, cfg: CollectorConfig, key: CollectorPublicKey) -> None:
        self.cfg, self.key = cfg, key
        if self.started:
            task = asyncio.get_running_loop().create_task(announce_public_key(cfg, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self) -> None:
        self.announce(self.cfg, self.key)

    async def _close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
