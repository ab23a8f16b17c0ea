"""Announce the collector's current public key as a retained message on the broker.

Operators (and tooling) read it to distribute the key during a rotation; agents
still take a new key only from their own config, because a key learnt from the
network would be only as trustworthy as the broker.

The announcement goes out on the ingest connection (`ReceiveTransport.sender()`),
as receipts do: the shipped Mosquitto config makes the certificate identity the
client id, so a second connection under the collector's certificate would take
over the ingest session and drop the batches queued for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pipelines.keys import ANNOUNCE_TOPIC, CollectorPublicKey, key_announcement
from pipelines.lifecycle import Lifecycle
from plumbing.transport import BatchSender, TransportError

log = logging.getLogger(__name__)

WAIT_FOR_CONNECTION_S = 60.0


async def announce_public_key(sender: Callable[[], BatchSender | None],
                              key: CollectorPublicKey,
                              wait_s: float = WAIT_FOR_CONNECTION_S) -> bool:
    """Publish once (QoS 1, retained) as soon as the ingest connection is up (within
    `wait_s`); a failure is logged, never fatal to ingest."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        s = sender()
        if s is not None:
            try:
                async with asyncio.timeout(15):
                    await s.send(ANNOUNCE_TOPIC, key_announcement(key), retain=True)
                break
            except (TransportError, OSError, TimeoutError) as e:
                if loop.time() >= deadline:
                    log.warning("could not announce the collector public key (%s)",
                                type(e).__name__)
                    return False
        elif loop.time() >= deadline:
            log.warning("could not announce the collector public key (not connected)")
            return False
        await asyncio.sleep(0.2)
    log.info("announced the current collector public key", extra={"key_id": key.key_id})
    return True


class KeyAnnouncer(Lifecycle):
    """Announces the current key on `start` and again on each `announce` (a rotation
    on reload); an announcement still in flight at `close` is cancelled. Before
    `start`, `announce` only records the key to announce at start."""

    def __init__(self, key: CollectorPublicKey,
                 sender: Callable[[], BatchSender | None]) -> None:
        self.key, self._sender = key, sender
        self._tasks: set[asyncio.Task[bool]] = set()

    def announce(self, key: CollectorPublicKey) -> None:
        self.key = key
        if self.started:
            task = asyncio.get_running_loop().create_task(announce_public_key(self._sender, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self) -> None:
        self.announce(self.key)

    async def _close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
