"""The pseudonymiser on records, keys, policy and the leak guard."""

from __future__ import annotations

import ipaddress
import pickle

import pytest

from pipelines.config import ConfigError, parse_toml
from pipelines.pseudonym import (
    FieldClass,
    KeyMaterialError,
    KeyRing,
    PolicyError,
    PrivacyPolicy,
    Pseudonymiser,
    TenantKey,
    classify,
    rotation_due,
)
from pipelines.pseudonym.leakguard import count_leaks, find_leaks, normalise
from pipelines.record import Kind, Record

HEX = "00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef"


def rec(name: str = "snmp.system", **fields: object) -> Record:
    return Record(kind=Kind.INVENTORY, tenant="acme", site="hq", device="core-rtr-1",
                  name=name, fields=fields)  # type: ignore[arg-type]


@pytest.fixture
def p() -> Pseudonymiser:
    return Pseudonymiser(TenantKey.from_hex(HEX, epoch=2))


def test_key_repr_and_errors_never_show_the_secret() -> None:
    k = TenantKey.from_hex(HEX, epoch=7)
    for text in (repr(k), str(k), f"{k}"):
        assert "0011223344" not in text and k.key_id in text and "epoch=7" in text
    for bad in ("zz" * 32, HEX[:-2], HEX + "00", ""):
        with pytest.raises(KeyMaterialError) as e:
            TenantKey.from_hex(bad)
        assert bad[:10] not in str(e.value) or not bad
    with pytest.raises(TypeError):
        pickle.dumps(k)


def test_key_id_is_stable_and_distinct() -> None:
    a, b = TenantKey.from_hex(HEX), TenantKey.from_hex(HEX, epoch=2)
    c = TenantKey.from_hex("ff" + HEX[2:])
    assert a.key_id == b.key_id != c.key_id
    assert len(a.key_id) == 16 and a.key_id not in HEX
    with pytest.raises(KeyMaterialError, match="halves"):
        TenantKey(bytes(32))


def test_key_ring_rotation_keeps_old_keys_for_reidentification() -> None:
    ring = KeyRing([TenantKey.from_hex(HEX, epoch=1)])
    old = ring.current
    new = ring.rotate()
    assert new.epoch == 2 and ring.current is new and len(ring) == 2
    assert ring.get(old.key_id) is old
    with pytest.raises(KeyMaterialError, match="no key"):
        ring.get("0" * 16)
    assert rotation_due(created_at=0, period_s=86400, now=86400)
    assert not rotation_due(created_at=0, period_s=86400, now=100)


def test_record_fields_follow_their_class(p: Pseudonymiser) -> None:
    r = rec(sys_descr="IOS at 10.1.2.3 via fe80::1%Gi0/1", sys_name="core-rtr-1.example.net",
            sys_object_id="1.3.6.1.4.1.9.1.1", uptime_s=123, mgmt_addr="192.0.2.10",
            peer_ip="2001:db8::5", custom_note="peer 198.51.100.7 down",
            base_mac="00:1a:2b:3c:4d:5e", up=True, reason=None)
    o = p.record(r)
    f = o.fields
    assert o.id == r.id and o.device.startswith("tk-") and o.device != r.device
    assert f["pkid"] == p.key_id
    assert f["uptime_s"] == 123 and f["sys_object_id"] == "1.3.6.1.4.1.9.1.1"
    assert f["up"] is True and f["reason"] is None
    assert str(f["sys_name"]).startswith("tk-")
    for k in ("mgmt_addr", "peer_ip"):
        assert f[k] != r.fields[k]
        ipaddress.ip_address(str(f[k]))
    assert "10.1.2.3" not in str(f["sys_descr"]) and "fe80::1%" not in str(f["sys_descr"])
    assert str(f["sys_descr"]).startswith("IOS at ") and str(f["sys_descr"]).endswith("%Gi0/1")
    assert "198.51.100.7" not in str(f["custom_note"])
    assert f["base_mac"] != "00:1a:2b:3c:4d:5e"
    assert find_leaks([o], p) == []
    assert {name for _, name in find_leaks([r], p)} == {  # sys_name: a host name it learnt
        "sys_descr", "mgmt_addr", "peer_ip", "custom_note", "base_mac", "sys_name"}


def test_every_contract_field_has_a_class() -> None:
    contract = ["up", "reason", "protocol", "poll_duration_s", "uptime_s", "sys_descr",
                "sys_object_id", "sys_name", "if_index", "if_descr", "if_name", "if_alias",
                "in_octets", "out_octets", "in_errors", "out_errors", "in_discards",
                "out_discards", "oper_status", "admin_status", "speed_bps", "cpu_util_pct",
                "mem_used_bytes", "mem_total_bytes"]
    assert all(classify(n) is not None for n in contract)
    assert classify("sys_name") is FieldClass.IDENTIFIER
    assert classify("if_alias") is FieldClass.TEXT
    assert classify("in_octets") is FieldClass.MEASUREMENT
    for n in ("src_addr", "address", "ip", "nexthop", "peer_address", "ipv6"):
        assert classify(n) is FieldClass.IP
    assert classify("brand_new_field") is None


