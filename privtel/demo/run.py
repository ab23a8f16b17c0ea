"""The newcomer's first run: everything on 127.0.0.1, on embedded defaults.

An embedded MQTT broker (unless --broker names one), snmpsim serving real
device recordings, a collector storing into SQLite and an agent polling the
simulated devices; progress every few seconds, a summary at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from agents import config as agent_config
from agents.runtime import Agent
from collector import config as collector_config
from collector.runtime import Collector
from plumbing.files import write_private
from privtel.commands.keys import key_files, write_key_files
from privtel.demo.broker import EmbeddedBroker
from privtel.demo.snmpsim import RECORDINGS, SnmpSim
from privtel.sim.demo import start_demo_ssh

TENANT, AGENT_ID = "demo", "demo-agent"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_keys(key_dir: Path, agent_id: str, tenant: str) -> dict[str, Path]:
    """Keys for one agent, made once and kept when the data dir is reused."""
    files = key_files(key_dir, agent_id, tenant)
    if not all(p.exists() for p in files.values()):
        write_key_files(key_dir, agent_id, tenant, force=True)
    return files


@dataclass(frozen=True)
class SimDevice:
    name: str
    port: int
    community: str
    protocol: str = "snmp"


def write_configs(data: Path, *, broker_url: str, protocol: str, devices: list[SimDevice],
                  interval_s: float, metrics_port: int, tenant: str = TENANT,
                  agent_id: str = AGENT_ID, extra_toml: str = "") -> tuple[Path, Path]:
    """Agent and collector configs (mode 0600) for one agent on 127.0.0.1;
    `extra_toml` is appended to the agent's (more devices, `[credentials]`, `[ssh]`)."""
    files = write_keys(data / "keys", agent_id, tenant)
    device_tables = "".join(f"""
[[devices]]
name = "{d.name}"
address = "127.0.0.1"
port = {d.port}
protocol = "{d.protocol}"
interval_s = {interval_s}
[devices.snmp]
version = "2c"
community = "{d.community}"
timeout_s = 2.0
retries = 1
""" for d in devices)
    agent = f"""# privtel agent (written by `privtel demo`)
[agent]
id = "{agent_id}"
tenant = "{tenant}"
site = "demo-site"
state_dir = "agent-state"
batch_max_records = 500
batch_max_age_s = 1.0

[keys]
signing_key = "{files['agent_key']}"
collector_public_key = "{files['collector_pub']}"
collector_receipt_key = "{files['receipt_pub']}"
tenant_key = "{files['tenant_key']}"

[mqtt]
url = "{broker_url}"
protocol = "{protocol}"
client_id = "privtel-{agent_id}"
{device_tables}
{extra_toml}"""
    collector = f"""# privtel collector (written by `privtel demo`)
[collector]
store = "sqlite:///privtel.db"
metrics_listen = "127.0.0.1:{metrics_port}"

[mqtt]
url = "{broker_url}"
protocol = "{protocol}"
client_id = "privtel-collector-{agent_id}"

[keys]
private_keys = ["{files['collector_key']}"]
receipt_key = "{files['receipt_key']}"

[[agents]]
id = "{agent_id}"
tenant = "{tenant}"
public_key = "{files['agent_pub']}"
"""
    agent_path, collector_path = data / "agent.toml", data / "collector.toml"
    write_private(agent_path, agent.encode())
    write_private(collector_path, collector.encode())
    return agent_path, collector_path


@dataclass
class Summary:
    devices: int = 0
    devices_up: int = 0
    records_polled: int = 0
    records_shipped: int = 0
    batches_sealed: int = 0
    records_stored: int = 0
    batches_rejected: int = 0
    metrics_url: str = ""
    data_dir: str = ""

    def lines(self) -> list[str]:
        return [
            f"devices polled: {self.devices} ({self.devices_up} answering)",
            f"records polled: {self.records_polled}",
            f"records shipped: {self.records_shipped}",
            f"batches sealed: {self.batches_sealed}",
            f"records stored: {self.records_stored}",
            f"rejected batches: {self.batches_rejected}",
            f"metrics: {self.metrics_url}",
            f"data dir: {self.data_dir}",
        ]


