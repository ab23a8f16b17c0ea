"""The "snmp" poller against a real net-snmp snmpd, checked against net-snmp's own tools."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import by_name, device, v3_options
from peers.snmpd import DEFAULT_USERS, SnmpPeer, free_udp_port

from agents.pollers import REGISTRY, PollerContext
from agents.snmp.options import SnmpOptions
from agents.snmp.poller import SnmpPoller


@pytest.fixture
async def poller():
    p = SnmpPoller()
    yield p
    await p.close()


async def test_registered(tmp_path) -> None:
    import agents.protocols
    assert "agents.snmp.poller" in agents.protocols.BUILTIN
    spec = REGISTRY["snmp"]
    assert spec.default_port == 161
    p = spec.make(PollerContext(state_dir=tmp_path))
    assert isinstance(p, SnmpPoller)
    await p.close()


@pytest.mark.parametrize(("version", "engine"), [("1", "auto"), ("2c", "pysnmp"), ("2c", "fast")])
async def test_poll_matches_snmpget(snmpd: SnmpPeer, poller: SnmpPoller, version: str,
                                    engine: str) -> None:
    recs = await poller.poll(device(snmpd, version=version, engine=engine))
    want = snmpd.snmpget("1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.5.0",
                         "1.3.6.1.2.1.1.3.0")
    (system,) = by_name(recs, "snmp.system")
    assert system.fields["sys_name"] == want["1.3.6.1.2.1.1.5.0"] == snmpd.sys_name
    assert system.fields["sys_descr"] == want["1.3.6.1.2.1.1.1.0"]
    assert "." + system.fields["sys_object_id"] == want["1.3.6.1.2.1.1.2.0"]
    assert system.device == "r1" and system.tenant == "acme" and system.site == "lab"
    ifs = by_name(recs, "if")
    descr = snmpd.cli("snmpbulkwalk", "-Oq", "1.3.6.1.2.1.2.2.1.2").splitlines()
    assert len(ifs) == len(descr) == snmpd.interfaces
    (health,) = by_name(recs, "device.health")
    assert health.fields["up"] == 1 and health.fields["reason"] is None
    assert health.fields["uptime_s"] == system.fields["uptime_s"] > 0
    hc = snmpd.snmpget(*(f"1.3.6.1.2.1.31.1.1.1.6.{r.fields['if_index']}" for r in ifs[:5]))
    c32 = snmpd.snmpget(*(f"1.3.6.1.2.1.2.2.1.10.{r.fields['if_index']}" for r in ifs[:5]))
    for r in ifs[:5]:
        i = r.fields["if_index"]
        if version == "1":  # v1 cannot carry Counter64: the 32-bit column is the fallback
            assert r.fields["counter_bits"] == 32
            assert r.fields["in_octets"] == int(c32[f"1.3.6.1.2.1.2.2.1.10.{i}"])
        else:
            assert r.fields["counter_bits"] == 64
            assert r.fields["in_octets"] == int(hc[f"1.3.6.1.2.1.31.1.1.1.6.{i}"]) > 2**32
        assert r.fields["if_descr"] == f"eth{i - 1}"
        assert r.fields["if_alias"] == f"uplink {i}"
        assert r.fields["speed_bps"] == 1_000_000_000


@pytest.mark.parametrize("engine", ["pysnmp", "fast"])
async def test_dead_device_is_a_health_record(poller: SnmpPoller, engine: str) -> None:
    d = device(None, "dead", port=free_udp_port(), timeout_s=0.2, retries=1, engine=engine)
    recs = await poller.poll(d)
    assert [r.name for r in recs] == ["device.health"]
    assert recs[0].fields["up"] == 0 and recs[0].fields["reason"] == "timeout"
    assert recs[0].device == "dead"


@pytest.mark.parametrize("engine", ["pysnmp", "fast"])
async def test_wrong_community_times_out(snmpd: SnmpPeer, poller: SnmpPoller, engine) -> None:
    # net-snmp drops bad communities silently, so from outside this is a timeout
    recs = await poller.poll(device(snmpd, community="wrong", timeout_s=0.2, retries=0,
                                    engine=engine))
    assert recs[-1].fields["reason"] == "timeout"


@pytest.mark.parametrize("engine", ["pysnmp", "fast"])
@pytest.mark.parametrize("user", DEFAULT_USERS, ids=lambda u: u.name)
async def test_v3_matches_snmpget(snmpd: SnmpPeer, poller: SnmpPoller, user, engine) -> None:
    recs = await poller.poll(device(snmpd, options=v3_options(user, engine=engine)))
    want = snmpd.snmpget("1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.31.1.1.1.10.3", user=user)
    (system,) = by_name(recs, "snmp.system")
    assert system.fields["sys_name"] == want["1.3.6.1.2.1.1.5.0"]
    (if3,) = [r for r in by_name(recs, "if") if r.fields["if_index"] == 3]
    assert if3.fields["out_octets"] == int(want["1.3.6.1.2.1.31.1.1.1.10.3"])
    assert by_name(recs, "device.health")[0].fields["reason"] is None


@pytest.mark.parametrize("engine", ["pysnmp", "fast"])
@pytest.mark.parametrize("user", [DEFAULT_USERS[0], DEFAULT_USERS[2]], ids=lambda u: u.name)
async def test_v3_wrong_password(snmpd: SnmpPeer, poller: SnmpPoller, engine, user) -> None:
    u = dataclasses.replace(user, auth_key="not-the-password")
    recs = await poller.poll(device(snmpd, options=v3_options(u, timeout_s=10, retries=0,
                                                               engine=engine)))
    assert [r.name for r in recs] == ["device.health"]
    assert recs[0].fields["reason"] == "auth_failed"


@pytest.mark.parametrize("engine", ["pysnmp", "fast"])
async def test_v3_unknown_user(snmpd: SnmpPeer, poller: SnmpPoller, engine: str) -> None:
    u = dataclasses.replace(DEFAULT_USERS[0], name="nobody-here")
    recs = await poller.poll(device(snmpd, options=v3_options(u, timeout_s=10, retries=0,
                                                               engine=engine)))
    assert recs[0].fields["reason"] == "unknown_user"


@pytest.mark.parametrize("engine", ["pysnmp", "fast"])
async def test_snmpsim_recording(snmpsim: SnmpPeer, poller: SnmpPoller, engine: str) -> None:
    recs = await poller.poll(device(snmpsim, community="public", engine=engine))
    want = snmpsim.snmpget("1.3.6.1.2.1.1.5.0")
    assert by_name(recs, "snmp.system")[0].fields["sys_name"] == want["1.3.6.1.2.1.1.5.0"]
    assert by_name(recs, "device.health")[0].fields["up"] == 1


async def test_second_poll_adds_rates(snmpd: SnmpPeer, poller: SnmpPoller) -> None:
    await poller.poll(device(snmpd))
    recs = await poller.poll(device(snmpd))
    # the synthetic table's counters are constant: a rate of exactly zero, not None
    for r in by_name(recs, "if"):
        assert r.fields["in_octets_per_s"] == 0.0 and r.fields["out_errors_per_s"] == 0.0


def test_options_default() -> None:
    assert SnmpOptions().version == "2c"
