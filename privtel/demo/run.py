"""The newcomer's first run: everything on 127.0.0.1, on embedded defaults.

An embedded MQTT broker (unless --broker names one), snmpsim serving real
device recordings, a collector storing into SQLite and an agent polling the
simulated devices; progress every few seconds, a summary at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from agents import config as agent_config
from agents.credentials import Credential, CredentialStore, load_key
from agents.runtime import Agent
from collector import config as collector_config
from collector.runtime import Collector
from plumbing.files import write_private
from privtel.commands.keys import key_files, write_key_files
from privtel.demo import prometheus
from privtel.demo.broker import EmbeddedBroker
from privtel.demo.snmpsim import RECORDINGS, SnmpSim
from privtel.demo.syslogsim import SYSLOG_TOML, SyslogSim
from privtel.sim.demo import start_demo_ssh

TENANT, AGENT_ID, SITE = "demo", "demo-agent", "demo-site"


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
    credential: str | None = None   # the community from the credential store instead


def write_configs(data: Path, *, broker_url: str, protocol: str, devices: list[SimDevice],
                  interval_s: float, metrics_port: int, tenant: str = TENANT,
                  agent_id: str = AGENT_ID, extra_toml: str = "",
                  agent_metrics_port: int | None = None) -> tuple[Path, Path]:
    """Agent and collector configs (mode 0600) for one agent on 127.0.0.1;
    `extra_toml` is appended to the agent's (more devices, `[credentials]`, `[ssh]`)."""
    files = write_keys(data / "keys", agent_id, tenant)
    agent_metrics = ("" if agent_metrics_port is None
                     else f'metrics_listen = "127.0.0.1:{agent_metrics_port}"\n')
    device_tables = "".join(f"""
[[devices]]
name = "{d.name}"
address = "127.0.0.1"
port = {d.port}
protocol = "{d.protocol}"
interval_s = {interval_s}
[devices.snmp]
version = "2c"
{f'credential = "{d.credential}"' if d.credential else f'community = "{d.community}"'}
timeout_s = 2.0
retries = 1
""" for d in devices)
    agent = f"""# privtel agent (written by `privtel demo`)
[agent]
id = "{agent_id}"
tenant = "{tenant}"
site = "{SITE}"
state_dir = "agent-state"
batch_max_records = 500
batch_max_age_s = 1.0
{agent_metrics}
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
    syslog_sent: int = 0
    syslog_stored: int = 0
    batches_rejected: int = 0
    metrics_url: str = ""
    data_dir: str = ""
    prometheus_url: str = ""

    def lines(self) -> list[str]:
        return [
            f"devices polled: {self.devices} ({self.devices_up} answering)",
            f"records polled: {self.records_polled}",
            f"records shipped: {self.records_shipped}",
            f"batches sealed: {self.batches_sealed}",
            f"records stored: {self.records_stored}",
            f"syslog lines sent: {self.syslog_sent} (stored as log records: "
            f"{self.syslog_stored})",
            f"rejected batches: {self.batches_rejected}",
            f"metrics: {self.metrics_url}",
            *([f"prometheus: {self.prometheus_url}"] if self.prometheus_url else []),
            f"data dir: {self.data_dir}",
        ]


def _sample(registry: object, name: str, **labels: str) -> float:
    total = 0.0
    for metric in registry.collect():  # type: ignore[attr-defined]
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


@dataclass(frozen=True)
class DemoOptions:
    """What `privtel demo` varies: one device is gone for `away_for_s` after each
    `away_after_s` it answered; `prometheus` starts a real Prometheus scraping the demo."""

    away_after_s: float = 180.0
    away_for_s: float = 420.0
    prometheus: bool = False
    prometheus_port: int = 0


AWAY_RECORDING = "linksys-system"


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """True if `stop` was set within `seconds`."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def away_device(port: int, opts: DemoOptions, stop: asyncio.Event,
                      say: Callable[[str], None]) -> None:
    """The device that goes away: its own snmpsim, stopped and started again."""
    while not stop.is_set():
        async with SnmpSim(port, (AWAY_RECORDING,), moving=True):
            if await _wait(stop, opts.away_after_s):
                return
        say(f"simulated device sim-{AWAY_RECORDING.split('-')[0]} is gone for "
            f"{opts.away_for_s:.0f}s")
        if await _wait(stop, opts.away_for_s):
            return
        say(f"simulated device sim-{AWAY_RECORDING.split('-')[0]} is back")


