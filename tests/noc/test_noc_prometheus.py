"""End to end with a real Prometheus: two collector workers on one store and one
MQTT share group, a real agent polling a real snmpd, the shipped alert rules.

Proves: one series per device however many workers (`count(privtel_device_info)`
equals the devices, no duplicate `(tenant, device)`), interface counters with
no reset across a worker restart, and the silent-agent alert going pending once
the agent stops. Bounded: every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from peers.ports import free_udp_port
from peers.snmpd import run_snmpd

from agents import config as agent_config
from agents.runtime import Agent
from collector import config as collector_config
from collector.runtime import Collector
from privtel.demo.run import SimDevice, free_port, write_configs

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def unique_tenant(prefix: str) -> str:
    return f"{prefix}{os.getpid()}{int(time.time() * 1000) % 10_000_000}"


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def alerts(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5) as r:
        return json.loads(r.read())["data"]["alerts"]  # type: ignore[no-any-return]


async def until(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await asyncio.to_thread(pred)
        except OSError:
            last = None
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout}s (last: {last!r})")


def start_prometheus(tmp_path: Path, port: int, targets: list[int], rules: Path | None,
                     honor_labels: bool = False) -> subprocess.Popen[bytes]:
    (tmp_path / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)] if rules else [],
        "scrape_configs": [{"job_name": "privtel-collector", "honor_labels": honor_labels,
                            "static_configs": [
                                {"targets": [f"127.0.0.1:{p}" for p in targets]}]}]}))
    return subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_prometheus(prom: subprocess.Popen[bytes]) -> None:
    prom.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        prom.wait(10)
    if prom.poll() is None:
        prom.kill()
        prom.wait(10)


class Worker:
    def __init__(self, cfg: collector_config.CollectorConfig, tenant: str) -> None:
        self.cfg, self.tenant = cfg, tenant
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        c = Collector(self.cfg, topic_filter=f"privtel/v1/{self.tenant}/+/batches")
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(c.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)
            self.task = None


def collector_cfg(path: Path, port: int, worker: str, group: str,
                  naming: str = "privtel") -> collector_config.CollectorConfig:
    text = path.read_text()
    text = text.replace('store = "sqlite:///privtel.db"', 'store = "sqlite:///privtel.db"\n'
                        f'metrics_listen = "127.0.0.1:{port}"', 1)
    text = "\n".join(ln for ln in text.splitlines()
                     if not ln.startswith("metrics_listen = \"127.0.0.1:0\""))
    text = text.replace('client_id = "privtel-collector-', f'shared_group = "{group}"\n'
                        f'client_id = "privtel-collector-{worker}-')
    text += ("\n[metrics]\nsilence_factor = 3\ndefault_heartbeat_interval_s = 1\n"
             f'naming = "{naming}"\n')
    out = path.with_name(f"collector-{worker}.toml")
    out.write_text(text)
    os.chmod(out, 0o600)
    return collector_config.load(out)


async def test_two_workers_real_prometheus_counts_restart_and_silent_agent(
        tmp_path: Path, mosquitto: str) -> None:
    if not os.path.exists(PROMETHEUS):
        pytest.fail("Debian prometheus is not installed (apt-get install prometheus; .ci/run "
                    "does)")
    tenant = unique_tenant("noc")
    group = f"noc{os.urandom(3).hex()}"
    with run_snmpd(sys_name="noc-core") as peer:
        devices = [SimDevice(f"core-{i}", peer.port, peer.community) for i in range(3)]
        agent_path, collector_path = write_configs(
            tmp_path, broker_url=mosquitto, protocol="5", devices=devices, interval_s=1,
            metrics_port=0, tenant=tenant, agent_id=f"ag-{tenant}")
        text = agent_path.read_text().replace("batch_max_age_s = 1.0",
                                              "batch_max_age_s = 0.5\nheartbeat_interval_s = 1")
        agent_path.write_text(text)
        ports = [free_port(), free_port()]
        workers = [Worker(collector_cfg(collector_path, p, f"w{i}", group), tenant)
                   for i, p in enumerate(ports)]
        prom_port = free_port()
        rules = tmp_path / "rules.yml"
        shutil.copy(ROOT / "deploy" / "prometheus" / "privtel-alerts.yml", rules)
        for w in workers:
            w.start()
        agent = Agent(agent_config.load(agent_path))
        agent_stop = asyncio.Event()
        agent_task = asyncio.create_task(agent.run(agent_stop))
        prom = start_prometheus(tmp_path, prom_port, ports, rules)
        try:
            sel = f'{{tenant="{tenant}"}}'
            n = len(devices)

            def fleet() -> bool:
                got = query(prom_port, f"count(privtel_device_info{sel})")
                return bool(got) and got[0]["value"][1] == str(n)

            await until(fleet, 90, f"count(privtel_device_info) == {n}")
            per_device = query(prom_port, f"count by (device) (privtel_device_info{sel})")
            assert len(per_device) == n and all(r["value"][1] == "1" for r in per_device)
            by_worker = query(prom_port, f"count by (instance) (privtel_device_info{sel})")
            assert {r["metric"]["instance"] for r in by_worker} <= {
                f"127.0.0.1:{p}" for p in ports}
            dup = query(prom_port, f"count by (device, ifindex) "
                        f"(privtel_interface_in_octets_total{sel}) > 1")
            assert dup == []
            await until(lambda: query(prom_port, f'privtel_agent_up{sel} == 1'), 30,
                        "privtel_agent_up 1")

            # restart worker 0: same worker id, so the same devices come back on it
            await workers[0].close()
            await asyncio.sleep(3)
            workers[0].start()
            await asyncio.sleep(6)
            await until(fleet, 60, "fleet count after the restart")
            resets = query(prom_port, f"resets(privtel_interface_in_octets_total{sel}[1m]) > 0")
            assert resets == [], "a counter went backwards across the worker restart"
            after = query(prom_port, f"count by (device) (privtel_device_info{sel})")
            assert len(after) == n and all(r["value"][1] == "1" for r in after)

            # the agent stops: silent beyond 3 x 1 s, the alert goes pending, devices stay
            agent_stop.set()
            await asyncio.wait_for(agent_task, 30)

            def silent_pending() -> bool:
                return any(a["labels"].get("alertname") == "PrivtelAgentSilent"
                           and a["labels"].get("tenant") == tenant
                           and a["state"] in ("pending", "firing") for a in alerts(prom_port))

            await until(silent_pending, 60, "PrivtelAgentSilent pending")
            # every device is still there, down with reason agent_silent (no vanishing)
            await until(lambda: len(query(prom_port, f'privtel_device_poll_failures{{tenant='
                                          f'"{tenant}",reason="agent_silent"}}')) == n, 30,
                        "agent_silent on every device")
            assert len(query(prom_port, f"privtel_device_up{sel} == 0")) == n
            assert fleet()
        finally:
            stop_prometheus(prom)
            agent_stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(agent_task, 30)
            for w in workers:
                with contextlib.suppress(Exception):
                    await w.close()


async def test_snmp_exporter_naming_is_what_prometheus_stores(tmp_path: Path,
                                                              mosquitto: str) -> None:
    """if_mib names and labels as snmp_exporter's, `instance` the pseudonymous device
    (kept with honor_labels), an if_mib-style rate query answers; a listed device that
    does not answer is down with its reason."""
    if not os.path.exists(PROMETHEUS):
        pytest.fail("Debian prometheus is not installed")
    tenant = unique_tenant("nocx")
    with run_snmpd(sys_name="nocx-core") as peer:
        agent_path, collector_path = write_configs(
            tmp_path, broker_url=mosquitto, protocol="5",
            devices=[SimDevice("edge-1", peer.port, peer.community),
                     SimDevice("gone-1", free_udp_port(), peer.community)], interval_s=1,
            metrics_port=0, tenant=tenant, agent_id=f"ag-{tenant}")
        port, prom_port = free_port(), free_port()
        worker = Worker(collector_cfg(collector_path, port, "x0", f"nx{os.urandom(3).hex()}",
                                      naming="snmp_exporter"), tenant)
        worker.start()
        agent = Agent(agent_config.load(agent_path))
        agent_stop = asyncio.Event()
        agent_task = asyncio.create_task(agent.run(agent_stop))
        prom = start_prometheus(tmp_path, prom_port, [port], None, honor_labels=True)
        try:
            sel = f'{{tenant="{tenant}"}}'
            got = await until(lambda: query(prom_port, f"ifHCInOctets{sel}")
                              or query(prom_port, f"ifInOctets{sel}"), 60, "if_mib octets")
            labels = got[0]["metric"]
            assert labels["instance"].startswith("tk-") and "edge-1" not in labels["instance"]
            assert {"ifIndex", "ifName", "ifDescr", "ifType"} <= set(labels)
            for name in ("ifOperStatus", "ifAdminStatus", "sysUpTime", "ifInErrors"):
                assert await until(lambda n=name: query(prom_port, f"{n}{sel}"), 30, name)
            await until(lambda: query(prom_port, f"rate(ifInErrors{sel}[10s])"), 30,
                        "a rate over an if_mib counter")
            assert not query(prom_port, f"privtel_interface_in_octets_total{sel}")
            # the device the agent lists but cannot reach: down with its reason, listed
            down = await until(lambda: query(prom_port, f'privtel_device_poll_failures{{'
                                             f'tenant="{tenant}",reason="timeout"}}'), 60,
                               "the unreachable device down with reason timeout")
            dead = down[0]["metric"]["device"]
            assert query(prom_port, f'privtel_device_up{{device="{dead}"}} == 0')
            assert len(query(prom_port, f"privtel_device_info{sel}")) == 2
        finally:
            stop_prometheus(prom)
            agent_stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(agent_task, 30)
            await worker.close()
