"""Every reversible mode round-trips through the Reidentifier; tokens only match candidates."""

from __future__ import annotations

import ipaddress

import pytest

from pipelines.pseudonym import PrivacyPolicy, PseudonymError, Pseudonymiser, TenantKey
from pipelines.pseudonym.reverse import Reidentifier

HEX = "0f" * 16 + "f0" * 16
ADDRS = ["192.0.2.1", "10.20.30.40", "2001:db8::1", "fe80::1234:5678", "::ffff:198.51.100.9",
         "127.0.0.1", "0.0.0.0"]


@pytest.mark.parametrize("mode", ["prefix", "ipcrypt", "ipcrypt-pfx", "ipcrypt-ndx"])
@pytest.mark.parametrize(("v4", "v6"), [(32, 128), (24, 64), (0, 0)])
def test_round_trip(mode: str, v4: int, v6: int) -> None:
    key = TenantKey.from_hex(HEX)
    pol = PrivacyPolicy(modes={"ip": mode}, preserve_prefix_v4=v4, preserve_prefix_v6=v6)
    p, r = Pseudonymiser(key, pol), Reidentifier(key, pol)
    for a in ADDRS:
        ps = p.ip(a)
        back = r.address(ps, mode)
        expect = a if mode == "prefix" or not a.startswith("::ffff:") else a[7:]
        assert back == expect, (mode, a, ps)


def test_preserved_prefix_keeps_the_prefix_only() -> None:
    p = Pseudonymiser(TenantKey.from_hex(HEX), PrivacyPolicy(preserve_prefix_v4=24))
    outs = [int.from_bytes(bytes(int(o) for o in p.ip(f"192.0.2.{h}").split(".")), "big")
            for h in range(16)]
    assert len({o >> 8 for o in outs}) == 1
    assert len({o >> 4 for o in outs}) > 1


def test_mac_and_token_reversal() -> None:
    key = TenantKey.from_hex(HEX)
    p, r = Pseudonymiser(key), Reidentifier(key)
    assert r.mac(p.mac("00-1A-2B-3C-4D-5E")) == "00:1a:2b:3c:4d:5e"
    tok = p.token("core-rtr-1")
    assert r.token(tok, ["edge", "core-rtr-1"]) == "core-rtr-1"
    assert r.token(tok, ["edge"]) is None
    assert r.token(p.token("192.0.2.1"), ["192.000.002.001"]) == "192.000.002.001"
    other = Reidentifier(TenantKey.from_hex("1f" + HEX[2:]))
    with pytest.raises(PseudonymError, match="another key"):
        other.token(tok, ["core-rtr-1"])


@pytest.mark.parametrize(("text", "mode", "why"), [
    ("not-an-address", "prefix", "not an address"),
    ("abcd", "ipcrypt-ndx", "64 hex"),
    ("192.0.2.1", "token", "mode must be one of"),
    ("zz:zz", "mac", "not a MAC"),
])
def test_bad_input_is_a_clear_error(text: str, mode: str, why: str) -> None:
    with pytest.raises(PseudonymError, match=why):
        Reidentifier(TenantKey.from_hex(HEX)).address(text, mode)


@pytest.mark.parametrize("mode", ["prefix", "ipcrypt-pfx"])
def test_pseudonyms_never_land_in_kept_ranges_and_still_reverse(mode: str) -> None:
    half = ipaddress.ip_network("0.0.0.0/1")
    pol = PrivacyPolicy(modes={"ip": mode}, passthrough=(half,))
    key = TenantKey.from_hex(HEX)
    p, r = Pseudonymiser(key, pol), Reidentifier(key, pol)
    assert p.ip("10.0.0.1") == "10.0.0.1"
    seen = set()
    for i in range(200):
        raw = f"{128 + i % 100}.{i}.7.{i % 250 + 1}"
        ps = p.ip(raw)
        assert ipaddress.IPv4Address(ps) not in half
        assert r.address(ps, mode) == raw
        seen.add(ps)
    assert len(seen) == 200
