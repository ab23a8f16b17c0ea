"""The agent as operators run it: `privtel agent run` in its own process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import orjson
from e2e_kit import unique_tenant, wait_for
from peers.snmpd import run_snmpd

from agents.spool import Spool
from collector import config as collector_config
from collector.runtime import Collector
from privtel.demo.run import SimDevice, running, write_configs


async def test_sigterm_flushes_the_spool_and_exits_cleanly(tmp_path: Path,
                                                            mosquitto: str) -> None:
    tenant = unique_tenant("term")
    with run_snmpd(sys_name="term-core") as peer:
        agent_path, collector_path = write_configs(
            tmp_path, broker_url=mosquitto, protocol="5",
            devices=[SimDevice("core-1", peer.port, peer.community)], interval_s=1,
            metrics_port=0, tenant=tenant, agent_id="term-agent")
        collector = Collector(collector_config.load(collector_path),
                              topic_filter=f"privtel/v1/{tenant}/+/batches")
        async with running(collector) as pair:
            proc = subprocess.Popen(
                [sys.executable, "-m", "privtel", "agent", "run", "--config", str(agent_path)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                await wait_for(lambda: collector.store.count_records(name="snmp.system") >= 2, 60)
                proc.send_signal(signal.SIGTERM)
                _, err = await asyncio.to_thread(proc.communicate, timeout=30)
                assert proc.returncode == 0, err.decode()[-2000:]
                await pair.stop_agent()
                stored = collector.store.count_records()
            finally:
                if proc.poll() is None:
                    proc.kill()

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
