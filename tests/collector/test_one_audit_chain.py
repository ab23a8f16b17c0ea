"""One audit chain per store, one key for every writer, on both backends.

Before: with `api serve --audit-key`, the collector's scheduled purge and
`privtel retention purge` appended unkeyed entries to the same table, after
which `audit verify` failed with and without the key; `privtel reidentify`
wrote to a file the caller chose, with a self-declared `--who` and no TOTP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from factories import on_backends, write_private

from collector import config as collector_config
from collector.audit import AuditLog
from collector.auth import Users
from collector.runtime import Collector
from collector.store import SqlStore, open_db
from pipelines import keys
from pipelines.pseudonym import Pseudonymiser, TenantKey
from privtel.cli import main

pytestmark = on_backends
HEX = "5a" * 16 + "a5" * 16


@pytest.fixture
def db(store_url: str) -> Iterator[SqlStore]:
    d = open_db(store_url)
    try:
        yield d
    finally:
        d.close()


def collector_cfg(tmp: Path, store_url: str, *, audit_key: Path | None) -> Path:
    write_private(tmp / "c.key", keys.generate_collector_key().pem)
    write_private(tmp / "a.pub", keys.verify_key_pem(keys.generate_signing_key().public_key()))
    key_line = f'audit_key = "{audit_key}"' if audit_key else ""
    return write_private(tmp / "collector.toml", f"""
[collector]
store = "{store_url}"
metrics_listen = "127.0.0.1:0"
{key_line}
[keys]
private_keys = ["c.key"]
[[agents]]
id = "a1"
tenant = "acme"
public_key = "a.pub"
""".encode())


def verify(store_url: str, key: Path | None) -> int:
    return main(["audit", "verify", "--store", store_url,
                 *(["--audit-key", str(key)] if key else [])])


@pytest.mark.parametrize("keyed", [True, False])
def test_every_purge_writes_the_chain_the_api_writes(tmp_path: Path, store_url: str,
                                                     db: SqlStore, keyed: bool) -> None:
    key = write_private(tmp_path / "audit.key", os.urandom(32).hex().encode()) if keyed else None
    api = AuditLog(db, key.read_bytes() if key else None)  # what `api serve --audit-key` does
    api.append(actor="alice", role="security", action="search", tenants=("acme",),
               request_id="r1", outcome="ok")
    cfg = collector_config.load(collector_cfg(tmp_path, store_url, audit_key=key))
    collector = Collector(cfg)
    try:
        collector.retention.purge(trigger="scheduled")  # what the purge service runs
    finally:
        collector.store.close()
        collector.audit_db.close()
    assert main(["retention", "purge", "--config", str(tmp_path / "collector.toml")]) == 0
    assert main(["retention", "purge", "--store", store_url, "--dry-run",
                 *(["--audit-key", str(key)] if key else [])]) == 0
    api.append(actor="alice", role="security", action="search", tenants=("acme",),
               request_id="r2", outcome="ok")
    assert verify(store_url, key) == 0
    if keyed:
        assert verify(store_url, None) == 1  # the key is really in use
    with db.tx() as cur:
        rows = cur.execute("SELECT action FROM audit_log ORDER BY seq").fetchall()
    actions = [r[0] for r in rows]
    assert actions == ["search", "retention.purge", "retention.purge", "retention.purge",
                       "search"]


def test_reidentify_against_a_store_needs_totp_and_joins_its_chain(
        tmp_path: Path, store_url: str, db: SqlStore,
        capsys: pytest.CaptureFixture[str]) -> None:
    key = write_private(tmp_path / "audit.key", os.urandom(32).hex().encode())
    tenant_key = tmp_path / "tenant.key"
    write_private(tenant_key, (HEX + "\n").encode())
    users = Users(db)
    token = users.add("sam", "security", "acme")
    secret = pyotp.parse_uri(users.enrol_totp("sam")).secret
    noc_token = users.add("nina", "noc", "acme")
    tokens = {n: write_private(tmp_path / f"{n}.token", t.encode())
              for n, t in (("sam", token), ("nina", noc_token))}
    raw = "192.0.2.10"
    pseudonym = Pseudonymiser(TenantKey.from_hex(HEX)).ip(raw)

    def reidentify(who: str, tenant: str = "acme", *extra: str) -> int:
        return main(["reidentify", "--key-file", str(tenant_key), "--store", store_url,
                     "--tenant", tenant, "--token-file", str(tokens[who]), "--audit-key",
                     str(key), "--reason", "INC-1234 abuse report", *extra, pseudonym])

    assert reidentify("sam") == 2  # no TOTP code
    assert reidentify("sam", "globex", "--totp", pyotp.TOTP(secret).now()) == 2  # scope
    assert reidentify("nina", "acme", "--totp", "123456") == 2  # role
    assert raw not in capsys.readouterr().out
    assert reidentify("sam", "acme", "--totp", pyotp.TOTP(secret).now()) == 0
    assert f"{pseudonym}\t{raw}" in capsys.readouterr().out
    assert main(["reidentify", "--key-file", str(tenant_key), "--store", store_url,
                 "--tenant", "acme", "--who", "mallory", "--reason", "INC-1234 report",
                 pseudonym]) == 2  # no self-declared identity against a store
    assert verify(store_url, key) == 0
    with db.tx() as cur:
        rows = cur.execute("SELECT actor, role, action, outcome, detail FROM audit_log "
                           "ORDER BY seq").fetchall()
    assert [(r[0], r[2], r[3].split(":")[0]) for r in rows] == [
        ("sam", "reidentify", "denied"), ("sam", "reidentify", "denied"),
        ("nina", "reidentify", "denied"), ("sam", "reidentify", "ok")]
    assert all(raw not in str(r[4]) for r in rows)
