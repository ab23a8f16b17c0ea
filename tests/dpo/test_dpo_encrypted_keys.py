"""`privtel keys init --passphrase-file`: encrypted PKCS#8 private keys, loaded by the
agent's shipper and the collector's key loader, and a batch sealed by one opens at
the other."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from pathlib import Path

import orjson
import pytest
from e2e.e2e_kit import unique_tenant, wait_for
from peers.snmpd import V3User, run_snmpd
from prometheus_client import CollectorRegistry

from agents import config as agent_config
from agents.credentials import Credential, CredentialStore, generate_key_file, load_key
from agents.runtime import Agent
from agents.shipper import Shipper
from collector import config as collector_config
from collector.runtime import Collector, load_keys
from pipelines import keys
from pipelines.config import ConfigError
from pipelines.envelope import open_sealed
from pipelines.record import Kind, Record, encode_one
from privtel.cli import main as privtel
from privtel.commands.keys import key_files
from privtel.demo.run import running, write_configs

PHRASE = b"correct horse battery staple 7"


def _phrase_file(tmp_path: Path, mode: int = 0o600, data: bytes = PHRASE + b"\n") -> Path:
    p = tmp_path / "passphrase"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    p.chmod(mode)
    return p


@pytest.mark.parametrize("suite", keys.SUITES)
def test_keys_init_writes_encrypted_pkcs8_that_needs_the_passphrase(
        tmp_path: Path, suite: str, capsys: pytest.CaptureFixture[str]) -> None:
    phrase = _phrase_file(tmp_path)
    d = tmp_path / "k"
    assert privtel(["keys", "init", "--dir", str(d), "--agent-id", "edge-1", "--tenant", "acme",
                    "--suite", suite, "--passphrase-file", str(phrase)]) == 0
    out = capsys.readouterr().out
    assert PHRASE.decode() not in out
    files = key_files(d, "edge-1", "acme")
    for name in ("collector_key", "agent_key"):
        data = files[name].read_bytes()
        assert stat.S_IMODE(files[name].stat().st_mode) == 0o600
        blocks = re.findall(rb"-----BEGIN ([A-Z ]+)-----", data)
        assert blocks and set(blocks) == {b"ENCRYPTED PRIVATE KEY"}, (name, blocks)
    assert len(re.findall(rb"BEGIN", files["collector_key"].read_bytes())) == (
        1 if suite == "x25519" else 2)
    with pytest.raises(keys.KeyFormatError, match="encrypted; name its passphrase file"):
        keys.load_collector_private_key(files["collector_key"].read_bytes())
    with pytest.raises(keys.KeyFormatError, match="wrong passphrase"):
        keys.load_signing_key(files["agent_key"].read_bytes(), b"not it")
    ck = keys.load_collector_private_key(files["collector_key"].read_bytes(), PHRASE)
    sk = keys.load_signing_key(files["agent_key"].read_bytes(), PHRASE)
    assert ck.suite == suite and ck.key_id in out and keys.signing_key_id(sk) in out
    assert ck.public.pem == files["collector_pub"].read_bytes()


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_a_passphrase_file_others_can_read_is_refused(
        tmp_path: Path, mode: int, capsys: pytest.CaptureFixture[str]) -> None:
    phrase = _phrase_file(tmp_path, mode)
    d = tmp_path / "k"
    assert privtel(["keys", "init", "--dir", str(d), "--passphrase-file", str(phrase)]) == 2
    err = capsys.readouterr().err
    assert f"chmod 600 {phrase}" in err and PHRASE.decode() not in err
    assert not d.exists() or not any(d.iterdir())


def test_an_empty_passphrase_file_is_refused(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    phrase = _phrase_file(tmp_path, data=b"\n")
    assert privtel(["keys", "init", "--dir", str(tmp_path / "k"),
                    "--passphrase-file", str(phrase)]) == 2
    assert "one non-empty line" in capsys.readouterr().err


def _encrypted_deployment(tmp_path: Path, mode: int = 0o600, *,
                          broker_url: str = "mqtt://127.0.0.1:1", tenant: str = "enc",
                          extra_toml: str = "") -> tuple[Path, Path]:
    """The demo's configs with both private keys re-written encrypted and
    `passphrase_file` named next to them in each config's [keys] table."""
    agent_path, collector_path = write_configs(
        tmp_path, broker_url=broker_url, protocol="5", devices=[], interval_s=2,
        metrics_port=0, tenant=tenant, agent_id="enc-agent", extra_toml=extra_toml)
    files = key_files(tmp_path / "keys", "enc-agent", tenant)
    for name in ("collector_key", "agent_key"):
        p = files[name]
        p.write_bytes(keys.encrypt_private_pem(p.read_bytes(), PHRASE))
    phrase = _phrase_file(tmp_path, mode)
    for path in (agent_path, collector_path):
        text = path.read_text().replace("[keys]\n", f'[keys]\npassphrase_file = "{phrase}"\n')
        path.write_text(text)
    return agent_path, collector_path


