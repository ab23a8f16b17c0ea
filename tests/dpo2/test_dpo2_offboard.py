"""Offboarding on both backends: a dry run changes nothing; executing leaves no
record, key or ACL entry of the tenant except what a hold or a legal obligation
keeps, the report verifies (and a changed one does not), other tenants are
untouched, and once the hold is released the purge takes the rest."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from api_kit import KEYS, SUBJECT, T0, Env
from cryptography import x509
from factories import on_backends

from collector.holds import HoldSpec
from collector.retention import RetentionService
from collector.search import parse_network
from collector.store import BatchMeta, TaggedRecord, open_store
from pipelines.keys import generate_signing_key, signing_key_pem, verify_key_pem
from privtel.cli import main

pytestmark = on_backends
LEGAL = "legal obligation: tax records (NDPA s.25(1)(c))"


def private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def count(env: Env, tenant: str, where: str = "") -> int:
    with env.api.db.tx() as cur:
        return int(cur.execute(f"SELECT COUNT(*) FROM records WHERE tenant = ? {where}",
                               (tenant,)).fetchone()[0])


def derived(env: Env, tenant: str) -> int:
    with env.api.db.tx() as cur:
        return sum(int(cur.execute(f"SELECT COUNT(*) FROM {t} WHERE tenant = ? AND record_id "
                                   "NOT IN (SELECT id FROM records WHERE tenant = ?)",
                                   (tenant, tenant)).fetchone()[0])
                   for t in ("record_addresses", "annotations", "indexed_records"))


def test_offboard_leaves_only_what_the_law_keeps(env: Env, store_url: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # one acme batch under a legal-obligation class with a fixed expiry
    store = open_store(store_url)
    try:
        recs = [env.records["acme"][0], env.records["acme"][4]]  # one holds the address
        from dataclasses import replace

        legal = [replace(r, id=os.urandom(16).hex()) for r in recs]
        store.write_batch(BatchMeta("agent-acme", "b-legal", 9, "acme", T0, T0 + 1),
                          [TaggedRecord(r, "billing", LEGAL, T0 + 400 * 86400) for r in legal])
    finally:
        store.close()
    env.api.searcher.index.refresh(force=True)
    hold, held = env.api.holds.add(HoldSpec("acme", (parse_network("a", SUBJECT),), None, None,
                                            "dispute 7"), actor="dora")
    assert held == 3 + 1  # the subject's three records, and one legal copy holding the address

    keys = tmp_path / "keys"
    keys.mkdir()
    for t in ("acme", "globex"):
        private(keys / f"tenant-{t}.key", KEYS[t].encode())
    private(keys / "tenant-acme.key.epoch1", KEYS["acme"].encode())
    certs = tmp_path / "certs"
    assert main(["certs", "init", "--dir", str(certs), "--agent", "acme/a1", "--agent",
                 "acme/a2", "--agent", "globex/g1"]) == 0
    sk = generate_signing_key()
    report_key = private(tmp_path / "report.key", signing_key_pem(sk))
    pub = tmp_path / "report.pub"
    pub.write_bytes(verify_key_pem(sk.public_key()))
    env.user("ada", "admin", "*", mfa=True)
    token = private(tmp_path / "token", env.tokens["ada"].encode())
    base = ["tenant", "offboard", "acme", "--reason", "contract C-12 ended", "--store",
            store_url, "--token-file", str(token), "--tenant-keys", str(keys), "--certs-dir",
            str(certs)]

    before = {t: count(env, t) for t in ("acme", "globex")}
    capsys.readouterr()
    assert main([*base, "--totp", env.code("ada")]) == 0  # dry run
    dry = orjson.loads(capsys.readouterr().out)
    assert dry["erase"] == {"logs": 7} and dry["keep"] == {"legal_hold": 4,
                                                          "legal_obligation": {"billing": 1}}
    assert sorted(dry["acl_users"]) == ["acme.a1", "acme.a2"]
    assert {t: count(env, t) for t in ("acme", "globex")} == before

    # not an admin: refused, audited, nothing changed
    env.user("dora", "dpo", "*", mfa=True)
    dpo_token = private(tmp_path / "dpo-token", env.tokens["dora"].encode())
    bad = [*base[:base.index("--token-file") + 1], str(dpo_token),
           *base[base.index("--token-file") + 2:]]
    assert main([*bad, "--execute", "--totp", env.code("dora"), "--report",
                 str(tmp_path / "r.json"), "--report-key", str(report_key)]) == 1
    assert count(env, "acme") == before["acme"]

    report = tmp_path / "report.json"
    assert main([*base, "--execute", "--totp", env.code("ada"), "--report", str(report),
                 "--report-key", str(report_key), "--export", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "7 record(s) erased" in out and "reload Mosquitto" in out
    # kept: 4 held (3 seeded + 1 legal copy), 1 more legal copy; nothing else
    assert count(env, "acme") == 5
    assert count(env, "acme", f"AND held = {env.api.db.dialect.false} AND legal_basis <> "
                 f"'{LEGAL}'") == 0
    assert derived(env, "acme") == 0
    assert count(env, "globex") == before["globex"]
    # a hold is in force, so the keys stay (a dispute may need the subject found)
    assert (keys / "tenant-acme.key").exists()
    acl = (certs / "acl").read_text()
    assert "user acme." not in acl and "user globex.g1" in acl and "user collector" in acl
    assert not list(certs.glob("agent-acme.*"))
    crl = x509.load_pem_x509_crl((certs / "crl.pem").read_bytes())
    assert len(list(crl)) == 2
    exported = list(tmp_path.glob("acme-*.ndjson"))
    assert len(exported) == 1 and len(exported[0].read_text().splitlines()) == 7
    assert oct(exported[0].stat().st_mode & 0o777) == "0o600"

    assert main(["tenant", "verify-report", str(report), "--public-key", str(pub)]) == 0
    doc = orjson.loads(report.read_bytes())
    assert doc["report"]["erased_total"] == 7 and doc["report"]["kept"]["legal_hold"] == 4
    assert doc["report"]["keys"]["kept_because"] == "1 legal hold(s) in force"
    assert sorted(doc["report"]["broker"]["acl_users_removed"]) == ["acme.a1", "acme.a2"]
    assert SUBJECT not in report.read_text()
    doc["report"]["erased_total"] = 6
    forged = tmp_path / "forged.json"
    forged.write_bytes(orjson.dumps(doc))
    assert main(["tenant", "verify-report", str(forged), "--public-key", str(pub)]) == 1

    # the hold is released: the purge takes the contract_end records (the tenant is
    # offboarded), the legal-obligation ones stay until their own expiry
    env.api.holds.release(hold.id, actor="dora", reason="settled")
    store = open_store(store_url)
    try:
        result = RetentionService(store).purge(now=T0 + 86400)
    finally:
        store.close()
    assert result.deleted == {"logs": 3}
    assert count(env, "acme") == 2 and count(env, "acme", f"AND legal_basis = '{LEGAL}'") == 2
    # offboarding again, now without a hold: the keys go (crypto-shredding)
    assert main([*base, "--execute", "--totp", env.code("ada"), "--report",
                 str(tmp_path / "report2.json"), "--report-key", str(report_key)]) == 0
    assert not list(keys.glob("tenant-acme*")) and (keys / "tenant-globex.key").exists()
    with env.api.db.tx() as cur:
        actions = [r[0] for r in cur.execute(
            "SELECT outcome FROM audit_log WHERE action = 'tenant.offboard' ORDER BY seq"
        ).fetchall()]
    assert actions == ["dry_run", "denied", "done", "done"]