def test_unknown_string_fields_are_scrubbed_not_passed(p: Pseudonymiser) -> None:
    o = p.record(rec(whatever="10.20.30.40", count=5))
    assert o.fields["whatever"] != "10.20.30.40" and o.fields["count"] == 5
    assert find_leaks([o], p) == []


def test_prefix_structure_survives_pseudonymisation(p: Pseudonymiser) -> None:
    a, b, c = (ipaddress.IPv4Address(p.ip(x)) for x in ("10.1.2.3", "10.1.2.77", "10.9.0.1"))
    assert int(a) >> 8 == int(b) >> 8
    assert int(a) >> 16 != int(c) >> 16 or int(a) >> 8 != int(c) >> 8
    assert p.ip("::ffff:10.1.2.3") == "::ffff:" + str(a)
    assert p.ip("10.1.2.3") == str(a)


def test_special_addresses_and_passthrough() -> None:
    p = Pseudonymiser(TenantKey.from_hex(HEX))
    for keep in ("0.0.0.0", "255.255.255.255", "255.255.255.0", "0.0.0.255", "::"):
        assert p.ip(keep) == keep
    assert p.ip("127.0.0.1") != "127.0.0.1"
    q = Pseudonymiser(TenantKey.from_hex(HEX), PrivacyPolicy(
        passthrough=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))))
    assert q.ip("127.0.0.1") == "127.0.0.1" and q.ip("::1") == "::1"
    assert q.ip("10.0.0.1") != "10.0.0.1"
    assert find_leaks([rec(note="lo 127.0.0.1 mask 255.255.255.0")], q) == []


def test_token_mode_and_text_modes() -> None:
    pol = PrivacyPolicy(modes={"ip": "token", "text": "drop"})
    p = Pseudonymiser(TenantKey.from_hex(HEX), pol)
    o = p.record(rec(mgmt_addr="192.0.2.1", sys_descr="anything 192.0.2.1"))
    assert str(o.fields["mgmt_addr"]).startswith("tk-") and o.fields["sys_descr"] is None
    assert p.token("x") == p.token("x") != p.token("y")
    other = Pseudonymiser(TenantKey.from_hex("ff" + HEX[2:]))
    assert other.token("x") != p.token("x")


def test_ndx_mode_is_unlinkable_and_never_cached() -> None:
    p = Pseudonymiser(TenantKey.from_hex(HEX), PrivacyPolicy(modes={"text_ip": "ipcrypt-ndx"}))
    a, b = p.text("from 192.0.2.1"), p.text("from 192.0.2.1")
    assert a != b and "192.0.2.1" not in a + b


def test_geo_is_coarsened_and_precision_stated(p: Pseudonymiser) -> None:
    o = p.record(rec(lat=52.520008, lon=13.404954,
                     sys_location="Rack 4, 12 Main St, Berlin, Germany"))
    f = o.fields
    assert abs(float(f["lat"]) - 52.520008) < 0.1 and f["lat"] != 52.520008  # type: ignore[arg-type]
    assert f["sys_location"] == "Berlin, Germany" and f["geo_level"] == "region"
    assert f["geo_precision_km"] == 10.0
    near = p.record(rec(lat=52.5201, lon=13.4051)).fields
    assert (near["lat"], near["lon"]) == (f["lat"], f["lon"])
    c = Pseudonymiser(TenantKey.from_hex(HEX), PrivacyPolicy(place_level="country"))
    assert c.record(rec(location="a, b, Germany")).fields["location"] == "Germany"
    with pytest.raises(PolicyError, match="at least 1"):
        PrivacyPolicy(geo_grid_km=0.5)


def test_policy_from_section() -> None:
    root = parse_toml("""
[privacy]
preserve_prefix_v4 = 24
passthrough = ["127.0.0.0/8"]
geo_grid_km = 25
[privacy.modes]
text_ip = "ipcrypt-pfx"
[privacy.fields]
serial = "identifier"
""", "agent.toml")
    pol = PrivacyPolicy.from_section(root.section("privacy"))
    assert pol.preserve_prefix_v4 == 24 and pol.geo_grid_km == 25.0
    assert pol.modes["text_ip"] == "ipcrypt-pfx" and pol.modes["ip"] == "prefix"
    assert pol.fields == {"serial": FieldClass.IDENTIFIER}
    p = Pseudonymiser(TenantKey.from_hex(HEX), pol)
    assert str(p.record(rec(serial="FOC123")).fields["serial"]).startswith("tk-")