async def test_both_sides_load_encrypted_keys_and_a_batch_seals_and_opens(
        tmp_path: Path) -> None:
    agent_path, collector_path = _encrypted_deployment(tmp_path)
    acfg, ccfg = agent_config.load(agent_path), collector_config.load(collector_path)
    assert acfg.keys.passphrase_file == ccfg.key_passphrase_file == tmp_path / "passphrase"
    agent_keys, collector_keys = load_keys(ccfg)
    shipper = Shipper(acfg, registry=CollectorRegistry())
    recs = [Record(kind=Kind.METRIC, tenant="enc", site="s", device="d", name="if",
                   fields={"in_octets": i}) for i in range(3)]
    sealed = shipper._seal_one(1, [encode_one(r) for r in recs], [None] * len(recs))
    header, opened = open_sealed(sealed.data, agent_keys, collector_keys)
    assert header.agent_id == "enc-agent"
    assert [r.fields["in_octets"] for r in opened] == [0, 1, 2]


def test_without_the_passphrase_the_collector_names_file_and_key(tmp_path: Path) -> None:
    _, collector_path = _encrypted_deployment(tmp_path)
    text = collector_path.read_text()
    collector_path.write_text("\n".join(ln for ln in text.splitlines()
                                        if not ln.startswith("passphrase_file")) + "\n")
    with pytest.raises(ConfigError) as e:
        load_keys(collector_config.load(collector_path))
    msg = str(e.value)
    assert msg.startswith(f"{collector_path}: keys.private_keys: ")
    assert "encrypted; name its passphrase file" in msg


def test_a_readable_passphrase_file_stops_both_sides(tmp_path: Path) -> None:
    agent_path, collector_path = _encrypted_deployment(tmp_path, mode=0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keys(collector_config.load(collector_path))
    with pytest.raises(ConfigError, match="chmod 600"):
        Shipper(agent_config.load(agent_path), registry=CollectorRegistry())


V3 = V3User("dpo_e2e", "SHA-256", "auth-e2e-s3cret", "AES", "priv-e2e-s3cret")


async def test_encrypted_keys_and_snmp_v3_secrets_from_the_store_end_to_end(
        tmp_path: Path, mosquitto: str) -> None:
    """A real snmpd polled over v3 authPriv with keys from the credential store, the
    batches signed with an encrypted agent key, sent through the real Mosquitto, and
    opened with an encrypted collector key: every record reaches the store."""
    tenant = unique_tenant("dpoenc")
    key = generate_key_file(tmp_path / "creds.key")
    store = CredentialStore(tmp_path / "creds.enc", load_key(key_file=key))
    store.set("fw-v3", Credential(username=V3.name, snmp_auth_key=V3.auth_key,
                                  snmp_priv_key=V3.priv_key))
    with run_snmpd(sys_name="dpo-e2e-peer", users=[V3]) as peer:
        extra = f"""
[credentials]
file = "{store.path}"
key_file = "{key}"

[[devices]]
name = "fw"
address = "127.0.0.1"
port = {peer.port}
interval_s = 2
[devices.snmp]
version = "3"
auth_protocol = "sha256"
priv_protocol = "aes"
credential = "fw-v3"
timeout_s = 2.0
"""
        agent_path, collector_path = _encrypted_deployment(
            tmp_path, broker_url=mosquitto, tenant=tenant, extra_toml=extra)
        for secret in (V3.auth_key, V3.priv_key, PHRASE.decode()):
            assert secret not in agent_path.read_text()
            assert secret not in collector_path.read_text()
        acfg, ccfg = agent_config.load(agent_path), collector_config.load(collector_path)
        collector = Collector(ccfg, topic_filter=f"privtel/v1/{tenant}/+/batches")
        agent = Agent(acfg)
        async with running(collector, agent):
            await wait_for(lambda: collector.store.count_records(name="snmp.system") >= 1, 60,
                           "a v3 poll stored")
            await wait_for(lambda: collector.store.count_records(name="device.health") >= 1,
                           30, "health stored")
    db = sqlite3.connect(ccfg.store_url.removeprefix("sqlite:///"))
    try:
        ups = [orjson.loads(f)["up"] for (f,) in db.execute(
            "select fields from records where name = 'device.health'")]
    finally:
        db.close()
    assert ups and all(u == 1 for u in ups)
