"""`privtel creds`: set, list and rm through the real CLI; secrets never printed."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from agents.credentials import CredentialStore, load_key
from privtel.cli import main

PW = "Pw-cli-5e0b77a1"
AUTH = "Snmp-auth-3c9d"


def test_keygen_set_list_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    key, file = tmp_path / "creds.key", tmp_path / "creds.enc"
    assert main(["creds", "keygen", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    common = ["--file", str(file), "--key-file", str(key)]

    monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
    monkeypatch.setenv("SNMP_AUTH", AUTH)
    assert main(["creds", "set", "core", *common, "--username", "netops",
                 "--password-stdin", "--snmp-auth-key-env", "SNMP_AUTH"]) == 0
    pem = tmp_path / "id_ed25519"
    pem.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    assert main(["creds", "set", "srv", *common, "--username", "ops",
                 "--private-key-file", str(pem)]) == 0
    assert main(["creds", "list", *common]) == 0
    out = capsys.readouterr().out
    assert "core\tuser=netops\tpassword,snmp_auth_key" in out
    assert "srv\tuser=ops\tprivate_key" in out
    assert PW not in out and AUTH not in out

    store = CredentialStore(file, load_key(key_file=key))
    assert store.get("core").password == PW
    assert store.get("core").snmp_auth_key == AUTH

    assert main(["creds", "rm", "srv", *common]) == 0
    assert store.names() == ["core"]
    assert PW.encode() not in file.read_bytes()


def test_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    key, file = tmp_path / "creds.key", tmp_path / "creds.enc"
    main(["creds", "keygen", str(key)])
    common = ["--file", str(file), "--key-file", str(key)]
    monkeypatch.delenv("NOPE", raising=False)
    assert main(["creds", "set", "x", *common, "--password-env", "NOPE"]) == 2
    assert "NOPE is unset" in capsys.readouterr().err
    assert main(["creds", "set", "x", *common, "--username", "u"]) == 2
    assert "at least one secret" in capsys.readouterr().err
    assert main(["creds", "rm", "ghost", *common]) == 2
    assert "no credential named 'ghost'" in capsys.readouterr().err
    assert main(["creds", "keygen", str(key)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    key.chmod(0o644)
    assert main(["creds", "list", *common]) == 2
    assert "chmod 600" in capsys.readouterr().err
    monkeypatch.delenv("PRIVTEL_CREDENTIALS", raising=False)
    assert main(["creds", "list"]) == 2
    assert "no credentials file" in capsys.readouterr().err