@pytest.mark.parametrize(("body", "where"), [
    ("bogus = 1", "privacy.bogus: unknown key"),
    ("geo_grid_km = 0.1", "privacy.geo_grid_km: must be at least 1"),
    ("preserve_prefix_v4 = 33", "privacy.preserve_prefix_v4"),
    ('passthrough = ["not-a-net"]', "privacy.passthrough[0]"),
    ('[privacy.modes]\nip = "md5"', "privacy.modes.ip: must be one of"),
    ('[privacy.fields]\nx = "secret"', "privacy.fields.x: must be one of"),
])
def test_bad_privacy_config_names_the_key(body: str, where: str) -> None:
    root = parse_toml("[privacy]\n" + body, "agent.toml")
    with pytest.raises(ConfigError, match=where.replace("[", r"\[").replace("]", r"\]")):
        PrivacyPolicy.from_section(root.section("privacy"))


def test_leak_guard_catches_a_field_added_after_pseudonymising(p: Pseudonymiser) -> None:
    o = p.record(rec(mgmt_addr="192.0.2.10"))
    bad = o.with_fields({**o.fields, "late": "seen 192.0.2.10"})
    assert find_leaks([o, bad], p) == [(bad.id, "late")]
    # a pseudonym copied elsewhere is still a pseudonym
    copy = o.with_fields({**o.fields, "copy": f"x {o.fields['mgmt_addr']}"})
    assert find_leaks([copy], p) == []
    # and a fresh pseudonymiser (another epoch) did not produce it
    q = Pseudonymiser(TenantKey.from_hex("ff" + HEX[2:]))
    assert find_leaks([o], q) == [(o.id, "mgmt_addr")]


def test_leak_guard_with_a_raw_list() -> None:
    raw = {normalise("192.0.2.10"), normalise("2001:DB8::0001"), normalise("00-1A-2B-3C-4D-5E")}
    assert None not in raw
    assert count_leaks(["a 192.0.2.10 b", "c 2001:db8::1 d 001a.2b3c.4d5e", "203.0.113.9"],
                       raw=raw) == 3  # type: ignore[arg-type]
    assert find_leaks([rec(x="198.51.100.1")], raw=raw) == []  # type: ignore[arg-type]


def test_cache_rotation_keeps_guard_consistent() -> None:
    p = Pseudonymiser(TenantKey.from_hex(HEX), PrivacyPolicy(cache_size=16))
    first = p.record(rec(mgmt_addr="192.0.2.1", note="x 192.0.2.1"))
    for i in range(40):
        p.ip(f"198.51.100.{i}")
    again = p.record(rec(mgmt_addr="192.0.2.1", note="x 192.0.2.1"))
    assert again.fields["mgmt_addr"] == first.fields["mgmt_addr"]
    assert find_leaks([again], p) == []


def test_rotation_changes_every_pseudonym_and_pkid_says_which_key() -> None:
    ring = KeyRing([TenantKey.from_hex(HEX, epoch=1)])
    old = Pseudonymiser(ring.current)
    new = Pseudonymiser(ring.rotate())
    r = rec(mgmt_addr="192.0.2.10", sys_name="core-rtr-1", note="from 2001:db8::7")
    a, b = old.record(r), new.record(r)
    assert a.fields["pkid"] == old.key_id != b.fields["pkid"] == new.key_id
    for k in ("mgmt_addr", "sys_name", "note"):
        assert a.fields[k] != b.fields[k]
    assert a.device != b.device
    # the old epoch's pseudonymiser did not make the new pseudonyms: its guard flags them
    assert {name for _, name in find_leaks([b], old)} == {"mgmt_addr", "note"}


def test_ndx_for_structured_ip_fields_is_hex_and_not_an_address() -> None:
    p = Pseudonymiser(TenantKey.from_hex(HEX), PrivacyPolicy(modes={"ip": "ipcrypt-ndx"}))
    a = p.record(rec(mgmt_addr="192.0.2.1")).fields["mgmt_addr"]
    b = p.record(rec(mgmt_addr="192.0.2.1")).fields["mgmt_addr"]
    assert isinstance(a, str) and len(a) == 64 and a != b
    assert normalise(a) is None


def test_geo_precision_is_stated_only_for_what_is_present() -> None:
    p = Pseudonymiser(TenantKey.from_hex(HEX))
    only_place = p.record(rec(sys_location="Hall 2, Lyon, France")).fields
    assert "geo_precision_km" not in only_place and only_place["geo_level"] == "region"
    drop = Pseudonymiser(TenantKey.from_hex(HEX), PrivacyPolicy(modes={"geo": "drop"}))
    f = drop.record(rec(lat=1.0, lon=2.0, sys_location="x, y")).fields
    assert f["lat"] is None and f["lon"] is None and f["sys_location"] is None
    assert "geo_precision_km" not in f and "geo_level" not in f


def test_normalise_reads_the_forms_an_operator_writes() -> None:
    assert normalise("[2001:DB8::0001]:443") == "2001:db8::1"
    assert normalise("010.000.000.001") == "10.0.0.1"
    assert normalise("0000:0000:0000:0000:0000:ffff:0a00:0001") == "::ffff:10.0.0.1"
    assert normalise("001A.2B3C.4D5E") == "00:1a:2b:3c:4d:5e"
    assert normalise("no address") is None