def _stop_on_signals(stop: asyncio.Event) -> Callable[[], None]:
    """SIGTERM and SIGINT end the demo the same way: every child stopped, summary printed."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return remove


async def run_demo(*, duration: float | None, data_dir: Path | None, broker: str | None,
                   interval_s: float, metrics_port: int, out: TextIO = sys.stdout,
                   options: DemoOptions | None = None) -> Summary:
    opts = options or DemoOptions()
    keep = data_dir is not None
    data = data_dir or Path(tempfile.mkdtemp(prefix="privtel-demo-"))
    data.mkdir(parents=True, exist_ok=True)
    summary = Summary(data_dir=str(data) if keep else "(temporary, removed)")
    stop = asyncio.Event()

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    async with contextlib.AsyncExitStack() as stack:
        stack.callback(_stop_on_signals(stop))
        if broker:
            broker_url, protocol = broker, "5"
            say(f"using broker {broker_url}")
        else:
            b = await stack.enter_async_context(EmbeddedBroker("127.0.0.1", free_port()))
            broker_url, protocol = b.url, "3.1.1"
            say(f"embedded MQTT broker on {b.url}")
        snmp_port, away_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        steady = tuple(r for r in RECORDINGS if r != AWAY_RECORDING)
        say(f"starting {len(RECORDINGS)} simulated SNMP devices (snmpsim recordings, counters "
            f"moving, one interface per device flapping) on udp 127.0.0.1:{snmp_port} and "
            f":{away_port} (the one that goes away for {opts.away_for_s:.0f}s after each "
            f"{opts.away_after_s:.0f}s)")
        await stack.enter_async_context(SnmpSim(snmp_port, steady, moving=True))
        away_stop = asyncio.Event()
        away = asyncio.create_task(away_device(away_port, opts, away_stop, say))
        stack.push_async_callback(_end, away, away_stop)
        ssh = await start_demo_ssh(data / "ssh")
        stack.push_async_callback(ssh.stop)
        creds = CredentialStore(ssh.credentials_file, load_key(key_file=ssh.key_file))
        devices = []
        for name in RECORDINGS:
            device = f"sim-{name.split('-')[0].lower()}"
            creds.set(f"{device}-snmp", Credential(snmp_community=name))
            devices.append(SimDevice(device, away_port if name == AWAY_RECORDING else snmp_port,
                                     name, credential=f"{device}-snmp"))
        say(f"starting a simulated {ssh.sim.vendor} device over SSH on tcp 127.0.0.1:"
            f"{ssh.sim.port} (credentials encrypted in {ssh.credentials_file.name})")
        syslog_ports = free_port(socket.SOCK_DGRAM), free_port()
        agent_metrics_port = free_port()
        agent_path, collector_path = write_configs(
            data, broker_url=broker_url, protocol=protocol, devices=devices,
            interval_s=interval_s, metrics_port=metrics_port,
            agent_metrics_port=agent_metrics_port,
            extra_toml=ssh.config_toml() + ssh.device_toml(interval_s=max(interval_s, 5.0))
            + SYSLOG_TOML.format(udp=syslog_ports[0], tcp=syslog_ports[1]))
        acfg = agent_config.load(agent_path)
        ccfg = collector_config.load(collector_path)
        collector, agent = Collector(ccfg), Agent(acfg)
        pair = await stack.enter_async_context(running(collector, agent))
        t0 = time.monotonic()
        summary.metrics_url = f"http://127.0.0.1:{collector.metrics_port}/metrics"
        summary.devices = len(acfg.devices)
        say(f"collector metrics at {summary.metrics_url}")
        say(f"agent metrics at http://127.0.0.1:{agent_metrics_port}/metrics")
        say(f"agent syslog listener on udp and tcp 127.0.0.1:{syslog_ports[0]}/"
            f"{syslog_ports[1]}; the simulated devices log logins, link flaps, config "
            f"changes and DHCP leases to it")
        while agent.syslog is None and time.monotonic() - t0 < 30:
            pair.check()
            await asyncio.sleep(0.05)
        logsim = await stack.enter_async_context(SyslogSim(
            [d.name for d in acfg.devices], *syslog_ports))
        if opts.prometheus:
            summary.prometheus_url = await _prometheus(
                stack, opts, data, interval_s, [f"127.0.0.1:{collector.metrics_port}"],
                [f"127.0.0.1:{agent_metrics_port}"], say)
        say("polling; Ctrl-C to stop" if duration is None else f"polling for {duration:.0f}s")
        started = time.monotonic()
        while duration is None or time.monotonic() - started < duration:
            left = 5.0 if duration is None else duration - (time.monotonic() - started)
            if await _wait(stop, min(5.0, max(0.1, left))):
                say("stopping")
                break
            pair.check()
            stored = await asyncio.to_thread(collector.store.count_records)
            say(f"[{time.monotonic() - started:5.0f}s] polled {agent.records_polled} "
                f"records, shipped {agent.records_shipped}, stored {stored}")
        await logsim.close()
        await pair.stop_agent()
        summary.records_stored = await asyncio.to_thread(collector.store.count_records)
        summary.syslog_sent = logsim.sent
        summary.syslog_stored = await asyncio.to_thread(collector.store.count_records,
                                                        name="syslog")
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


async def _end(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _prometheus(stack: contextlib.AsyncExitStack, opts: DemoOptions, data: Path,
                      interval_s: float, collector: list[str], agent: list[str],
                      say: Callable[[str], None]) -> str:
    """A real Prometheus scraping the demo with the shipped rules, if installed."""
    if prometheus.binary() is None:
        say("--prometheus: the prometheus binary is not installed (apt-get install "
            "prometheus); going on without it")
        return ""
    rules = prometheus.RULES if prometheus.RULES.is_file() else None
    cfg = prometheus.scrape_config(
        collector=collector, agent=agent, interval_s=min(interval_s, 5.0), rules=rules,
        agent_labels={"tenant": TENANT, "site": SITE, "agent": AGENT_ID})
    prom = prometheus.Prometheus(opts.prometheus_port or free_port(), cfg,
                                 workdir=data / "prometheus")
    prom.launch()
    stack.callback(prom.stop)
    await asyncio.to_thread(prom.wait_ready)
    say(f"prometheus at {prom.url} (scraping collector and agent"
        f"{', with the shipped alert rules' if rules else ''})")
    return prom.url


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
