"""SNMP secrets at rest: named in agent.toml, kept in the encrypted credential store,
inline ones refused once a store is configured, `privtel creds migrate` moving them,
and SNMPv3 authPriv against a real net-snmp snmpd with keys from the store."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest
from peers.snmpd import V3User, run_snmpd

from agents import config as agent_config
from agents.credentials import Credential, CredentialStore, generate_key_file, load_key
from agents.snmp.poller import SnmpPoller
from pipelines.config import ConfigError
from privtel.cli import main as privtel

COMMUNITY = "c0mmunity-s3cret"
AUTH, PRIV = "auth-s3cret-0123", "priv-s3cret-0123"
TRAP_COMMUNITY, TRAP_AUTH, TRAP_PRIV = "trap-c0mm-s3cret", "trap-auth-s3cret", "trap-priv-s3cret"
SECRETS = (COMMUNITY, AUTH, PRIV, TRAP_COMMUNITY, TRAP_AUTH, TRAP_PRIV)


def _head(tmp: Path, store: bool = True) -> str:
    creds = ('[credentials]\nfile = "creds.enc"\nkey_file = "creds.key"\n' if store else "")
    return f"""# the site's agent
[agent]
id = "a1"
tenant = "dpo"
site = "s1"
state_dir = "state"

[keys]
signing_key = "k/agent.key"
collector_public_key = "k/collector.pub"
tenant_key = "k/tenant.key"

{creds}"""


V2C_INLINE = f"""
[[devices]]
name = "core 1"   # a name with a space: the credential name is made safe
address = "127.0.0.1"
[devices.snmp]
version = "2c"   # keep this comment
community = "{COMMUNITY}"
"""
V3_INLINE = f"""
[[devices]]
name = "fw-1"
address = "127.0.0.1"
[devices.snmp]
version = "3"
user = "noc"
auth_protocol = "sha256"
auth_key = "{AUTH}"
priv_protocol = "aes"
priv_key = "{PRIV}"
"""
SSH_DEVICE = """
[[devices]]
name = "rtr"
address = "127.0.0.1"
protocol = "ssh"
[devices.ssh]
device_type = "cisco_ios"
credential = "rtr-login"
"""
TRAPS_INLINE = f"""
[traps]
listen = "127.0.0.1"
port = 10162
communities = ["{TRAP_COMMUNITY}"]
[[traps.users]]
user = "trapper"
auth_protocol = "sha256"
auth_key = "{TRAP_AUTH}"
priv_protocol = "aes"
priv_key = "{TRAP_PRIV}"
"""


def _store(tmp: Path) -> CredentialStore:
    key = tmp / "creds.key"
    if not key.exists():
        generate_key_file(key)
    return CredentialStore(tmp / "creds.enc", load_key(key_file=key))


def _write(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


@pytest.mark.parametrize("body, key, secret", [
    (V2C_INLINE, "devices[0].snmp.community", COMMUNITY),
    (V3_INLINE, "devices[0].snmp.auth_key", AUTH),
    (V3_INLINE.replace(f'auth_key = "{AUTH}"\n', ""), "devices[0].snmp.priv_key", PRIV),
    (TRAPS_INLINE, "traps.communities", TRAP_COMMUNITY),
    (TRAPS_INLINE.replace(f'communities = ["{TRAP_COMMUNITY}"]',
                          'community_credentials = ["tc"]'), "traps.users[0].auth_key",
     TRAP_AUTH),
])
def test_inline_secrets_are_refused_once_a_store_is_configured(
        tmp_path: Path, body: str, key: str, secret: str) -> None:
    _store(tmp_path).set("tc", Credential(snmp_community=TRAP_COMMUNITY))
    file = str(tmp_path / "agent.toml")
    with pytest.raises(ConfigError) as e:
        agent_config.parse(_head(tmp_path) + body, file, base=tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{file}: {key}: is a secret written inline"), msg
    assert "privtel creds migrate" in msg
    assert not any(s in msg for s in SECRETS)


def test_inline_secrets_still_load_without_a_store(tmp_path: Path) -> None:
    cfg = agent_config.parse(_head(tmp_path, store=False) + V2C_INLINE + V3_INLINE
                             + TRAPS_INLINE, str(tmp_path / "a.toml"), base=tmp_path)
    assert cfg.devices[0].options.community == COMMUNITY
    assert (cfg.devices[1].options.auth_key, cfg.devices[1].options.priv_key) == (AUTH, PRIV)
    assert cfg.traps is not None and cfg.traps.communities == (TRAP_COMMUNITY,)


def test_references_resolve_from_the_store_and_errors_name_only_the_key(
        tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.set("core", Credential(snmp_community=COMMUNITY))
    store.set("fw", Credential(username="noc3", snmp_auth_key=AUTH, snmp_priv_key=PRIV))
    store.set("trapc", Credential(snmp_community=TRAP_COMMUNITY))
    store.set("trapu", Credential(username="trapper", snmp_auth_key=TRAP_AUTH,
                                  snmp_priv_key=TRAP_PRIV))
    body = """
