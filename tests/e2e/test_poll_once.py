"""`privtel agent poll-once`: the operator's first check, like Telegraf's --test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from peers.snmpd import run_snmpd

from privtel.demo.run import SimDevice, write_configs

DESCR_ADDR = "10.20.30.41"


def test_poll_once_prints_pseudonymised_records(tmp_path: Path) -> None:
    with run_snmpd(sys_name="once-core", extra_config=f'sysDescr "mgmt {DESCR_ADDR}"') as peer:
        agent_path, _ = write_configs(
            tmp_path, broker_url="mqtt://127.0.0.1:1", protocol="5",
            devices=[SimDevice("core-1", peer.port, peer.community),
                     SimDevice("dead-1", 9, "public")],  # nothing listens on udp/9 here
            interval_s=60, metrics_port=0, tenant="once", agent_id="once-agent")
        res = subprocess.run(
            [sys.executable, "-m", "privtel", "agent", "poll-once", "--config", str(agent_path)],
            capture_output=True, timeout=120, check=False)
    assert res.returncode == 1, res.stderr.decode()[-2000:]  # one device is down
    records = [orjson.loads(line) for line in res.stdout.splitlines()]
    by_name: dict[str, list[dict]] = {}
    for r in records:
        by_name.setdefault(r["name"], []).append(r)
    health = {r["fields"]["up"]: r for r in by_name["device.health"]}
    assert set(health) == {0, 1} and health[0]["fields"]["reason"] == "timeout"
    (system,) = by_name["snmp.system"]
    assert "mgmt " in system["fields"]["sys_descr"]
    assert system["fields"]["sys_name"].startswith("tk-")
    assert all(r["device"].startswith("tk-") for r in records)
    for raw in (DESCR_ADDR.encode(), b"127.0.0.1", b"core-1", b"once-core"):
        assert raw not in res.stdout and raw not in res.stderr
