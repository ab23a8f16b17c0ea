"""Vendor log lines and inventory carry addresses and hostnames raw out of the poller;
after the pseudonymiser none of them survives (the agent runs it before batching)."""

from __future__ import annotations

from pathlib import Path

from ssh_kit import by_name, device, running, trust

from agents.credentials import CredentialStore
from agents.ssh.poller import SshPoller
from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.pseudonym.leakguard import find_leaks
from pipelines.record import encode

RAW = ("203.0.113.77", "203.0.113.9", "198.51.100.1", "10.20.30.40", "198.51.100.9")
HOSTNAMES = ("rtr-ios-1", "leaf-eos-1", "mx-junos-1")


async def test_vendor_records_leave_no_raw_address_after_pseudonymiser(
        store: CredentialStore, known_hosts: Path) -> None:
    poller = SshPoller(credentials=store)
    records = []
    try:
        for vendor in ("cisco_ios", "arista_eos", "juniper_junos"):
            async with running(vendor) as sim:
                trust(known_hosts, sim)
                records += await poller.poll(device(f"dev-{vendor}", sim.port, known_hosts,
                                                    device_type=vendor))
    finally:
        await poller.close()
    raw = encode(records).decode()
    assert all(a in raw for a in RAW), "the recordings should contain the test addresses"
    assert len(by_name(records, "log.line")) == 10

    ps = Pseudonymiser(TenantKey.generate())
    out = [ps.record(r) for r in records]
    blob = encode(out).decode()
    for a in RAW:
        assert a not in blob, a
    inventory = by_name(out, "ssh.inventory")
    assert len(inventory) == 3
    for r in inventory:
        assert r.fields.get("hostname") not in HOSTNAMES
    assert not find_leaks(out, ps)
    assert {r.device for r in out}.isdisjoint({f"dev-{v}" for v in
                                                ("cisco_ios", "arista_eos", "juniper_junos")})
