"""The if-mib profile's packet counters, ifType and ifLastChange against a real snmpd,
checked with net-snmp's own snmpget."""

from __future__ import annotations

import pytest
from peers.snmpd import run_snmpd

from agents.pollers import Device
from agents.snmp.options import SnmpOptions
from agents.snmp.poller import SnmpPoller

IFX = "1.3.6.1.2.1.31.1.1.1"
IF = "1.3.6.1.2.1.2.2.1"


@pytest.mark.parametrize(("version", "bits"), [("2c", 64), ("1", 32)])
async def test_packets_type_and_last_change_match_snmpget(version: str, bits: int) -> None:
    with run_snmpd(sys_name="noc-ifmib", interfaces=3) as peer:
        poller = SnmpPoller()
        try:
            recs = await poller.poll(Device(
                name="r1", address="127.0.0.1", port=peer.port, protocol="snmp",
                interval_s=60, tenant="acme", site="lab",
                options=SnmpOptions(version=version, community=peer.community,
                                    profiles=("system", "if-mib"), timeout_s=5.0)))
        finally:
            await poller.close()
        ifs = [r for r in recs if r.name == "if"]
        assert len(ifs) == 3
        for r in ifs:
            i, f = r.fields["if_index"], r.fields
            if bits == 64:
                want = peer.snmpget(f"{IFX}.7.{i}", f"{IFX}.8.{i}", f"{IFX}.9.{i}",
                                    f"{IFX}.11.{i}", f"{IFX}.12.{i}", f"{IFX}.13.{i}")
            else:  # v1 has no Counter64: ifInUcastPkts and the 32-bit ifXTable columns
                want = peer.snmpget(f"{IF}.11.{i}", f"{IFX}.2.{i}", f"{IFX}.3.{i}",
                                    f"{IF}.17.{i}", f"{IFX}.4.{i}", f"{IFX}.5.{i}")
            got = [f[f"{d}_{c}_pkts"] for d in ("in", "out") for c in ("ucast", "mcast", "bcast")]
            assert got == [int(v) for v in want.values()]
            assert f["pkts_bits"] == bits
            meta = peer.snmpget(f"{IF}.3.{i}")
            assert f["if_type"] == int(next(iter(meta.values())))
            ticks = peer.cli("snmpget", "-Oqvt", f"{IF}.9.{i}").strip()
            assert f["last_change_s"] == int(ticks) / 100
