"""Each vendor profile against the SSH device simulator: netmiko drives a real SSH
session with the vendor's prompt, and the recorded outputs must parse to exact values."""

from __future__ import annotations

from pathlib import Path

import pytest
from ssh_kit import by_name, device, running, trust

from agents.credentials import CredentialStore
from agents.ssh.poller import SshPoller

EXPECTED = {
    "cisco_ios": {
        "inventory": {"hostname": "rtr-ios-1", "model": "ISR4331/K9", "serial": "FDO2307A1BC",
                      "sw_version": "17.9.4a"},
        "uptime_s": ((3 * 7 + 2) * 24 + 4) * 3600 + 15 * 60,
        "if_errors": {"GigabitEthernet0/0/0": (17, 3), "GigabitEthernet0/0/1": (0, 0)},
        "crc": {"GigabitEthernet0/0/0": 11},
        "cpu": 5.0,
        "mem": (1839082496, 412336128),
        "logs": 4,
    },
    "arista_eos": {
        "inventory": {"model": "DCS-7050SX3-48YC8-R", "serial": "JPE21453412",
                      "sw_version": "4.30.5M"},
        "uptime_s": ((6 * 7 + 1) * 24 + 3) * 3600 + 41 * 60,
        "if_errors": {"Et1": (6, 0), "Et2": (0, 2), "Ma1": (0, 0)},
        "crc": {"Et1": 4},
        "cpu": 8.9,
        "mem": (8099756 * 1024, (8099756 - 5641212) * 1024),
        "logs": 3,
    },
    "cisco_nxos": {
        "inventory": {"hostname": "nx-core-1", "model": "C93180YC-FX", "serial": "FDO24150XYZ",
                      "sw_version": "10.3(4a)"},
        "uptime_s": 41 * 86400 + 6 * 3600 + 12 * 60 + 9,
        "if_errors": {"Ethernet1/1": (9, 2), "Ethernet1/2": (0, 0)},
        "crc": {"Ethernet1/1": 7},
        "cpu": 5.52,
        "mem": (24569356 * 1024, 9274564 * 1024),
        "logs": 3,
    },
    "juniper_junos": {
        "inventory": {"hostname": "mx-junos-1", "model": "mx204", "serial": "JN12AB34CDEF",
                      "sw_version": "21.4R3-S4.9"},
        "uptime_s": 39 * 86400 + 2 * 3600 + 11 * 60,
        "if_errors": {"et-0/0/0": (21, 2), "et-0/0/1": (0, 0)},
        "crc": {},
        "cpu": 7.0,
        "mem": (32728 * 1024 * 1024, round(32728 * 1024 * 1024 * 0.22)),
        "logs": 3,
    },
}


@pytest.mark.parametrize("vendor", sorted(EXPECTED))
async def test_vendor_profile_parses_recorded_outputs(
        vendor: str, store: CredentialStore, known_hosts: Path) -> None:
    want = EXPECTED[vendor]
    poller = SshPoller(credentials=store)
    try:
        async with running(vendor) as sim:
            trust(known_hosts, sim)
            records = await poller.poll(device("dev-" + vendor, sim.port, known_hosts,
                                               device_type=vendor))
    finally:
        await poller.close()

    health = by_name(records, "device.health")
    assert len(health) == 1
    assert health[0].fields["up"] == 1 and health[0].fields["reason"] is None
    assert health[0].fields["protocol"] == "ssh"
    assert health[0].fields["uptime_s"] == want["uptime_s"]

    (inv,) = by_name(records, "ssh.inventory")
    assert inv.kind.value == "inventory"
    assert inv.fields["device_type"] == vendor
    for k, v in want["inventory"].items():
        assert inv.fields[k] == v, k

    errors = {r.fields["if_name"]: (r.fields["in_errors"], r.fields["out_errors"])
              for r in by_name(records, "if.errors")}
    assert errors == want["if_errors"]
    crc = {r.fields["if_name"]: r.fields.get("crc_errors") for r in by_name(records, "if.errors")}
    for name, n in want["crc"].items():
        assert crc[name] == n

    (cpu,) = by_name(records, "host.cpu")
    assert cpu.fields["cpu_util_pct"] == pytest.approx(want["cpu"])
    (mem,) = by_name(records, "host.memory")
    assert (mem.fields["mem_total_bytes"], mem.fields["mem_used_bytes"]) == want["mem"]
    assert set(mem.fields) == {"mem_total_bytes", "mem_used_bytes"}

    logs = by_name(records, "log.line")
    assert len(logs) == want["logs"]
    assert all(r.kind.value == "log" for r in logs)
    assert not by_name(records, "ssh.parse_error")
    assert all(r.device == "dev-" + vendor and r.tenant == "acme" for r in records)


async def test_log_lines_only_newer_than_last_poll(store: CredentialStore,
                                                   known_hosts: Path) -> None:
    poller = SshPoller(credentials=store)
    try:
        async with running("arista_eos") as sim:
            trust(known_hosts, sim)
            dev = device("leaf", sim.port, known_hosts, device_type="arista_eos")
            first = [r.fields["message"] for r in by_name(await poller.poll(dev), "log.line")]
            second = [r.fields["message"] for r in by_name(await poller.poll(dev), "log.line")]
            sim.add_log("Nov 25 14:09:10 {{hostname}} Ebra: %LINK-3-UPDOWN: Ethernet2 down")
            sim.add_log("Nov 25 14:09:12 {{hostname}} Ebra: %LINK-3-UPDOWN: Ethernet2 up")
            third = [r.fields["message"] for r in by_name(await poller.poll(dev), "log.line")]
    finally:
        await poller.close()
    assert len(first) == 3
    assert second == []
    assert third == ["Nov 25 14:09:10 leaf-eos-1 Ebra: %LINK-3-UPDOWN: Ethernet2 down",
                     "Nov 25 14:09:12 leaf-eos-1 Ebra: %LINK-3-UPDOWN: Ethernet2 up"]
