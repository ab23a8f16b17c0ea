"""The agent is killed (SIGKILL) while a TCP sender streams: every message it had read
past into the spool is stored, none twice, and the sender reconnects and goes on."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
from e2e.e2e_kit import unique_tenant, wait_for, write_private
from peers.ports import free_port
from peers.procs import stop

from collector import config as collector_config
from collector.runtime import Collector
from privtel.demo.run import running, settle, write_configs

SEQ = re.compile(r"kill-seq-(\d+)\b")


class Sender:
    """Streams numbered octet-counted messages, reconnecting after a failure."""

    def __init__(self, port: int) -> None:
        self.port, self.next, self.connects = port, 0, 0
        self.after_reconnect: int | None = None
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                _, w = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 2)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            self.connects += 1
            if self.connects == 2:
                self.after_reconnect = self.next
            try:
                while not self.stop.is_set():
                    m = b"<86>1 - host sshd - - - kill-seq-%d from 192.0.2.1" % self.next
                    w.write(b"%d %s" % (len(m), m))
                    await asyncio.wait_for(w.drain(), 2)
                    self.next += 1
                    if self.next % 50 == 0:
                        await asyncio.sleep(0.01)
            except (OSError, TimeoutError):
                pass
            finally:
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()


def seqs(messages: list[str]) -> list[int]:
    return [int(m.group(1)) for s in messages if (m := SEQ.search(s))]


def stored_seqs(collector: Collector) -> list[int]:
    db = collector.cfg.store_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(db)) as c:
        rows = c.execute("select fields from records where name = 'syslog'").fetchall()
    return seqs([orjson.loads(f).get("message", "") for (f,) in rows])


def spooled_seqs(spool: Path) -> list[int]:
    """What the killed agent had in its spool, not yet sealed (pseudonymised JSON, a row
    per group commit, a record a line)."""
    with contextlib.closing(sqlite3.connect(spool)) as c:
        rows = c.execute("select record from pending").fetchall()
    return seqs([orjson.loads(line)["fields"].get("message", "")
                 for (r,) in rows for line in bytes(r).splitlines()])


def start_agent(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "privtel", "agent", "run", "--config",
                             str(config), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_sigkill_while_streaming_loses_no_spooled_message(tmp_path: Path,
                                                                mosquitto: str) -> None:
    tenant = unique_tenant("sigkill")
    port = free_port()
    agent_path, collector_path = write_configs(
        tmp_path, broker_url=mosquitto, protocol="5", devices=[], interval_s=3600,
        metrics_port=0, tenant=tenant, agent_id="kill-agent")
    write_private(agent_path, agent_path.read_bytes() + (
        f'\n[syslog]\n[[syslog.listeners]]\nprotocol = "tcp"\naddress = "127.0.0.1"\n'
        f"port = {port}\n").encode())
    collector = Collector(collector_config.load(collector_path),
                          topic_filter=f"privtel/v1/{tenant}/+/batches")
    sender = Sender(port)
    async with running(collector) as pair:
        proc = start_agent(agent_path)
        task = asyncio.create_task(sender.run())
        try:
            await wait_for(lambda: len(stored_seqs(collector)) >= 500, 60, "first records")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            in_spool = spooled_seqs(tmp_path / "agent-state" / "spool.db")
            await asyncio.sleep(0.5)
            proc = start_agent(agent_path)
            await wait_for(lambda: sender.after_reconnect is not None, 30, "reconnect")
            resumed = sender.after_reconnect
            assert resumed is not None
            await wait_for(lambda: sender.next > resumed + 2000, 60, "sending on")
            sender.stop.set()
            await asyncio.wait_for(task, 10)
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(proc.communicate, timeout=30)
            assert proc.returncode == 0, err.decode()[-2000:]
            await settle(collector)
            await pair.stop_agent()
        finally:
            sender.stop.set()
            stop(proc)
    stored = stored_seqs(collector)
    assert len(stored) == len(set(stored)), "a message was stored twice"
    assert set(in_spool) <= set(stored), "spooled before the kill but never stored"
    assert set(range(resumed, sender.next)) <= set(stored), "lost after the reconnect"
    assert sender.connects >= 2
    print("spooled at kill", len(in_spool), "stored", len(stored), "sent", sender.next)
