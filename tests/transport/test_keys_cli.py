"""`privtel keys init` and `privtel certs` on disk: modes, loadable keys, clear refusals."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from transport_helpers import header, records

from pipelines import keys
from pipelines.envelope import open_sealed, seal
from privtel.cli import main as privtel
from privtel.commands.keys import key_files


@pytest.mark.parametrize("suite", keys.SUITES)
def test_keys_init_writes_usable_private_files(tmp_path: Path, suite: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "k"
    assert privtel(["keys", "init", "--dir", str(d), "--agent-id", "edge-1", "--tenant", "acme",
                    "--suite", suite]) == 0
    files = key_files(d, "edge-1", "acme")
    for p in files.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    ck = keys.load_collector_private_key(files["collector_key"].read_bytes())
    pub = keys.load_collector_public_key(files["collector_pub"].read_bytes())
    sk = keys.load_signing_key(files["agent_key"].read_bytes())
    vk = keys.load_verify_key(files["agent_pub"].read_bytes())
    assert (ck.suite, pub.key_id) == (suite, ck.key_id)
    assert re.fullmatch(r"[0-9a-f]{64}\n", files["tenant_key"].read_text())
    out = capsys.readouterr().out
    assert ck.key_id in out and keys.signing_key_id(sk) in out
    assert files["tenant_key"].read_text().strip() not in out
    data = seal(header("acme", "edge-1"), records("acme"), pub, sk)
    assert len(open_sealed(data, {"edge-1": vk}, {ck.key_id: ck})[1]) == 3


def test_keys_init_refuses_overwrite_and_bad_names(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "k"
    assert privtel(["keys", "init", "--dir", str(d)]) == 0
    before = (d / "collector.key").read_bytes()
    assert privtel(["keys", "init", "--dir", str(d)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (d / "collector.key").read_bytes() == before
    assert privtel(["keys", "init", "--dir", str(d), "--force"]) == 0
    assert (d / "collector.key").read_bytes() != before
    assert privtel(["keys", "init", "--dir", str(d / "x"), "--tenant", "Bad Name"]) == 2
    assert "--tenant must be lowercase" in capsys.readouterr().err


def test_key_loaders_reject_wrong_material(tmp_path: Path) -> None:
    d = tmp_path / "k"
    assert privtel(["keys", "init", "--dir", str(d)]) == 0
    with pytest.raises(keys.KeyFormatError, match="Ed25519"):
        keys.load_signing_key((d / "collector.key").read_bytes())
    with pytest.raises(keys.KeyFormatError, match="collector private key"):
        keys.load_collector_private_key((d / "agent-agent1.key").read_bytes())
    with pytest.raises(keys.KeyFormatError, match="PEM"):
        keys.load_collector_public_key(b"hello")
    with pytest.raises(keys.KeyFormatError, match="unknown HPKE suite"):
        keys.suite("rsa")


def test_certs_init_and_add_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "c"
    assert privtel(["certs", "init", "--dir", str(d), "--agent", "acme/edge-1"]) == 0
    assert privtel(["certs", "add-agent", "--dir", str(d), "--agent", "beta/edge-2"]) == 0
    acl = (d / "acl").read_text()
    assert ("user acme.edge-1\ntopic write privtel/v1/acme/edge-1/batches\n"
            "topic read privtel/v1/acme/edge-1/receipts\n") in acl
    assert "user beta.edge-2\ntopic write privtel/v1/beta/edge-2/batches" in acl
    assert ("user collector\ntopic read privtel/v1/+/+/batches\n"
            "topic write privtel/v1/+/+/receipts\n") in acl
    ca = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    agent = x509.load_pem_x509_certificate((d / "agent-beta.edge-2.crt").read_bytes())
    agent.verify_directly_issued_by(ca)
    assert agent.subject.rfc4514_string().startswith("CN=beta.edge-2")
    for key in ("ca.key", "broker.key", "collector.key", "agent-beta.edge-2.key"):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600
    assert privtel(["certs", "init", "--dir", str(d)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert privtel(["certs", "init", "--dir", str(tmp_path / "e"), "--agent", "nodash"]) == 2
    assert "TENANT/AGENT_ID" in capsys.readouterr().err
    # an agent named like the collector still gets a distinct identity (tenant-qualified)
    assert privtel(["certs", "init", "--dir", str(tmp_path / "f"), "--agent",
                    "acme/collector"]) == 0
    assert "user acme.collector\n" in (tmp_path / "f" / "acl").read_text()
