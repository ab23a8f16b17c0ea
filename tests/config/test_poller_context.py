"""The agent config's `[credentials]`, `[ssh]` and `[snmp]` tables become the
`PollerContext` pollers are built from, instead of environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import agent_head

from agents import config as agent_config
from agents.pollers import PollerContext
from agents.snmp.poller import SnmpPoller
from agents.ssh.poller import KNOWN_HOSTS_ENV, SshPoller
from pipelines.config import ConfigError

HEAD = agent_head()

PROFILE = """
name = "lab-vendor"
match = ["1.3.6.1.4.1.99999"]
[[scalars]]
record = "lab.temp"
fields = [ { name = "temp_c", oid = "1.3.6.1.4.1.99999.1.0", type = "gauge" } ]
"""

SNMP_DEVICE = """
[[devices]]
name = "core-1"
address = "192.0.2.1"
[devices.snmp]
community = "public"
profiles = ["lab-vendor"]
"""


def _parse(tmp: Path, text: str) -> agent_config.AgentConfig:
    return agent_config.parse(HEAD + text, str(tmp / "agent.toml"), base=tmp)


def test_defaults_leave_the_environment_fallbacks(tmp_path: Path) -> None:
    ctx = _parse(tmp_path, "").pollers
    assert ctx == PollerContext(state_dir=tmp_path / "state")
    assert ctx.ssh_known_hosts_default == tmp_path / "state" / "ssh_known_hosts"


def test_tables_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    ctx = _parse(tmp_path, """
[credentials]
file = "secret/creds.enc"
key_file = "/etc/privtel/creds.key"
[ssh]
known_hosts = "kh"
max_concurrent = 3
[snmp]
profile_dirs = ["profiles"]
""").pollers
    assert ctx.credentials_file == tmp_path / "secret" / "creds.enc"
    assert ctx.credentials_key_file == Path("/etc/privtel/creds.key")
    assert ctx.ssh_known_hosts == tmp_path / "kh"
    assert ctx.ssh_max_concurrent == 3
    assert ctx.snmp_profile_dirs == (tmp_path / "profiles",)


async def test_ssh_poller_takes_its_settings_from_the_context(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KNOWN_HOSTS_ENV, str(tmp_path / "from-env"))
    ctx = _parse(tmp_path, '[ssh]\nknown_hosts = "kh"\nmax_concurrent = 3\n').pollers
    p = SshPoller.from_context(ctx)
    try:
        assert p.max_concurrent == 3 and p._known_hosts == tmp_path / "kh"
    finally:
        await p.close()
    env_only = SshPoller.from_context(PollerContext(state_dir=tmp_path))
    monkeypatch.delenv(KNOWN_HOSTS_ENV)
    default = SshPoller.from_context(PollerContext(state_dir=tmp_path))
    try:
        assert env_only._known_hosts == tmp_path / "from-env"
        assert default._known_hosts == tmp_path / "ssh_known_hosts"
    finally:
        await env_only.close()
        await default.close()


async def test_snmp_profile_from_a_configured_dir(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVTEL_SNMP_PROFILE_DIR", raising=False)
    with pytest.raises(ConfigError, match="unknown profile 'lab-vendor'"):
        _parse(tmp_path, SNMP_DEVICE)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "lab.toml").write_text(PROFILE)
    cfg = _parse(tmp_path, '[snmp]\nprofile_dirs = ["profiles"]\n' + SNMP_DEVICE)
    assert cfg.devices[0].options.profiles == ("lab-vendor",)
    poller = SnmpPoller.from_context(cfg.pollers)
    try:
        assert "lab-vendor" in poller._profiles and "if-mib" in poller._profiles
    finally:
        await poller.close()
    # an edit to a profile is seen by the next load (the cache follows the files)
    (tmp_path / "profiles" / "lab.toml").write_text(PROFILE.replace("lab-vendor", "lab-v2"))
    with pytest.raises(ConfigError, match="unknown profile 'lab-vendor'"):
        _parse(tmp_path, '[snmp]\nprofile_dirs = ["profiles"]\n' + SNMP_DEVICE)


def test_a_bad_profile_in_a_configured_dir_fails_the_load(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "bad.toml").write_text('name = "Bad Name"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: name: must match"):
        _parse(tmp_path, '[snmp]\nprofile_dirs = ["profiles"]\n' + SNMP_DEVICE)


def test_context_rejects_a_bad_concurrency(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ssh_max_concurrent"):
        PollerContext(state_dir=tmp_path, ssh_max_concurrent=0)
