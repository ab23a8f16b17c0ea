"""The credentials store: encrypted at rest, key held outside, refused when others can read."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from agents.credentials import (
    FILE_ENV,
    KEY_ENV,
    KEY_FILE_ENV,
    Credential,
    CredentialError,
    CredentialStore,
    encode_key,
    generate_key_file,
    load_key,
    redacting_filter,
)

SECRET = "Pw-91a0c2-store-test"
PEM = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
       "-----END OPENSSH PRIVATE KEY-----\n")


def test_round_trip_and_ciphertext_hides_secrets(tmp_path: Path) -> None:
    key = os.urandom(32)
    store = CredentialStore(tmp_path / "c.enc", key)
    store.set("core", Credential(username="netops", password=SECRET, private_key=PEM,
                                 snmp_auth_key="auth-8c1f77", snmp_priv_key="priv-19ad02"))
    store.set("edge", Credential(username="ro", password="Pw-other-77"))
    data = (tmp_path / "c.enc").read_bytes()
    for s in (SECRET, "netops", "auth-8c1f77", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"):
        assert s.encode() not in data
    assert stat.S_IMODE((tmp_path / "c.enc").stat().st_mode) == 0o600
    again = CredentialStore(tmp_path / "c.enc", key)
    assert again.names() == ["core", "edge"]
    core = again.get("core")
    assert core.password == SECRET and core.private_key == PEM
    assert core.kinds() == ["password", "private_key", "snmp_auth_key", "snmp_priv_key"]
    again.remove("edge")
    assert again.names() == ["core"]


def test_repr_and_errors_never_show_secrets(tmp_path: Path) -> None:
    cred = Credential(username="netops", password=SECRET, enable_secret="En-55aa")
    assert SECRET not in repr(cred) and "En-55aa" not in str(cred)
    store = CredentialStore(tmp_path / "c.enc", os.urandom(32))
    store.set("core", cred)
    with pytest.raises(CredentialError) as e:
        CredentialStore(tmp_path / "c.enc", os.urandom(32)).load()
    assert "wrong key" in str(e.value) and SECRET not in str(e.value)
    with pytest.raises(CredentialError, match="no credential named 'nope'"):
        store.get("nope")
    with pytest.raises(CredentialError, match="no credential named"):
        store.remove("nope")


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    key = os.urandom(32)
    store = CredentialStore(tmp_path / "c.enc", key)
    store.set("core", Credential(username="u", password=SECRET))
    data = bytearray((tmp_path / "c.enc").read_bytes())
    data[-1] ^= 1
    (tmp_path / "c.enc").write_bytes(bytes(data))
    with pytest.raises(CredentialError, match="altered"):
        store.load()
    (tmp_path / "c.enc").write_bytes(b"hello")
    with pytest.raises(CredentialError, match="not a privtel credentials file"):
        store.load()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    store = CredentialStore(tmp_path / "c.enc", os.urandom(32))
    store.set("core", Credential(username="u", password=SECRET))
    (tmp_path / "c.enc").chmod(mode)
    with pytest.raises(CredentialError, match="chmod 600"):
        store.get("core")


def test_key_from_env_and_key_file(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert load_key(environ={KEY_ENV: encode_key(key)}) == key
    kf = generate_key_file(tmp_path / "creds.key")
    assert stat.S_IMODE(kf.stat().st_mode) == 0o600
    k2 = load_key(key_file=kf, environ={})
    assert len(k2) == 32 and k2 != key
    assert load_key(environ={KEY_FILE_ENV: str(kf)}) == k2
    with pytest.raises(CredentialError, match="refusing to overwrite"):
        generate_key_file(kf)
    kf.chmod(0o644)
    with pytest.raises(Exception, match="chmod 600"):
        load_key(key_file=kf, environ={})


@pytest.mark.parametrize("bad", ["", "not base64 !!", encode_key(b"short")])
def test_bad_key_is_a_clear_error(bad: str) -> None:
    with pytest.raises(CredentialError, match=KEY_ENV if bad else "no credentials key"):
        load_key(environ={KEY_ENV: bad})


def test_from_env(tmp_path: Path) -> None:
    key = os.urandom(32)
    env = {FILE_ENV: str(tmp_path / "c.enc"), KEY_ENV: encode_key(key)}
    store = CredentialStore.from_env(env)
    assert store is not None
    store.set("a", Credential(username="u", password=SECRET))
    assert CredentialStore.from_env(env).get("a").password == SECRET  # type: ignore[union-attr]
    assert CredentialStore.from_env({}) is None


@pytest.mark.parametrize("name", ["", "has space", "a/b", "-lead", "x" * 65])
def test_bad_names(tmp_path: Path, name: str) -> None:
    store = CredentialStore(tmp_path / "c.enc", os.urandom(32))
    with pytest.raises(CredentialError, match="credential name"):
        store.set(name, Credential(username="u"))


def test_empty_secret_and_unknown_field_are_errors() -> None:
    with pytest.raises(CredentialError, match="password"):
        Credential(username="u", password="")
    with pytest.raises(CredentialError, match="unknown credential fields: pin"):
        Credential.from_dict({"username": "u", "pin": "1234"})


def test_log_filter_redacts_library_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    redacting_filter([SECRET, PEM])
    logging.getLogger("netmiko").debug("write_channel: %s", SECRET)
    logging.getLogger("paramiko.transport").debug("key line %s", PEM.splitlines()[1])
    assert SECRET not in caplog.text
    assert PEM.splitlines()[1] not in caplog.text
    assert caplog.text.count("***") == 2
