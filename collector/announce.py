"""Announce the collector's current public key as a retained MQTT message.

Operators (and tooling) read it to distribute the key during a rotation; agents
still take a new key only from their own config, because a key learnt from the
network would be only as trustworthy as the broker.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import aiomqtt

from collector.config import CollectorConfig
from collector.ingest import tls_context
from pipelines.keys import ANNOUNCE_TOPIC, CollectorPublicKey, key_announcement

log = logging.getLogger(__name__)


async def announce_public_key(cfg: CollectorConfig, key: CollectorPublicKey) -> bool:
    """Publish once (QoS 1, retained); a failure is logged, never fatal to ingest."""
    u = urlsplit(cfg.mqtt_url)
    tls = u.scheme == "mqtts"
    try:
        async with asyncio.timeout(15), aiomqtt.Client(
                u.hostname or "127.0.0.1", u.port or (8883 if tls else 1883),
                identifier=f"{cfg.client_id or 'privtel-collector'}-announce",
                protocol=(aiomqtt.ProtocolVersion.V5 if cfg.mqtt_protocol == "5"
                          else aiomqtt.ProtocolVersion.V311),
                tls_context=tls_context(cfg.ca_file, cfg.cert_file, cfg.key_file) if tls else None,
                timeout=10) as client:
            await client.publish(ANNOUNCE_TOPIC, key_announcement(key), qos=1, retain=True)
    except (aiomqtt.MqttError, OSError, TimeoutError) as e:
        log.warning("could not announce the collector public key (%s)", type(e).__name__)
        return False
    log.info("announced the current collector public key", extra={"key_id": key.key_id})
    return True
