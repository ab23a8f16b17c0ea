"""The `linux` profile against a real OpenSSH sshd (tests/peers/sshd.py), key login,
and the collected log lines run through the pseudonymiser: no raw test address survives."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from peers.sshd import SshdPeer
from ssh_kit import by_name, device

from agents.credentials import Credential, CredentialStore
from agents.ssh.poller import SshPoller
from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.record import encode

ADDRESSES = ("203.0.113.5", "198.51.100.23", "2001:db8:42::17")
HOST = os.uname().nodename
LOG = (
    "Nov 25 14:00:01 web1 sshd[311]: Failed password for root from 203.0.113.5 port 52222\n"
    "this continuation line is not a log entry and is skipped\n"
    "2026-11-25T14:00:02.120+00:00 web1 app[9]: client 198.51.100.23 fetched /index\n"
    "2026-11-25T14:00:03.500+00:00 web1 app[9]: v6 client 2001:db8:42::17 fetched /a\n"
)


async def test_linux_profile_against_real_sshd(sshd: SshdPeer, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = CredentialStore(tmp_path / "creds.enc", os.urandom(32))
    store.set("srv", Credential(username=sshd.user, private_key=sshd.private_key))
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts_line() + "\n")
    log_file = sshd.write_file("app.log", LOG)

    poller = SshPoller(credentials=store)
    dev = device("web1", sshd.port, kh, device_type="linux", credential="srv",
                 log_file=str(log_file))
    try:
        records = await poller.poll(dev)
        with log_file.open("a") as f:
            f.write(f"Nov 25 14:05:00 {HOST} cron[77]: job done for 203.0.113.5\n")
        again = await poller.poll(dev)
    finally:
        await poller.close()

    (health,) = by_name(records, "device.health")
    assert health.fields["up"] == 1, health.fields
    assert health.fields["reason"] is None
    with open("/proc/uptime") as f:
        host_uptime = float(f.read().split()[0])
    assert 0 < health.fields["uptime_s"] <= host_uptime + 5

    (load,) = by_name(records, "host.load")
    assert {"load_1m", "load_5m", "load_15m"} <= set(load.fields)
    assert all(isinstance(load.fields[k], float) and load.fields[k] >= 0 for k in load.fields)

    (mem,) = by_name(records, "host.memory")
    with open("/proc/meminfo") as f:
        total_kb = int(next(ln for ln in f if ln.startswith("MemTotal:")).split()[1])
    assert mem.fields["mem_total_bytes"] == total_kb * 1024
    assert 0 < mem.fields["mem_used_bytes"] < mem.fields["mem_total_bytes"]

    (cpu,) = by_name(records, "host.cpu")
    assert 0.0 <= cpu.fields["cpu_util_pct"] <= 100.0
    (inv,) = by_name(records, "ssh.inventory")
    assert inv.fields["sw_version"] == os.uname().release

    lines = [r.fields["message"] for r in by_name(records, "log.line")]
    assert len(lines) == 3
    assert "203.0.113.5" in lines[0] and "2001:db8:42::17" in lines[2]
    new = [r.fields["message"] for r in by_name(again, "log.line")]
    assert new == [f"Nov 25 14:05:00 {HOST} cron[77]: job done for 203.0.113.5"]

    key = TenantKey.generate()
    ps = Pseudonymiser(key)
    out = ps.records(records) + ps.records(again)
    blob = encode(out).decode()
    for a in ADDRESSES:
        assert a in encode(records + again).decode()
        assert a not in blob, a
    scrubbed = [r.fields["message"] for r in out if r.name == "log.line"]
    assert all("fetched" in s or "password" in s or "job" in s for s in scrubbed)
    assert all(r.device != "web1" for r in out)
    # the device's own names: configured ("web1") and reported by `uname -n` (HOST)
    assert inv.fields["hostname"] == HOST
    assert not any("web1" in s or HOST.lower() in s.lower() for s in scrubbed), scrubbed
    assert sshd.private_key.splitlines()[1] not in caplog.text
