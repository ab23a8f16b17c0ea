"""The collector announces its current public key (retained) and again after a rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest
from e2e_kit import unique_tenant, write_private

from collector import config as collector_config
from collector.runtime import Collector
from pipelines import keys
from pipelines.keys import ANNOUNCE_TOPIC, KeyFormatError, parse_key_announcement
from privtel.demo.run import running, write_configs


async def _announced() -> keys.CollectorPublicKey:
    async with aiomqtt.Client("127.0.0.1", 1883, timeout=5) as c:
        await c.subscribe(ANNOUNCE_TOPIC, qos=1)
        message = await asyncio.wait_for(anext(aiter(c.messages)), 10)
        assert message.retain
        return parse_key_announcement(bytes(message.payload))  # type: ignore[arg-type]


async def _until_announced(key_id: str) -> None:
    for _ in range(50):
        if (await _announced()).key_id == key_id:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"key {key_id} was not announced")


async def test_current_key_is_announced_and_follows_rotation(tmp_path: Path,
                                                            mosquitto: str) -> None:
    tenant = unique_tenant("ann")
    _, collector_path = write_configs(
        tmp_path, broker_url=mosquitto, protocol="5", devices=[], interval_s=60,
        metrics_port=0, tenant=tenant, agent_id="ann-agent")
    collector = Collector(collector_config.load(collector_path),
                          topic_filter=f"privtel/v1/{tenant}/+/batches")
    first = collector.current_key
    async with running(collector):
        await _until_announced(first.key_id)
        new = keys.generate_collector_key("x25519")
        write_private(tmp_path / "keys" / "collector-2.key", new.pem)
        old = tmp_path / "keys" / "collector.key"
        write_private(collector_path, collector_path.read_text().replace(
            f'private_keys = ["{old}"]',
            f'private_keys = ["{old}", "{tmp_path / "keys" / "collector-2.key"}"]').encode())
        assert collector.reload()
        await _until_announced(new.key_id)
    assert (await _announced()).pem == new.public.pem


def test_announcement_must_match_the_key_it_carries() -> None:
    a, b = keys.generate_collector_key(), keys.generate_collector_key()
    forged = keys.key_announcement(a.public).replace(a.key_id.encode(), b.key_id.encode())
    with pytest.raises(KeyFormatError, match="does not match"):
        parse_key_announcement(forged)
    with pytest.raises(KeyFormatError, match="not a privtel key announcement"):
        parse_key_announcement(b"{}")
    assert parse_key_announcement(keys.key_announcement(a.public)).key_id == a.key_id
