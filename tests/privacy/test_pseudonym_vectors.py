"""Reference vectors: our Crypto-PAn and IPCrypt must equal the published outputs."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.pseudonym.cryptopan import CryptoPAn, LimitedPrefix
from pipelines.pseudonym.errors import KeyMaterialError
from pipelines.pseudonym.ipcrypt import Deterministic, Ndx, Pfx

# The key of the Crypto-PAn source distribution's sample trace.
CPAN_KEY = bytes([21, 34, 23, 141, 51, 164, 207, 128, 19, 10, 91, 22, 73, 144, 125, 16,
                  216, 152, 143, 131, 121, 121, 101, 39, 98, 87, 76, 45, 42, 132, 34, 2])

# Address pairs of sample_trace_raw.dat / sample_trace_sanitized.dat (reference distribution).
CPAN_V4 = [
    ("128.11.68.132", "135.242.180.132"), ("129.118.74.4", "134.136.186.123"),
    ("130.132.252.244", "133.68.164.234"), ("141.223.7.43", "141.167.8.160"),
    ("141.233.145.108", "141.129.237.235"), ("152.163.225.39", "151.140.114.167"),
    ("156.29.3.236", "147.225.12.42"), ("165.247.96.84", "162.9.99.234"),
    ("166.107.77.190", "160.132.178.185"), ("192.102.249.13", "252.138.62.131"),
    ("192.215.32.125", "252.43.47.189"), ("192.233.80.103", "252.25.108.8"),
    ("192.41.57.43", "252.222.221.184"), ("193.150.244.223", "253.169.52.216"),
    ("195.205.63.100", "255.186.223.5"), ("198.200.171.101", "249.199.68.213"),
    ("198.26.132.101", "249.36.123.202"), ("198.36.213.5", "249.7.21.132"),
    ("198.51.77.238", "249.18.186.254"), ("199.217.79.101", "248.38.184.213"),
    ("202.49.198.20", "245.206.7.234"), ("203.12.160.252", "244.248.163.4"),
    ("204.184.162.189", "243.192.77.90"), ("204.202.136.230", "243.178.4.198"),
    ("204.29.20.4", "243.33.20.123"), ("205.178.38.67", "242.108.198.51"),
    ("205.188.147.153", "242.96.16.101"), ("205.188.248.25", "242.96.88.27"),
    ("205.245.121.43", "242.21.121.163"), ("207.105.49.5", "241.118.205.138"),
    ("207.135.65.238", "241.202.129.222"), ("207.155.9.214", "241.220.250.22"),
    ("207.188.7.45", "241.255.249.220"), ("207.25.71.27", "241.33.119.156"),
    ("207.33.151.131", "241.1.233.131"), ("208.147.89.59", "227.237.98.191"),
    ("208.234.120.210", "227.154.67.17"), ("208.28.185.184", "227.39.94.90"),
    ("208.52.56.122", "227.8.63.165"), ("209.12.231.7", "226.243.167.8"),
    ("209.238.72.3", "226.6.119.243"), ("209.246.74.109", "226.22.124.76"),
    ("209.68.60.238", "226.184.220.233"), ("209.85.249.6", "226.170.70.6"),
    ("212.120.124.31", "228.135.163.231"), ("212.146.8.236", "228.19.4.234"),
    ("212.186.227.154", "228.59.98.98"), ("212.204.172.118", "228.71.195.169"),
    ("212.206.130.201", "228.69.242.193"), ("216.148.237.145", "235.84.194.111"),
    ("216.157.30.252", "235.89.31.26"), ("216.184.159.48", "235.96.225.78"),
    ("216.227.10.221", "235.28.253.36"), ("216.254.18.172", "235.7.16.162"),
    ("216.32.132.250", "235.192.139.38"), ("216.35.217.178", "235.195.157.81"),
    ("24.0.250.221", "100.15.198.226"), ("24.13.62.231", "100.2.192.247"),
    ("24.14.213.138", "100.1.42.141"), ("24.5.0.80", "100.9.15.210"),
    ("24.7.198.88", "100.10.6.25"), ("24.94.26.44", "100.88.228.35"),
    ("38.15.67.68", "64.3.66.187"), ("4.3.88.225", "124.60.155.63"),
    ("63.14.55.111", "95.9.215.7"), ("63.195.241.44", "95.179.238.44"),
    ("63.97.7.140", "95.97.9.123"), ("64.14.118.196", "0.255.183.58"),
    ("64.34.154.117", "0.221.154.117"), ("64.39.15.238", "0.219.7.41"),
    ("10.185.25.118", "117.161.29.118"),
]
# The same construction over 128 bits, as the common ports (Go, Python) compute it.
CPAN_V6 = [
    ("::1", "78ff:f001:9fc0:20df:8380:b1f1:704:ed"),
    ("::2", "78ff:f001:9fc0:20df:8380:b1f1:704:ef"),
    ("::ffff", "78ff:f001:9fc0:20df:8380:b1f1:704:f838"),
    ("2001:db8::1", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1e"),
    ("2001:db8::2", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1c"),
]


@pytest.fixture(scope="module")
def cpan() -> CryptoPAn:
    return CryptoPAn(CPAN_KEY)


@pytest.mark.parametrize(("raw", "expected"), CPAN_V4)
def test_cryptopan_ipv4_equals_the_reference_sample_trace(cpan: CryptoPAn, raw: str,
                                                          expected: str) -> None:
    out = cpan.encrypt(int(ipaddress.IPv4Address(raw)), 32)
    assert str(ipaddress.IPv4Address(out)) == expected
    assert cpan.decrypt(out, 32) == int(ipaddress.IPv4Address(raw))


@pytest.mark.parametrize(("raw", "expected"), CPAN_V6)
def test_cryptopan_ipv6_equals_the_common_128_bit_extension(cpan: CryptoPAn, raw: str,
                                                            expected: str) -> None:
    out = cpan.encrypt(int(ipaddress.IPv6Address(raw)), 128)
    assert str(ipaddress.IPv6Address(out)) == expected
    assert cpan.decrypt(out, 128) == int(ipaddress.IPv6Address(raw))


def test_cryptopan_preserves_exactly_the_common_prefix(cpan: CryptoPAn) -> None:
    pairs = [("10.1.2.3", "10.1.2.200", 24), ("10.1.2.3", "10.1.130.3", 16),
             ("10.1.2.3", "138.1.2.3", 0)]
    for a, b, shared in pairs:
        x, y = (cpan.encrypt(int(ipaddress.IPv4Address(v)), 32) for v in (a, b))
        common = 32 - (x ^ y).bit_length()
        assert common == shared


def test_limited_prefix_keeps_the_prefix_and_hides_host_structure(cpan: CryptoPAn) -> None:
    lp = LimitedPrefix(cpan, CryptoPAn(bytes(range(32))), 32, 24)
    base = int(ipaddress.IPv4Address("192.0.2.0"))
    outs = [lp.encrypt(base + h) for h in range(256)]
    assert len({o >> 8 for o in outs}) == 1
    assert len(set(outs)) == 256
    assert [lp.decrypt(o) for o in outs] == [base + h for h in range(256)]
    # full Crypto-PAn keeps .0-.15 inside one /28; the limited form must not
    same28 = {o >> 4 for o in outs[:16]}
    assert len(same28) > 1


def test_cryptopan_rejects_a_short_key() -> None:
    with pytest.raises(KeyMaterialError, match="32-byte"):
        CryptoPAn(b"short")


# draft-denis-ipcrypt, test vectors appendix
DET = [
    ("0123456789abcdeffedcba9876543210", "0.0.0.0", "bde9:6789:d353:824c:d7c6:f58a:6bd2:26eb"),
    ("1032547698badcfeefcdab8967452301", "255.255.255.255",
     "aed2:92f6:ea23:58c3:48fd:8b8:74e8:45d8"),
    ("2b7e151628aed2a6abf7158809cf4f3c", "192.0.2.1", "1dbd:c1b9:fff1:7586:7d0b:67b4:e76e:4777"),
]
NDX = [
    ("0123456789abcdeffedcba98765432101032547698badcfeefcdab8967452301", "0.0.0.0",
     "21bd1834bc088cd2b4ecbe30b70898d7",
     "21bd1834bc088cd2b4ecbe30b70898d782db0d4125fdace61db35b8339f20ee5"),
    ("1032547698badcfeefcdab89674523010123456789abcdeffedcba9876543210", "192.0.2.1",
     "08e0c289bff23b7cb4ecbe30b70898d7",
     "08e0c289bff23b7cb4ecbe30b70898d7766a533392a69edf1ad0d3ce362ba98a"),
    ("2b7e151628aed2a6abf7158809cf4f3c3c4fcf098815f7aba6d2ae2816157e2b", "2001:db8::1",
     "21bd1834bc088cd2b4ecbe30b70898d7",
     "21bd1834bc088cd2b4ecbe30b70898d76089c7e05ae30c2d10ca149870a263e4"),
]
K1 = "0123456789abcdeffedcba98765432101032547698badcfeefcdab8967452301"
K2 = "2b7e151628aed2a6abf7158809cf4f3ca9f5ba40db214c3798f2e1c23456789a"
PFX = [
    (K1, "0.0.0.0", "151.82.155.134"),
    (K1, "255.255.255.255", "94.185.169.89"),
    (K1, "192.0.2.1", "100.115.72.131"),
    (K1, "2001:db8::1", "c180:5dd4:2587:3524:30ab:fa65:6ab6:f88"),
    (K2, "10.0.0.47", "19.214.210.244"),
    (K2, "10.0.0.129", "19.214.210.80"),
    (K2, "10.0.0.234", "19.214.210.30"),
    (K2, "172.16.5.193", "210.78.229.136"),
    (K2, "172.16.97.42", "210.78.179.241"),
    (K2, "172.16.248.177", "210.78.121.215"),
    (K2, "2001:db8::a5c9:4e2f:bb91:5a7d", "7cec:702c:1243:f70:1956:125:b9bd:1aba"),
    (K2, "2001:db8::7234:d8f1:3c6e:9a52", "7cec:702c:1243:f70:a3ef:c8e:95c1:cd0d"),
    (K2, "2001:db8::f1e0:937b:26d4:8c1a", "7cec:702c:1243:f70:443c:c8e:6a62:b64d"),
    (K2, "2001:db8:3a5c:0:e7d1:4b9f:2c8a:f673", "7cec:702c:3503:bef:e616:96bd:be33:a9b9"),
    (K2, "2001:db8:9f27:0:b4e2:7a3d:5f91:c8e6", "7cec:702c:a504:b74e:194a:3d90:b047:2d1a"),
    (K2, "2001:db8:d8b4:0:193c:a5e7:8b2f:46d1", "7cec:702c:f840:aa67:1b8:e84f:ac9d:77fb"),
]


@pytest.mark.parametrize(("key", "ip", "expected"), DET)
def test_ipcrypt_deterministic_vectors(key: str, ip: str, expected: str) -> None:
    d = Deterministic(bytes.fromhex(key))
    out = d.encrypt(ipaddress.ip_address(ip))
    assert str(out) == expected
    assert str(d.decrypt(out)) == ip


@pytest.mark.parametrize(("key", "ip", "tweak", "expected"), NDX)
def test_ipcrypt_ndx_vectors(key: str, ip: str, tweak: str, expected: str) -> None:
    n = Ndx(bytes.fromhex(key))
    out = n.encrypt(ipaddress.ip_address(ip), bytes.fromhex(tweak))
    assert out.hex() == expected
    assert str(n.decrypt(out)) == ip


def test_ipcrypt_ndx_never_repeats_itself() -> None:
    n = Ndx(bytes.fromhex(NDX[0][0]))
    a = ipaddress.ip_address("192.0.2.1")
    outs = {n.encrypt(a) for _ in range(50)}
    assert len(outs) == 50
    assert {str(n.decrypt(o)) for o in outs} == {"192.0.2.1"}


@pytest.mark.parametrize(("key", "ip", "expected"), PFX)
def test_ipcrypt_pfx_vectors(key: str, ip: str, expected: str) -> None:
    p = Pfx(bytes.fromhex(key))
    out = p.encrypt(ipaddress.ip_address(ip))
    assert str(out) == expected
    assert str(p.decrypt(out)) == ip


@pytest.mark.parametrize("cls", [Ndx, Pfx])
def test_ipcrypt_two_key_modes_refuse_equal_halves(cls: type) -> None:
    with pytest.raises(KeyMaterialError, match="two different halves"):
        cls(bytes(16) * 2)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_cryptopan_v4_is_a_prefix_preserving_bijection(a: int, b: int) -> None:
    c = CryptoPAn(CPAN_KEY)
    x, y = c.encrypt(a, 32), c.encrypt(b, 32)
    assert 32 - (x ^ y).bit_length() == 32 - (a ^ b).bit_length()
    assert c.decrypt(x, 32) == a


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**128 - 1), st.integers(0, 128))
def test_cryptopan_v6_shares_exactly_the_common_prefix(a: int, flip: int) -> None:
    c = CryptoPAn(CPAN_KEY)
    b = a ^ (1 << (128 - flip)) if flip else a ^ (1 << 127)
    b &= (1 << 128) - 1
    x, y = c.encrypt(a, 128), c.encrypt(b, 128)
    assert (x ^ y).bit_length() == (a ^ b).bit_length()
    assert c.decrypt(x, 128) == a
