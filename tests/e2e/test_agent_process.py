"""The agent as operators run it: `privtel agent run` in its own process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
from peers.snmpd import run_snmpd

from agents.spool import Spool
from collector import config as collector_config
from collector.runtime import Collector
from privtel.demo.run import SimDevice, write_configs


async def _wait_for(pred, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(pred):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def test_sigterm_flushes_the_spool_and_exits_cleanly(tmp_path: Path,
                                                            mosquitto: str) -> None:
    tenant = f"term{os.getpid()}{int(time.time()) % 100000}"
    with run_snmpd(sys_name="term-core") as peer:
        agent_path, collector_path = write_configs(
            tmp_path, broker_url=mosquitto, protocol="5",
            devices=[SimDevice("core-1", peer.port, peer.community)], interval_s=1,
            metrics_port=0, tenant=tenant, agent_id="term-agent")
        collector = Collector(collector_config.load(collector_path),
                              topic_filter=f"privtel/v1/{tenant}/+/batches")
        cstop = asyncio.Event()
        ctask = asyncio.create_task(collector.run(cstop))
        await asyncio.wait_for(collector.ingest.subscribed.wait(), 15)
        proc = subprocess.Popen(
            [sys.executable, "-m", "privtel", "agent", "run", "--config", str(agent_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            await _wait_for(lambda: collector.store.count_records(name="snmp.system") >= 2, 60)
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(proc.communicate, timeout=30)
            assert proc.returncode == 0, err.decode()[-2000:]
            await asyncio.sleep(1.0)
            stored = collector.store.count_records()
        finally:
            if proc.poll() is None:
                proc.kill()
            cstop.set()
            await ctask

    spool = Spool(tmp_path / "agent-state" / "spool.db")
    try:
        st = spool.stats()
    finally:
        spool.close()
    assert st.batches == 0 and st.pending_records == 0
    log = [orjson.loads(line) for line in err.splitlines() if line.startswith(b"{")]
    messages = [e["msg"] for e in log]
    assert any("flushing the spool" in m for m in messages)
    assert stored >= 2
    for raw in (b"127.0.0.1", peer.community.encode()):
        assert raw not in err, "raw address or community in the agent's log"
