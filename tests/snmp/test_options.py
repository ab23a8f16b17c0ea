"""`[devices.snmp]` options: defaults, and one refusal per rule with a message naming the key."""

from __future__ import annotations

import pytest

from agents.snmp.options import SnmpOptions, parse_options
from pipelines.config import ConfigError, parse_toml


def opts(text: str) -> SnmpOptions:
    return parse_options(parse_toml(text, "agent.toml"))


def test_defaults() -> None:
    o = opts("")
    assert (o.version, o.community, o.max_repetitions, o.timeout_s, o.retries) == (
        "2c", "public", 25, 2.0, 1)
    assert o.security_level == "noAuthNoPriv"


def test_v3() -> None:
    o = opts('version = "3"\nuser = "noc"\nauth_protocol = "sha256"\nauth_key = "12345678"\n'
             'priv_protocol = "aes256"\npriv_key = "abcdefgh"\ncontext = "vrf-a"\n'
             'profiles = ["system", "if-mib"]')
    assert o.security_level == "authPriv" and o.profiles == ("system", "if-mib")
    assert "12345678" not in repr(o) and "abcdefgh" not in repr(o)


@pytest.mark.parametrize(("text", "message"), [
    ('version = "2"', "version: must be one of 1, 2c, 3, not '2'"),
    ('colour = 1', "colour: unknown key"),
    ('max_repetitions = 0', "max_repetitions: must be at least 1"),
    ('timeout_s = 0', "timeout_s: must be at least 0.05"),
    ('retries = 11', "retries: must be at most 10"),
    ('community = ""', "community: must not be empty"),
    ('user = "noc"', "user: is for version 3 only, not version 2c"),
    ('version = "3"', "user: is required for version 3"),
    ('version = "3"\ncommunity = "x"\nuser = "u"', "community: is for versions 1 and 2c"),
    ('version = "3"\nuser = "u"\nauth_protocol = "sha"\nauth_key = "short"',
     "auth_key: must be at least 8 characters"),
    ('version = "3"\nuser = "u"\npriv_protocol = "aes"\npriv_key = "12345678"',
     "priv_protocol: needs an auth_protocol"),
    ('version = "3"\nuser = "u"\nauth_protocol = "md4"', "auth_protocol: must be one of"),
    ('version = "3"\nuser = "u"\nauth_key = "12345678"', "auth_key: is set but auth_protocol"),
    ('profiles = ["nope"]', "profiles: unknown profile 'nope' (known:"),
    ('version = "1"\nengine = "fast"', "engine: the fast path speaks v2c and v3"),
])
def test_bad_options(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        opts(text)
    assert str(e.value).startswith(f"agent.toml: {message}")
    assert "12345678" not in str(e.value)


def test_profiles_are_checked_against_the_set_passed_in() -> None:
    """The agent passes its own profile set (built-in plus configured dirs); no ambient state."""
    from agents.snmp.profiles import default_profiles

    mine = {"custom": default_profiles()["system"]}
    s = parse_toml('profiles = ["custom"]', "agent.toml")
    assert parse_options(s, None, mine).profiles == ("custom",)
    with pytest.raises(ConfigError, match="unknown profile 'custom'"):
        opts('profiles = ["custom"]')
    with pytest.raises(ConfigError, match=r"unknown profile 'system' \(known: custom\)"):
        parse_options(parse_toml('profiles = ["system"]', "agent.toml"), None, mine)