[[devices]]
name = "core"
address = "127.0.0.1"
[devices.snmp]
credential = "core"
[[devices]]
name = "fw"
address = "127.0.0.1"
[devices.snmp]
version = "3"
auth_protocol = "sha256"
priv_protocol = "aes"
credential = "fw"
[traps]
community_credentials = ["trapc"]
[[traps.users]]
credential = "trapu"
auth_protocol = "sha256"
priv_protocol = "aes"
"""
    file = str(tmp_path / "agent.toml")
    cfg = agent_config.parse(_head(tmp_path) + body, file, base=tmp_path)
    core, fw = (d.options for d in cfg.devices)
    assert core.community == COMMUNITY
    assert (fw.user, fw.auth_key, fw.priv_key) == ("noc3", AUTH, PRIV)
    assert not any(s in repr(cfg) for s in SECRETS)
    traps = cfg.traps
    assert traps is not None and traps.communities == (TRAP_COMMUNITY,)
    assert traps.users[0].user == "trapper"
    assert (traps.users[0].auth_key, traps.users[0].priv_key) == (TRAP_AUTH, TRAP_PRIV)
    for bad, key, why in [
        (body.replace('credential = "core"', 'credential = "nope"'),
         "devices[0].snmp.credential", "no credential named 'nope'"),
        (body.replace('credential = "core"', 'credential = "fw"'),
         "devices[0].snmp.credential", "credential 'fw' has no snmp_community"),
        (body.replace('credential = "core"', f'credential = "core"\ncommunity = "{COMMUNITY}"'),
         "devices[0].snmp.community", "is a secret written inline"),
        (body.replace('"trapc"', '"core2"'), "traps.community_credentials",
         "no credential named 'core2'"),
    ]:
        with pytest.raises(ConfigError) as e:
            agent_config.parse(_head(tmp_path) + bad, file, base=tmp_path)
        assert str(e.value).startswith(f"{file}: {key}: "), str(e.value)
        assert why in str(e.value)
        assert not any(s in str(e.value) for s in SECRETS)


def test_creds_migrate_moves_every_inline_snmp_secret(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _store(tmp_path)
    store.set("rtr-login", Credential(username="ops", password="ssh-pass-1"))
    # a credential already taken by another secret: the migrated one gets a new name
    store.set("fw-1-snmp", Credential(snmp_community="someone-else"))
    text = _head(tmp_path) + V2C_INLINE + V3_INLINE + SSH_DEVICE + TRAPS_INLINE
    path = _write(tmp_path / "agent.toml", text)
    assert privtel(["creds", "migrate", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert not any(s in out for s in SECRETS)
    assert "devices[0].snmp: community -> credential 'core-1-snmp'" in out
    assert "devices[1].snmp: auth_key, priv_key -> credential 'fw-1-snmp-2'" in out
    assert "traps.communities[0]: community -> credential 'trap-community-1'" in out
    assert "traps.users[0]: auth_key, priv_key -> credential 'trap-trapper'" in out

    new = path.read_text()
    assert not any(s in new for s in SECRETS)
    assert "# keep this comment" in new and "# the site's agent" in new
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    backup = tmp_path / "agent.toml.bak"
    assert backup.read_text() == text and stat.S_IMODE(backup.stat().st_mode) == 0o600
    doc = tomllib.loads(new)
    assert doc["devices"][0]["snmp"]["credential"] == "core-1-snmp"
    assert doc["devices"][2]["ssh"] == {"device_type": "cisco_ios", "credential": "rtr-login"}
    assert doc["traps"]["community_credentials"] == ["trap-community-1"]

    creds = store.load()
    assert creds["core-1-snmp"] == Credential(snmp_community=COMMUNITY)
    assert creds["fw-1-snmp-2"] == Credential(username="noc", snmp_auth_key=AUTH,
                                              snmp_priv_key=PRIV)
    assert creds["fw-1-snmp"] == Credential(snmp_community="someone-else")
    assert creds["rtr-login"].password == "ssh-pass-1"
    assert creds["trap-trapper"].snmp_priv_key == TRAP_PRIV
    cfg = agent_config.load(path)
    assert cfg.devices[0].options.community == COMMUNITY
    assert (cfg.devices[1].options.auth_key, cfg.devices[1].options.priv_key) == (AUTH, PRIV)
    assert cfg.traps is not None and cfg.traps.communities == (TRAP_COMMUNITY,)

    assert privtel(["creds", "migrate", "--config", str(path)]) == 0
    assert "nothing to migrate" in capsys.readouterr().out
    assert path.read_text() == new and not (tmp_path / "agent.toml.bak.2").exists()


def test_creds_migrate_adds_the_store_it_is_given_and_refuses_without_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "agent.toml", _head(tmp_path, store=False) + V2C_INLINE)
    env = {k: os.environ.pop(k) for k in ("PRIVTEL_CREDENTIALS",) if k in os.environ}
    try:
        assert privtel(["creds", "migrate", "--config", str(path)]) == 2
    finally:
        os.environ.update(env)
    assert "no credential store" in capsys.readouterr().err
    store = _store(tmp_path)
    assert privtel(["creds", "migrate", "--config", str(path), "--file", str(store.path),
                    "--key-file", str(tmp_path / "creds.key")]) == 0
    doc = tomllib.loads(path.read_text())
    assert doc["credentials"] == {"file": str(store.path.resolve()),
                                  "key_file": str((tmp_path / "creds.key").resolve())}
    assert agent_config.load(path).devices[0].options.community == COMMUNITY


def test_creds_migrate_refuses_a_config_others_can_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(tmp_path)
    path = _write(tmp_path / "agent.toml", _head(tmp_path) + V2C_INLINE)
    path.chmod(0o644)
    assert privtel(["creds", "migrate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and COMMUNITY not in err
    assert COMMUNITY in path.read_text()


USER = V3User("dpo_v3", "SHA-256", AUTH, "AES", PRIV)


@pytest.mark.parametrize("engine", ["pysnmp", "fast"])
async def test_v3_authpriv_against_snmpd_with_keys_from_the_store(
        tmp_path: Path, engine: str) -> None:
    store = _store(tmp_path)
    store.set("fw-v3", Credential(username=USER.name, snmp_auth_key=AUTH, snmp_priv_key=PRIV))
    with run_snmpd(sys_name="dpo-v3-peer", users=[USER]) as peer:
        body = f"""
