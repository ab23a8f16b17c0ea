"""One poll of a real snmpd reaches the store and /metrics through the real Mosquitto,
and nothing on the wire or in the store holds a raw address of the device."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiomqtt
import orjson
from e2e_kit import unique_tenant, wait_for
from peers.snmpd import run_snmpd

from agents import config as agent_config
from agents.runtime import Agent
from agents.tenantkeys import load_pseudonymiser
from collector import config as collector_config
from collector.runtime import Collector
from privtel.demo.run import SimDevice, running, write_configs

RAW = ("127.0.0.1", "10.20.30.40", "2001:db8:77::5")


def _interfaces_seen_by_snmpbulkwalk(peer) -> int:  # type: ignore[no-untyped-def]
    out = peer.cli("snmpbulkwalk", "-Oq", "1.3.6.1.2.1.2.2.1.2")
    return sum(1 for line in out.splitlines() if line.strip())


async def test_poll_to_store_and_metrics(tmp_path: Path, mosquitto: str) -> None:
    tenant = unique_tenant("e2e")
    descr = "edge router mgmt 10.20.30.40 peer 2001:db8:77::5"
    with run_snmpd(sys_name="e2e-core-1", extra_config=f'sysDescr "{descr}"') as peer:
        agent_path, collector_path = write_configs(
            tmp_path, broker_url=mosquitto, protocol="5",
            devices=[SimDevice("core-1", peer.port, peer.community)], interval_s=2,
            metrics_port=0, tenant=tenant, agent_id="e2e-agent")
        acfg, ccfg = agent_config.load(agent_path), collector_config.load(collector_path)
        collector = Collector(ccfg, topic_filter=f"privtel/v1/{tenant}/+/batches")
        agent = Agent(acfg)
        pseudo = load_pseudonymiser(acfg)
        device_token = pseudo.device_token("core-1")

        payloads: list[bytes] = []

        async def capture(ready: asyncio.Event) -> None:
            async with aiomqtt.Client("127.0.0.1", 1883) as c:
                await c.subscribe(f"privtel/v1/{tenant}/#", qos=1)
                ready.set()
                async for m in c.messages:
                    payloads.append(bytes(m.payload))  # type: ignore[arg-type]

        ready = asyncio.Event()
        sniffer = asyncio.create_task(capture(ready))
        await asyncio.wait_for(ready.wait(), 10)
        async with running(collector, agent):
            await wait_for(lambda: collector.store.count_records(name="snmp.system") >= 1, 60)
            await wait_for(lambda: collector.store.count_records(name="if") >= 1, 30)
            sys_name = peer.snmpget("1.3.6.1.2.1.1.5.0")["1.3.6.1.2.1.1.5.0"]
            ticks = int(peer.cli("snmpget", "-Oqvt", "1.3.6.1.2.1.1.3.0").strip())
            if_count = _interfaces_seen_by_snmpbulkwalk(peer)
            base = f"http://127.0.0.1:{collector.metrics_port}"
            with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
                metrics = resp.read().decode()
            for probe in ("healthz", "readyz"):
                with urllib.request.urlopen(f"{base}/{probe}", timeout=5) as resp:
                    assert resp.status == 200
        sniffer.cancel()

    db = sqlite3.connect(ccfg.store_url.removeprefix("sqlite:///"))
    rows = db.execute("select device, name, fields from records").fetchall()
    system = [r for r in rows if r[1] == "snmp.system"]
    assert system and all(r[0] == device_token for r in rows)
    fields = orjson.loads(system[-1][2])
    assert fields["sys_name"] == pseudo.token(sys_name)
    assert fields["sys_descr"] != descr and "edge router mgmt" in fields["sys_descr"]
    assert abs(fields["uptime_s"] - ticks / 100) < 30

    if_indexes = {orjson.loads(r[2])["if_index"] for r in rows if r[1] == "if"}
    assert len(if_indexes) == if_count
    up_line = next(line for line in metrics.splitlines()
                   if line.startswith("privtel_device_up{") and device_token in line)
    assert up_line.endswith(" 1.0")
    assert any(line.startswith("privtel_interface_in_octets_total{") and device_token in line
               for line in metrics.splitlines())

    blob = Path(ccfg.store_url.removeprefix("sqlite:///")).read_bytes()
    wal = Path(str(ccfg.store_url.removeprefix("sqlite:///")) + "-wal")
    blob += wal.read_bytes() if wal.exists() else b""
    listed = tmp_path / "raw-addresses.txt"
    listed.write_text("\n".join(RAW) + "\n")
    scan = subprocess.run(
        [sys.executable, "-m", "privtel", "scan-leaks", "--addresses", str(listed),
         ccfg.store_url.removeprefix("sqlite:///")], capture_output=True, text=True, timeout=60,
        check=False)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert payloads
    for raw in RAW:
        assert raw.encode() not in blob, f"raw address {raw} in the store"
        assert all(raw.encode() not in p for p in payloads), f"raw address {raw} on the wire"
