"""50 simulated SSH devices polled in one interval while SNMP polls of a real snmpd
run on the same event loop: netmiko's blocking work stays in worker threads, so
every SNMP poll completes within its own timeout and every SSH device is polled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from peers.snmpd import run_snmpd
from ssh_kit import SimFarm, by_name, device

from agents.credentials import CredentialStore
from agents.pollers import Device
from agents.snmp.options import SnmpOptions
from agents.snmp.poller import SnmpPoller
from agents.ssh.poller import SshPoller

INTERVAL_S = 60.0
VENDORS = ["cisco_ios", "arista_eos", "juniper_junos"]


async def test_fifty_ssh_devices_do_not_block_snmp(store: CredentialStore,
                                                   known_hosts: Path) -> None:
    vendors = [VENDORS[i % 3] for i in range(50)]
    snmp_opts = SnmpOptions(timeout_s=3.0, retries=0)
    with SimFarm(vendors) as farm, run_snmpd(interfaces=24) as snmpd:
        known_hosts.write_text("".join(f"[127.0.0.1]:{s.port} {s.public_host_key}\n"
                                       for s in farm.sims))
        ssh_devices = [device(f"sim{i:02d}", s.port, known_hosts, device_type=s.vendor,
                              interval_s=INTERVAL_S, poll_timeout_s=INTERVAL_S)
                       for i, s in enumerate(farm.sims)]
        snmp_device = Device(name="snmp1", address="127.0.0.1", port=snmpd.port,
                             protocol="snmp", interval_s=1.0, tenant="acme", site="lab",
                             options=snmp_opts)
        ssh = SshPoller(credentials=store, max_concurrent=16)
        snmp = SnmpPoller()
        snmp_results: list[tuple[float, dict]] = []
        done = asyncio.Event()

        async def snmp_loop() -> None:
            while not done.is_set():
                t0 = time.monotonic()
                recs = await snmp.poll(snmp_device)
                (health,) = by_name(recs, "device.health")
                snmp_results.append((time.monotonic() - t0, dict(health.fields)))
                await asyncio.sleep(0.05)

        async def ssh_all() -> list[list]:
            try:
                return await asyncio.gather(*(ssh.poll(d) for d in ssh_devices))
            finally:
                done.set()

        try:
            ssh_results, _ = await asyncio.wait_for(
                asyncio.gather(ssh_all(), snmp_loop()), timeout=INTERVAL_S)
        finally:
            await ssh.close()
            await snmp.close()

    assert len(ssh_results) == 50
    for dev, recs in zip(ssh_devices, ssh_results, strict=True):
        (health,) = by_name(recs, "device.health")
        assert health.fields["up"] == 1, (dev.name, health.fields)
        assert health.fields["reason"] is None
        assert len(by_name(recs, "ssh.inventory")) == 1
        assert by_name(recs, "if.errors")
    assert sum(f.connections for f in farm.sims) == 50

    assert len(snmp_results) >= 3, "SNMP polls should have run during the SSH polls"
    for latency, fields in snmp_results:
        assert fields["up"] == 1 and fields["reason"] is None, fields
        assert latency <= snmp_opts.deadline_s
    print(f"\nssh: 50 devices; snmp polls during: {len(snmp_results)}, "
          f"max latency {max(x for x, _ in snmp_results):.3f}s "
          f"(timeout {snmp_opts.deadline_s}s)")