[[devices]]
name = "fw"
address = "127.0.0.1"
port = {peer.port}
[devices.snmp]
version = "3"
auth_protocol = "sha256"
priv_protocol = "aes"
credential = "fw-v3"
engine = "{engine}"
timeout_s = 2.0
retries = 1
"""
        path = _write(tmp_path / "agent.toml", _head(tmp_path) + body)
        assert not any(s in path.read_text() for s in SECRETS)
        cfg = agent_config.load(path)
        poller = SnmpPoller.from_context(cfg.pollers)
        try:
            recs = await poller.poll(cfg.devices[0])
        finally:
            await poller.close()
        health = next(r for r in recs if r.name == "device.health")
        assert health.fields["up"] == 1, health.fields
        system = [r for r in recs if r.name == "snmp.system"]
        assert system and "dpo-v3-peer" in str(system[0].fields)
        # a wrong key in the store is an auth failure against the same snmpd
        store.set("fw-v3", Credential(username=USER.name, snmp_auth_key="wrong-key-0123",
                                      snmp_priv_key=PRIV))
        cfg = agent_config.load(path)
        poller = SnmpPoller.from_context(cfg.pollers)
        try:
            recs = await poller.poll(cfg.devices[0])
        finally:
            await poller.close()
        health = next(r for r in recs if r.name == "device.health")
        assert health.fields["up"] == 0


def test_creds_set_takes_an_snmp_community_from_stdin_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    store = _store(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(COMMUNITY + "\n"))
    assert privtel(["creds", "set", "core", "--file", str(store.path), "--key-file",
                    str(tmp_path / "creds.key"), "--snmp-community-stdin"]) == 0
    assert store.get("core") == Credential(snmp_community=COMMUNITY)
    assert privtel(["creds", "list", "--file", str(store.path), "--key-file",
                    str(tmp_path / "creds.key")]) == 0
    out = capsys.readouterr().out
    assert "core\tuser=-\tsnmp_community" in out and COMMUNITY not in out
