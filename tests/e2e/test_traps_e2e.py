"""A trap sent to the running agent is stored as an event, its addresses pseudonymised."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
from e2e_kit import unique_tenant, wait_for, write_private
from peers.ports import free_udp_port

from agents import config as agent_config
from agents.runtime import Agent
from agents.tenantkeys import load_pseudonymiser
from collector import config as collector_config
from collector.runtime import Collector
from privtel.demo.run import running, write_configs

AGENT_ADDR = "10.20.30.40"


async def test_trap_reaches_the_store_pseudonymised(tmp_path: Path, mosquitto: str) -> None:
    tenant = unique_tenant("trap")
    agent_path, collector_path = write_configs(
        tmp_path, broker_url=mosquitto, protocol="5", devices=[], interval_s=60,
        metrics_port=0, tenant=tenant, agent_id="trap-agent")
    port = free_udp_port()
    write_private(agent_path, agent_path.read_bytes() + (
        f'\n[traps]\nlisten = "127.0.0.1"\nport = {port}\ncommunities = ["traps-c"]\n'
    ).encode())
    acfg = agent_config.load(agent_path)
    collector = Collector(collector_config.load(collector_path),
                          topic_filter=f"privtel/v1/{tenant}/+/batches")
    async with running(collector, Agent(acfg)):
        await asyncio.sleep(1.0)
        proc = await asyncio.create_subprocess_exec(
            "snmptrap", "-M", "/dev/null", "-v2c", "-c", "traps-c", f"udp:127.0.0.1:{port}",
            "12345", "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.7", "i", "7",
            "1.3.6.1.6.3.18.1.3.0", "a", AGENT_ADDR)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        await wait_for(lambda: collector.store.count_records(name="snmp.trap") >= 1, 30,
                       "trap stored")
    db_path = collector.cfg.store_url.removeprefix("sqlite:///")
    with sqlite3.connect(db_path) as db:
        (fields,) = db.execute("select fields from records where name = 'snmp.trap'").fetchone()
    f = orjson.loads(fields)
    assert f["trap"] == "linkDown"
    assert AGENT_ADDR not in fields and "127.0.0.1" not in fields
    assert load_pseudonymiser(acfg).ip(AGENT_ADDR) in f.values()
    assert AGENT_ADDR.encode() not in Path(db_path).read_bytes()
