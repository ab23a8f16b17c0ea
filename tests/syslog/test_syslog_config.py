"""`[syslog]` read strictly; senders mapped to configured devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.pollers import Device
from agents.syslog.config import parse_syslog_config
from agents.syslog.senders import Senders, canonical_address
from pipelines.config import ConfigError, parse_toml


def parse(text: str, base: Path = Path(".")):
    return parse_syslog_config(parse_toml(text, "agent.toml").section("syslog"), base=base)


def test_defaults_are_unprivileged_udp_and_tcp(tmp_path: Path) -> None:
    cfg = parse("[syslog]\n")
    assert [(ls.protocol, ls.address, ls.port) for ls in cfg.listeners] == [
        ("udp", "0.0.0.0", 5514), ("tcp", "0.0.0.0", 5514)]
    assert cfg.unknown == "accept" and cfg.max_message_size == 8192
    cfg = parse('[syslog]\n[[syslog.listeners]]\nprotocol = "tls"\n'
                '[syslog.tls]\ncert_file = "c"\nkey_file = "k"\n', base=_files(tmp_path))
    assert cfg.listeners[0].port == 6514 and cfg.tls is not None


def _files(d: Path) -> Path:
    (d / "c").write_text("x")
    (d / "k").write_text("x")
    return d


@pytest.mark.parametrize(("text", "key"), [
    ('[syslog]\nunknown = "maybe"\n', "syslog.unknown"),
    ('[syslog]\nmax_message_size = 100000\n', "syslog.max_message_size"),
    ('[syslog]\ntimezone = "Mars/Olympus"\n', "syslog.timezone"),
    ('[syslog]\n[[syslog.listeners]]\nprotocol = "tls"\n', "syslog.tls"),
    ('[syslog]\n[[syslog.listeners]]\nprotocol = "udp"\naddress = "localhost"\n',
     "syslog.listeners[0].address"),
    ('[syslog]\nbogus = 1\n', "syslog.bogus"),
])
def test_bad_config_names_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert key in str(e.value)


def dev(name: str, address: str, site: str = "s1") -> Device:
    return Device(name, address, 161, "snmp", 60.0, "acme", site, None)


def test_sender_by_address_then_hostname_then_unknown() -> None:
    s = Senders([dev("fw1", "192.0.2.1", "hq"), dev("sw-a.example.net", "10.0.0.5"),
                 dev("sw-b", "10.0.0.5", "branch")], "agent-site", "accept")
    assert s.lookup("192.0.2.1", "whatever") == ("fw1", "hq")
    assert s.lookup("198.51.100.9", "FW1") == ("fw1", "hq")          # by host name
    assert s.lookup("10.0.0.5", "sw-b") == ("sw-b", "branch")         # shared address
    assert s.lookup("10.0.0.5", "sw-a") == ("sw-a.example.net", "s1")  # short name
    assert s.lookup("10.0.0.5", None) == ("sw-a.example.net", "s1")
    assert s.lookup("203.0.113.5", "stranger") == ("203.0.113.5", "agent-site")
    assert s.known == {"192.0.2.1", "198.51.100.9", "10.0.0.5"}
    assert s.unknown == {"203.0.113.5"}
    drop = Senders([], "x", "drop")
    assert drop.lookup("203.0.113.5", None) is None and drop.unknown == {"203.0.113.5"}


def test_ipv4_mapped_senders_are_plain_ipv4() -> None:
    assert canonical_address("::ffff:192.0.2.7") == "192.0.2.7"
    assert canonical_address("2001:DB8::1") == "2001:db8::1"
    assert canonical_address("192.0.2.7") == "192.0.2.7"
