"""The fault harness: real peers started and broken by the test, and a ledger of what was lost.

`FaultBroker` is a Mosquitto of the test's own (own port, own persistence
directory) that can be killed with SIGKILL and have its saved state wiped.
`PgCluster` is a throw-away PostgreSQL cluster (initdb in a temp directory, its
own port) that the test stops and starts. `Site` is one collector (the real
`collector.runtime.Collector`, with end-to-end receipts on) and one agent
(the real `agents.shipper.Shipper`) configured from files the way an operator
would, plus a producer that submits records with known ids.

`Site.report` compares what the agent accepted (every record whose `submit`
returned) with what the store holds: lost (accepted, not stored) and
duplicated (stored more than once) must both be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from peers.ports import free_port
from prometheus_client import CollectorRegistry
from transport.transport_helpers import Broker

from agents import config as agent_config
from agents.shipper import Shipper
from collector import config as collector_config
from collector.runtime import Collector
from collector.store.base import open_store
from pipelines.record import Kind, Record
from plumbing.files import write_private
from privtel.commands.keys import key_files, write_key_files

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


class FaultBroker(Broker):
    """A test's own Mosquitto with persistence, which the test may SIGKILL and wipe."""

    @classmethod
    def persistent(cls, workdir: Path) -> FaultBroker:
        b = cls.plain(workdir, free_port())
        return cls(b.workdir, b.conf.read_text(), b.port)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def wipe(self) -> int:
        """Delete the saved state (a lost volume, a fresh node); returns files removed."""
        gone = 0
        for f in self.workdir.glob("*.db*"):
            f.unlink()
            gone += 1
        return gone


