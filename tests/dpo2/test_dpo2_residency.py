"""Residency on the agent side: the agent ships to the broker of a region the
tenant allows (its own region first), refuses a configuration with none, and
really sends there (real Mosquitto; the other route is a dead port). `privtel
transfers` lists every cross-border flow the configuration allows with its
safeguard, and fails while one has none."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from peers.ports import free_port

from agents import config as agent_config
from agents.runtime import Agent
from collector import config as collector_config
from collector.runtime import Collector
from pipelines.config import ConfigError
from pipelines.record import Kind, Record
from privtel.cli import main
from privtel.demo.run import running, write_configs


def configure(tmp_path: Path, mosquitto: str, *, region: str | None, allowed: list[str],
              routes: list[tuple[str, str]], tenant: str = "acme") -> tuple[Path, Path]:
    agent, coll = write_configs(tmp_path, broker_url=mosquitto, protocol="5", devices=[],
                                interval_s=60, metrics_port=0, tenant=tenant,
                                agent_id="res-agent")
    text = re.sub(r'(\[mqtt\]\n)url = "[^"]*"\n', r"\1", agent.read_text(), count=1)
    text += "".join(f'\n[[mqtt.routes]]\nregion = "{r}"\nurl = "{u}"\n' for r, u in routes)
    text += "\n[residency]\n" + (f'region = "{region}"\n' if region else "")
    text += f"allowed_regions = {orjson.dumps(allowed).decode()}\n"
    agent.write_text(text)
    return agent, coll


def test_route_choice(tmp_path: Path) -> None:
    za, ng = "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:2"
    path, _ = configure(tmp_path, "x", region="ng", allowed=["ng", "za"],
                        routes=[("za", za), ("ng", ng)])
    cfg = agent_config.load(path)
    assert cfg.mqtt.url == ng and cfg.residency.route is not None
    path, _ = configure(tmp_path / "b", "x", region="ng", allowed=["za"],
                        routes=[("ng", ng), ("za", za)])
    assert agent_config.load(path).mqtt.url == za
    path, _ = configure(tmp_path / "c", "x", region="ng", allowed=["ke"],
                        routes=[("ng", ng), ("za", za)])
    with pytest.raises(ConfigError, match="no route goes to a region the tenant allows"):
        agent_config.load(path)
    path, _ = configure(tmp_path / "d", "x", region="ng", allowed=[], routes=[("ng", ng)])
    with pytest.raises(ConfigError, match="allowed_regions"):
        agent_config.load(path)


async def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_agent_ships_through_the_allowed_route(tmp_path: Path, mosquitto: str) -> None:
    tenant = f"res{os.urandom(4).hex()}"
    dead = f"mqtt://127.0.0.1:{free_port()}"
    agent_path, coll_path = configure(tmp_path, mosquitto, region="ke", allowed=["za"],
                                      routes=[("ke", dead), ("za", mosquitto)], tenant=tenant)
    acfg, ccfg = agent_config.load(agent_path), collector_config.load(coll_path)
    assert acfg.mqtt.url == mosquitto
    collector = Collector(ccfg, topic_filter=f"privtel/v1/{tenant}/+/batches")
    agent = Agent(acfg)
    started = asyncio.Event()
    on_started = agent._started
    agent._started = lambda: (on_started(), started.set())  # type: ignore[method-assign]
    async with running(collector, agent):
        await asyncio.wait_for(started.wait(), 20)  # every component is up
        await agent._emit([Record(kind=Kind.LOG, tenant=tenant, site=acfg.site, device="d",
                                  name="syslog", fields={"message": f"line {i}"})
                           for i in range(3)])
        await wait_for(lambda: collector.store.count_records(tenant=tenant, name="syslog") == 3,
                       30, "the records")


def test_transfers_register(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agent, coll = configure(tmp_path, "mqtt://127.0.0.1:1", region="ng", allowed=["ng", "za"],
                            routes=[("ng", "mqtt://127.0.0.1:1"), ("za", "mqtt://127.0.0.1:2"),
                                    ("eu", "mqtt://127.0.0.1:3")])
    text = coll.read_text().replace("[collector]\n", '[collector]\nregion = "ng"\n', 1)
    base = text + ('\n[tenants.globex]\nhome = "ke"\nregions = ["ng", "ke"]\n'
                   '[[safeguards]]\nfrom = "ke"\nto = "ng"\n'
                   'basis = "contract clause 14.2 (KE DPA 2019 s.48(a))"\n')
    coll.write_text(base)
    args = ["transfers", "--collector-config", str(coll), "--agent-config", str(agent),
            "--json"]
    capsys.readouterr()
    assert main(args) == 1  # ng -> za has no safeguard yet
    out = orjson.loads(capsys.readouterr().out)
    assert [(f["tenant"], f["from"], f["to"], f["safeguard"]) for f in out] == [
        ("acme", "ng", "za", None),
        ("globex", "ke", "ng", "contract clause 14.2 (KE DPA 2019 s.48(a))")]
    assert "(failover)" in out[0]["via"][0]  # eu is not allowed: no flow there
    coll.write_text(base + '[[safeguards]]\nfrom = "ng"\nto = "za"\n'
                    'basis = "adequacy: NDPC whitelist, ZA (POPIA)"\n')
    assert main(args) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out[0]["safeguard"] == "adequacy: NDPC whitelist, ZA (POPIA)"
