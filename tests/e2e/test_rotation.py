"""Collector key rotation without downtime: the collector takes a second key, agents move
to it on SIGHUP-style reload, the old key is retired, and no batch is lost or refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

from e2e_kit import unique_tenant, wait_for, write_private
from peers.snmpd import run_snmpd

from agents import config as agent_config
from agents.runtime import Agent
from collector import config as collector_config
from collector.runtime import Collector
from pipelines import keys
from privtel.demo.run import SimDevice, running, write_configs


def _rejected(collector: Collector, reason: str) -> float:
    value = collector.registry.get_sample_value("privtel_batches_rejected_total",
                                                {"reason": reason})
    return value or 0.0


async def _grows(collector: Collector, by: int, timeout: float = 30) -> None:
    start = await asyncio.to_thread(collector.store.count_batches)
    await wait_for(lambda: collector.store.count_batches() >= start + by, timeout,
                   f"{by} new batches stored")


async def test_collector_key_rotation_loses_nothing(tmp_path: Path, mosquitto: str) -> None:
    tenant = unique_tenant("rot")
    with run_snmpd(sys_name="rot-core") as peer:
        agent_path, collector_path = write_configs(
            tmp_path, broker_url=mosquitto, protocol="5",
            devices=[SimDevice("core-1", peer.port, peer.community)], interval_s=1,
            metrics_port=0, tenant=tenant, agent_id="rot-agent")
        collector = Collector(collector_config.load(collector_path),
                              topic_filter=f"privtel/v1/{tenant}/+/batches")
        agent = Agent(agent_config.load(agent_path))
        async with running(collector, agent):
            await _grows(collector, 2)
            old_key = tmp_path / "keys" / "collector.key"
            new = keys.generate_collector_key("x25519")
            write_private(tmp_path / "keys" / "collector-2.key", new.pem)
            text = collector_path.read_text()
            write_private(collector_path, text.replace(
                f'private_keys = ["{old_key}"]',
                f'private_keys = ["{old_key}", "{tmp_path / "keys" / "collector-2.key"}"]'
            ).encode())
            assert collector.reload()
            write_private(tmp_path / "keys" / "collector.pub", new.public.pem)
            assert agent.reload()
            await _grows(collector, 3)
            write_private(collector_path, collector_path.read_text().replace(
                f'"{old_key}", ', "").encode())
            assert collector.reload()
            await _grows(collector, 3)
    assert _rejected(collector, "unknown_key") == 0
    assert _rejected(collector, "decrypt_failed") == 0


async def test_bad_reload_keeps_running_config(tmp_path: Path, mosquitto: str) -> None:
    tenant = unique_tenant("rlb")
    agent_path, collector_path = write_configs(
        tmp_path, broker_url=mosquitto, protocol="5",
        devices=[SimDevice("core-1", 1, "public")], interval_s=60, metrics_port=0,
        tenant=tenant, agent_id="rlb-agent")
    collector = Collector(collector_config.load(collector_path),
                          topic_filter=f"privtel/v1/{tenant}/+/batches")
    agent = Agent(agent_config.load(agent_path))
    write_private(collector_path, b"[collector\n")
    write_private(agent_path, b"[agent]\nid = 1\n")
    assert not collector.reload()
    assert not agent.reload()
    collector.store.close()