class PgCluster:
    """A PostgreSQL cluster of the test's own on a free port, run as a non-root user."""

    def __init__(self) -> None:
        if PG_BIN is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.dir = Path(tempfile.mkdtemp(prefix="privtel-faults-pg-"))
        self.port = free_port()
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            pw = pwd.getpwnam(self._user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = self.dir / "data"
        self._pg(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync"])

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, argv: list[str]) -> None:
        cmd = [str(PG_BIN / argv[0]), *argv[1:]]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {r.stderr.decode(errors='replace')[-500:]}")

    def start(self) -> None:
        self._pg(["pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                  f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off", "start"])

    def stop(self) -> None:
        self._pg(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass(frozen=True)
class Report:
    scenario: str
    accepted: int
    stored: int
    lost: int
    duplicated: int
    unexpected: int  # stored ids the agent never accepted
    resent: int  # batches the agent published again for want of a receipt

    def line(self) -> str:
        return (f"fault {self.scenario}: accepted {self.accepted}, stored {self.stored}, "
                f"lost {self.lost}, duplicated {self.duplicated}, unexpected {self.unexpected}, "
                f"resent batches {self.resent}")


class Site:
    """One collector and one agent with end-to-end receipts, from config files."""

    def __init__(self, tmp: Path, broker_url: str, store_url: str, *,
                 receipt_timeout_s: float = 2.0, chunk: int = 10) -> None:
        run = os.urandom(3).hex()
        self.tenant, self.agent_id = f"f{run}", f"fa-{run}"
        self.tmp, self.chunk, self.run = tmp, chunk, int(run, 16)
        self.store_url = store_url
        write_key_files(tmp / "keys", self.agent_id, self.tenant)
        files = key_files(tmp / "keys", self.agent_id, self.tenant)
        agent = f"""
[agent]
id = "{self.agent_id}"
tenant = "{self.tenant}"
site = "s1"
state_dir = "state"
batch_max_records = 50
batch_max_age_s = 0.1

[keys]
signing_key = "{files['agent_key']}"
collector_public_key = "{files['collector_pub']}"
collector_receipt_key = "{files['receipt_pub']}"
tenant_key = "{files['tenant_key']}"

[mqtt]
url = "{broker_url}"
timeout_s = 2.0

[spool]
receipt_timeout_s = {receipt_timeout_s}
"""
        write_private(tmp / "agent.toml", agent.encode())
        self.files, self._broker_url = files, broker_url
        self.write_collector_config()
        self.areg = CollectorRegistry()
        self.shipper: Shipper | None = None
        self.collector: Collector | None = None
        self.accepted: set[str] = set()
        self._cstop = asyncio.Event()
        self._ctask: asyncio.Task[None] | None = None
        self._ptask: asyncio.Task[None] | None = None
        self._stopping = False
        self._counter = 0

    def write_collector_config(self, private_key: Path | None = None) -> Path:
        """The collector's config; `private_key` stands in for the right collector key."""
        text = f"""
[collector]
store = "{self.store_url}"
metrics_listen = "127.0.0.1:0"

[mqtt]
url = "{self._broker_url}"
client_id = "privtel-faults-{self.run:x}"

[keys]
private_keys = ["{private_key or self.files['collector_key']}"]
receipt_key = "{self.files['receipt_key']}"

[[agents]]
id = "{self.agent_id}"
tenant = "{self.tenant}"
public_key = "{self.files['agent_pub']}"
"""
        path = self.tmp / "collector.toml"
        write_private(path, text.encode())
        return path

    async def start_collector(self) -> None:
        cfg = collector_config.load(self.tmp / "collector.toml")
        self.collector = await asyncio.to_thread(Collector, cfg)
        self._cstop = asyncio.Event()
        self._ctask = asyncio.create_task(self.collector.run(self._cstop), name="collector")
        await asyncio.wait_for(self.collector.ingest.subscribed.wait(), 20)

    async def stop_collector(self) -> None:
        if self._ctask is not None:
            self._cstop.set()
            await asyncio.wait_for(self._ctask, 30)
            self._ctask = None

    async def start_agent(self) -> None:
        cfg = agent_config.load(self.tmp / "agent.toml")
        self.shipper = Shipper(cfg, registry=self.areg, backoff_initial_s=0.1,
                               backoff_max_s=2.0)
        await self.shipper.start()
        self._ptask = asyncio.create_task(self._producer(), name="producer")

    async def _producer(self) -> None:
        assert self.shipper is not None
        while not self._stopping:
            ids = [f"{self.run:08x}{self._counter + i:024x}" for i in range(self.chunk)]
            recs = [Record(kind=Kind.METRIC, tenant=self.tenant, site="s1", device="d1",
                           name="if", fields={"if_index": self._counter + i, "in_octets": i},
                           id=rid) for i, rid in enumerate(ids)]
            await self.shipper.submit(recs)
            self.accepted.update(ids)  # submit returned: the agent owes these to the store
            self._counter += self.chunk
            await asyncio.sleep(0.02)

    async def finish(self, timeout: float = 60.0) -> bool:
        """Stop producing and wait until every accepted record was receipted."""
        if self._ptask is not None:
            # not cancelled: a submit cut short may still have committed its records
            self._stopping = True
            await self._ptask
            self._ptask = None
        assert self.shipper is not None
        return await self.shipper.flush(timeout)

    async def close(self) -> None:
        if self._ptask is not None:
            self._ptask.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ptask
        if self.shipper is not None:
            await self.shipper.close()
        with contextlib.suppress(Exception):
            await self.stop_collector()

    def report(self, scenario: str) -> Report:
        store = open_store(self.store_url)
        try:
            with store.tx() as cur:
                rows = [r[0] for r in cur.execute(
                    "SELECT id FROM records WHERE tenant = ?", (self.tenant,)).fetchall()]
        finally:
            store.close()
        ids = set(rows)
        resent = self.areg.get_sample_value("privtel_agent_batches_resent_total") or 0.0
        return Report(scenario, len(self.accepted), len(ids & self.accepted),
                      len(self.accepted - ids), len(rows) - len(ids), len(ids - self.accepted),
                      int(resent))


def check(r: Report) -> None:
    """Print the scenario's report; nothing lost, nothing stored twice or from nowhere."""
    print(r.line())
    assert r.accepted > 0, r.line()
    assert (r.lost, r.duplicated, r.unexpected) == (0, 0, 0), r.line()
    assert r.stored == r.accepted, r.line()


def published(site: Site) -> float:
    return site.areg.get_sample_value("privtel_agent_batches_published_total") or 0.0


async def wait_until(pred: object, timeout: float, step: float = 0.05) -> bool:
    """Poll `pred()` until true or `timeout` (a budget, never a timing assertion)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return True
        await asyncio.sleep(step)
    return bool(pred())  # type: ignore[operator]
