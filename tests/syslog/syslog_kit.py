"""Shared steps of the syslog tests: an agent with `[syslog]` shipping to a collector,
a private rsyslogd, and reading what the store holds."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from e2e.e2e_kit import unique_tenant, wait_for, write_private
from peers.procs import stop

from agents import config as agent_config
from agents.config import AgentConfig
from agents.runtime import Agent
from collector import config as collector_config
from collector.runtime import Collector
from privtel.demo.run import Pair, running, write_configs


@dataclass
class Running:
    agent: Agent
    collector: Collector
    cfg: AgentConfig
    pair: Pair

    def port(self, listener: str) -> int:
        assert self.agent.syslog is not None
        return self.agent.syslog.ports[listener]

    def stored(self) -> list[dict[str, Any]]:
        """Every stored syslog record: device, site and decoded fields."""
        db_path = self.collector.cfg.store_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(db_path)) as db:
            rows = db.execute("select device, site, fields from records "
                              "where name = 'syslog'").fetchall()
        return [{"device": d, "site": s, "fields": orjson.loads(f), "raw": f}
                for d, s, f in rows]

    def db_bytes(self) -> bytes:
        return Path(self.collector.cfg.store_url.removeprefix("sqlite:///")).read_bytes()

    async def wait_stored(self, marker: str, count: int, timeout: float = 30) -> list[
            dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            return [r for r in self.stored() if marker in str(r["fields"].get("message"))]
        await wait_for(lambda: len(found()) >= count, timeout, f"{count} x {marker} stored")
        return found()


@contextlib.asynccontextmanager
async def agent_with_syslog(tmp_path: Path, broker: str, syslog_toml: str,
                            devices_toml: str = "") -> AsyncIterator[Running]:
    tenant = unique_tenant("syslog")
    agent_path, collector_path = write_configs(
        tmp_path, broker_url=broker, protocol="5", devices=[], interval_s=3600,
        metrics_port=0, tenant=tenant, agent_id="syslog-agent", extra_toml=devices_toml)
    write_private(agent_path, agent_path.read_bytes() + b"\n" + syslog_toml.encode())
    acfg = agent_config.load(agent_path)
    collector = Collector(collector_config.load(collector_path),
                          topic_filter=f"privtel/v1/{tenant}/+/batches")
    agent = Agent(acfg)
    async with running(collector, agent) as pair:
        deadline = time.monotonic() + 20
        while agent.syslog is None or not agent.syslog.ports:
            pair.check()
            assert time.monotonic() < deadline, "syslog receiver did not start"
            await asyncio.sleep(0.05)
        yield Running(agent, collector, acfg, pair)


async def run(*args: str, stdin: bytes | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=subprocess.PIPE if stdin is not None else None,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode == 0, (args, out, err)


class Rsyslogd:
    """A private rsyslogd (own config, pid file and work dir), never the system one."""

    def __init__(self, directory: Path, conf: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "work").mkdir(exist_ok=True)
        self.conf = self.dir / "rsyslog.conf"
        self.conf.write_text(conf.replace("@WORK@", str(self.dir / "work")))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Rsyslogd:
        subprocess.run(["rsyslogd", "-N1", "-f", str(self.conf)], check=True,
                       capture_output=True, timeout=30)
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "stderr", "wb"))
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.proc)
