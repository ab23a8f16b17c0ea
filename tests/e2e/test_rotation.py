"""Collector key rotation without downtime: the collector takes a second key, agents move
to it on SIGHUP-style reload, the old key is retired, and no batch is lost or refused."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from peers.snmpd import run_snmpd

from agents import config as agent_config
from agents.runtime import Agent
from collector import config as collector_config
from collector.runtime import Collector
from pipelines import keys
from privtel.demo.run import SimDevice, write_configs


def _rejected(collector: Collector, reason: str) -> float:
    value = collector.registry.get_sample_value("privtel_batches_rejected_total",
                                                {"reason": reason})
    return value or 0.0


async def _grows(collector: Collector, by: int, timeout: float = 30) -> None:
    start = await asyncio.to_thread(collector.store.count_batches)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(collector.store.count_batches) >= start + by:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"fewer than {by} new batches stored in {timeout}s")


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


async def test_collector_key_rotation_loses_nothing(tmp_path: Path, mosquitto: str) -> None:
    tenant = f"rot{os.getpid()}{int(time.time()) % 100000}"
    with run_snmpd(sys_name="rot-core") as peer:
        agent_path, collector_path = write_configs(
            tmp_path, broker_url=mosquitto, protocol="5",
            devices=[SimDevice("core-1", peer.port, peer.community)], interval_s=1,
            metrics_port=0, tenant=tenant, agent_id="rot-agent")
        collector = Collector(collector_config.load(collector_path),
                              topic_filter=f"privtel/v1/{tenant}/+/batches")
        agent = Agent(agent_config.load(agent_path))
        cstop, astop = asyncio.Event(), asyncio.Event()
        ctask = asyncio.create_task(collector.run(cstop))
        await asyncio.wait_for(collector.ingest.subscribed.wait(), 15)
        atask = asyncio.create_task(agent.run(astop))
        try:
            await _grows(collector, 2)
            old_key = tmp_path / "keys" / "collector.key"
            new = keys.generate_collector_key("x25519")
            _write(tmp_path / "keys" / "collector-2.key", new.pem)
            text = collector_path.read_text()
            _write(collector_path, text.replace(
                f'private_keys = ["{old_key}"]',
                f'private_keys = ["{old_key}", "{tmp_path / "keys" / "collector-2.key"}"]'
            ).encode())
            assert collector.reload()
            _write(tmp_path / "keys" / "collector.pub", new.public.pem)
            assert agent.reload()
            await _grows(collector, 3)
            _write(collector_path, collector_path.read_text().replace(
                f'"{old_key}", ', "").encode())
            assert collector.reload()
            await _grows(collector, 3)
        finally:
            astop.set()
            await atask
            await asyncio.sleep(0.5)
            cstop.set()
            await ctask
    assert _rejected(collector, "unknown_key") == 0
    assert _rejected(collector, "decrypt_failed") == 0


async def test_bad_reload_keeps_running_config(tmp_path: Path, mosquitto: str) -> None:
    tenant = f"rlb{os.getpid()}{int(time.time()) % 100000}"
    agent_path, collector_path = write_configs(
        tmp_path, broker_url=mosquitto, protocol="5",
        devices=[SimDevice("core-1", 1, "public")], interval_s=60, metrics_port=0,
        tenant=tenant, agent_id="rlb-agent")
    collector = Collector(collector_config.load(collector_path),
                          topic_filter=f"privtel/v1/{tenant}/+/batches")
    agent = Agent(agent_config.load(agent_path))
    _write(collector_path, b"[collector\n")
    _write(agent_path, b"[agent]\nid = 1\n")
    assert not collector.reload()
    assert not agent.reload()
    collector.store.close()