def _sample(registry: object, name: str, **labels: str) -> float:
    total = 0.0
    for metric in registry.collect():  # type: ignore[attr-defined]
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def run_demo(*, duration: float | None, data_dir: Path | None, broker: str | None,
                   interval_s: float, metrics_port: int, out: TextIO = sys.stdout) -> Summary:
    keep = data_dir is not None
    data = data_dir or Path(tempfile.mkdtemp(prefix="privtel-demo-"))
    data.mkdir(parents=True, exist_ok=True)
    summary = Summary(data_dir=str(data) if keep else "(temporary, removed)")

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    async with contextlib.AsyncExitStack() as stack:
        if broker:
            broker_url, protocol = broker, "5"
            say(f"using broker {broker_url}")
        else:
            b = await stack.enter_async_context(EmbeddedBroker("127.0.0.1", free_port()))
            broker_url, protocol = b.url, "3.1.1"
            say(f"embedded MQTT broker on {b.url}")
        snmp_port = free_port(socket.SOCK_DGRAM)
        say(f"starting {len(RECORDINGS)} simulated SNMP devices (snmpsim recordings) "
            f"on udp 127.0.0.1:{snmp_port}")
        await stack.enter_async_context(SnmpSim(snmp_port))
        devices = [SimDevice(f"sim-{name.split('-')[0].lower()}", snmp_port, name)
                   for name in RECORDINGS]
        ssh = await start_demo_ssh(data / "ssh")
        stack.push_async_callback(ssh.stop)
        say(f"starting a simulated {ssh.sim.vendor} device over SSH on tcp 127.0.0.1:"
            f"{ssh.sim.port} (credentials encrypted in {ssh.credentials_file.name})")
        agent_path, collector_path = write_configs(
            data, broker_url=broker_url, protocol=protocol, devices=devices,
            interval_s=interval_s, metrics_port=metrics_port,
            extra_toml=ssh.config_toml() + ssh.device_toml(interval_s=max(interval_s, 5.0)))
        acfg = agent_config.load(agent_path)
        ccfg = collector_config.load(collector_path)
        collector, agent = Collector(ccfg), Agent(acfg)
        pair = await stack.enter_async_context(running(collector, agent))
        summary.metrics_url = f"http://127.0.0.1:{collector.metrics_port}/metrics"
        summary.devices = len(acfg.devices)
        say(f"collector metrics at {summary.metrics_url}")
        say("polling; Ctrl-C to stop" if duration is None else f"polling for {duration:.0f}s")
        started = time.monotonic()
        try:
            while duration is None or time.monotonic() - started < duration:
                await asyncio.sleep(min(5.0, max(0.1, (duration or 5) - (
                    time.monotonic() - started))))
                pair.check()
                stored = await asyncio.to_thread(collector.store.count_records)
                say(f"[{time.monotonic() - started:5.0f}s] polled {agent.records_polled} "
                    f"records, shipped {agent.records_shipped}, stored {stored}")
        except (KeyboardInterrupt, asyncio.CancelledError):
            say("stopping")
        await pair.stop_agent()
        summary.records_stored = await asyncio.to_thread(collector.store.count_records)
        summary.records_polled = agent.records_polled
        summary.records_shipped = agent.records_shipped
        summary.batches_sealed = int(_sample(agent.registry, "privtel_agent_batches_sealed_total"))
        summary.batches_rejected = int(sum(
            _sample(collector.registry, "privtel_batches_rejected_total", reason=r)
            for r in _reasons(collector.registry) if r != "duplicate"))
        summary.devices_up = len(agent.up_devices)
    if not keep:
        shutil.rmtree(data, ignore_errors=True)
    return summary


def _reasons(registry: object) -> set[str]:
    return {s.labels["reason"] for m in registry.collect()  # type: ignore[attr-defined]
            for s in m.samples if s.name == "privtel_batches_rejected_total"}


class Pair:
    """A collector and (optionally) an agent running as tasks in this event loop."""

    def __init__(self, collector: Collector, agent: Agent | None) -> None:
        self.collector, self.agent = collector, agent
        self._cstop, self._astop = asyncio.Event(), asyncio.Event()
        self._ctask: asyncio.Task[None] | None = None
        self._atask: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._ctask = asyncio.create_task(self.collector.run(self._cstop), name="collector")
        await asyncio.wait_for(self.collector.ingest.subscribed.wait(), 15)
        if self.agent is not None:
            self._atask = asyncio.create_task(self.agent.run(self._astop), name="agent")

    def check(self) -> None:
        """Raise what a task died of, so a broken half is not mistaken for a quiet one."""
        for t in (self._ctask, self._atask):
            if t is not None and t.done():
                t.result()

    async def stop_agent(self) -> None:
        """Stop the agent (it flushes its spool), then wait for the last batches to land."""
        if self._atask is not None and not self._atask.done():
            self._astop.set()
            await self._atask
        await settle(self.collector)

    async def stop(self) -> None:
        await self.stop_agent()
        if self._ctask is not None and not self._ctask.done():
            self._cstop.set()
            await self._ctask


@contextlib.asynccontextmanager
async def running(collector: Collector, agent: Agent | None = None) -> AsyncIterator[Pair]:
    pair = Pair(collector, agent)
    try:
        await pair.start()
        yield pair
    finally:
        await pair.stop()


async def settle(collector: Collector, timeout: float = 10.0) -> None:
    """Wait until the stored count stops growing: the last batches are in flight."""
    last, deadline = -1, time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = await asyncio.to_thread(collector.store.count_records)
        if n == last:
            return
        last = n
        await asyncio.sleep(0.5)
