"""Profiles: built-ins load, each bad file is refused with its message, records match the agent."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import by_name, device
from peers.snmpd import SnmpPeer, run_snmpsim

from agents.snmp.poller import SnmpPoller
from agents.snmp.profiles import BUILTIN_DIR, load_profiles, parse_profile, select, table_rows
from pipelines.config import ConfigError

DATA = Path(__file__).with_name("testdata")
BAD = sorted(DATA.glob("profile_bad_*.toml"))


def test_builtin_profiles_load() -> None:
    ps = load_profiles([BUILTIN_DIR])
    assert {"system", "if-mib", "host-resources", "ucd-snmp", "ip-mib", "entity-mib",
            "entity-sensor", "cisco"} <= set(ps)
    net_snmp = (1, 3, 6, 1, 4, 1, 8072, 3, 2, 10)
    chosen = {p.name for p in select(ps, [], net_snmp)}
    assert "ucd-snmp" in chosen and "cisco" not in chosen
    assert "cisco" in {p.name for p in select(ps, [], (1, 3, 6, 1, 4, 1, 9, 1, 1208))}
    with pytest.raises(KeyError, match="unknown SNMP profile 'nope'"):
        select(ps, ["nope"], None)


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem.removeprefix("profile_bad_"))
def test_bad_profile(path: Path) -> None:
    text = path.read_text()
    expect = text.splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as e:
        parse_profile(text, "p.toml")
    assert str(e.value).startswith(f"p.toml: {expect}")


def test_missing_profile_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profile directory does not exist"):
        load_profiles([tmp_path / "nope"])


async def test_host_profiles_match_net_snmp_tools(snmpd: SnmpPeer) -> None:
    poller = SnmpPoller()
    try:
        recs = await poller.poll(device(snmpd, profiles=["system", "ucd-snmp",
                                                         "host-resources", "ip-mib"]))
    finally:
        await poller.close()
    assert by_name(recs, "if") == []  # if-mib not named, not walked
    (mem,) = by_name(recs, "host.memory")
    total_kb = snmpd.snmpget("1.3.6.1.4.1.2021.4.5.0")["1.3.6.1.4.1.2021.4.5.0"]
    assert mem.fields["mem_total_bytes"] == int(total_kb.split()[0]) * 1024
    assert 0 < mem.fields["mem_used_bytes"] < mem.fields["mem_total_bytes"]
    descr = snmpd.cli("snmpbulkwalk", "-Oq", "1.3.6.1.2.1.25.2.3.1.3").splitlines()
    storage = by_name(recs, "host.storage")
    assert [r.fields["descr"] for r in storage] == [line.split(" ", 1)[1].strip('"')
                                                    for line in descr]
    assert all(r.fields["size_bytes"] is not None for r in storage)
    loads = by_name(recs, "host.load")
    assert [r.fields["name"] for r in loads] == ["Load-1", "Load-5", "Load-15"]
    addrs = snmpd.cli("snmpbulkwalk", "-Oq", "1.3.6.1.2.1.4.20.1.1").splitlines()
    got = {r.fields["address_ip"] for r in by_name(recs, "ip.address")}
    assert got == {line.split()[1] for line in addrs} and "127.0.0.1" in got
    assert by_name(recs, "device.health")[0].fields["reason"] is None


async def test_cisco_recording_entity_sensor_and_32bit_fallback() -> None:
    with run_snmpsim(recordings=(), files={"cisco": DATA / "cisco-router.snmprec"}) as sim:
        poller = SnmpPoller()
        try:
            d = device(sim, "rtr", community="cisco", profiles=())  # chosen by sysObjectID
            first = await poller.poll(d)
            second = await poller.poll(d)
        finally:
            await poller.close()
    (cpu,) = by_name(first, "host.cpu")
    assert cpu.fields == {"cpu_util_pct": 20.0, "cpus": 2}
    (mem,) = by_name(first, "host.memory")
    assert mem.fields == {"mem_used_bytes": 64_000_000, "mem_total_bytes": 120_000_000}
    chassis = [r for r in by_name(first, "entity.physical") if r.fields["class"] == "chassis"]
    assert chassis[0].fields["serial"] == "FTX1234ABCD"
    assert chassis[0].kind.value == "inventory"
    (temp,) = by_name(first, "entity.sensor")
    assert temp.fields["sensor_type"] == "celsius" and temp.fields["value"] == 45.3
    ifs = {r.fields["if_index"]: r.fields for r in by_name(second, "if")}
    # no ifXTable on this device: the 32-bit counters are used, and said to be
    assert ifs[1]["counter_bits"] == 32 and ifs[1]["in_octets"] == 4_000_000_000
    assert ifs[1]["in_octets_per_s"] == 0.0  # same recording twice: no change, no bogus wrap
    assert ifs[2]["oper_status"] == 2 and ifs[1]["speed_bps"] == 100_000_000
    assert by_name(first, "snmp.system")[0].fields["sys_name"] == "edge-rtr-01"


async def test_operator_adds_a_profile_without_code(snmpd: SnmpPeer, tmp_path: Path) -> None:
    (tmp_path / "site-info.toml").write_text('''
name = "site-info"
[[scalars]]
record = "site.info"
kind = "inventory"
fields = [
  { name = "contact", oid = "1.3.6.1.2.1.1.4.0", type = "string" },
  { name = "interfaces", oid = "1.3.6.1.2.1.2.1.0", type = "integer" },
  { name = "missing", oid = "1.3.6.1.2.1.1.99.0", type = "integer" },
]
compute = { interfaces_x2 = "interfaces * 2", nothing = "missing + 1" }
''')
    poller = SnmpPoller(profiles=load_profiles([BUILTIN_DIR, tmp_path]))
    try:
        recs = await poller.poll(device(snmpd, profiles=["site-info"]))
    finally:
        await poller.close()
    (info,) = by_name(recs, "site.info")
    want = snmpd.snmpget("1.3.6.1.2.1.2.1.0")["1.3.6.1.2.1.2.1.0"]
    assert info.fields["contact"] == "noc@example.invalid"
    assert info.fields["interfaces_x2"] == 2 * int(want) == 2 * snmpd.interfaces
    assert info.fields["missing"] is None and info.fields["nothing"] is None


def test_sensor_exponent_from_device_is_bounded() -> None:
    p = parse_profile((BUILTIN_DIR / "entity-sensor.toml").read_text(), "s.toml")
    g = p.groups[0]
    e = g.entry
    rows = table_rows(g, [((*e, 1, 5), 2, 8), ((*e, 2, 5), 2, 9), ((*e, 3, 5), 2, 10**9),
                          ((*e, 4, 5), 2, 7)])
    assert rows[0]["value"] is None  # 10 ** 1e9 is refused, not computed
