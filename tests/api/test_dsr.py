"""DSR round trip on both backends: export finds everything, restrict hides
from security, correct links a note, erase removes every copy and is
verified, every request is recorded, the audit chain verifies and a tampered
entry is caught."""

from __future__ import annotations

import orjson
import pytest
from api_kit import NEIGHBOUR, SUBJECT, Env, pseudo
from factories import on_backends

from privtel.cli import main

pytestmark = on_backends
TENANTS = ["acme", "globex"]


def dsr(env: Env, kind: str, **body: object) -> dict:
    totp = kind in ("export", "erase")
    r = env.client.post(f"/v1/dsr/{kind}", json={"tenants": TENANTS, "addresses": [SUBJECT],
                                                  **body}, headers=env.h("dora", totp=totp))
    assert r.status_code == 200, r.text
    assert SUBJECT not in r.text
    return r.json()


def hunt(env: Env, tenant: str, **body: object) -> list[dict]:
    r = env.client.post("/v1/search", json={"tenant": tenant, **body}, headers=env.h("sam"))
    assert r.status_code == 200, r.text
    return r.json()["records"]


def count(env: Env, table: str, where: str = "", args: tuple = ()) -> int:
    with env.api.db.tx() as cur:
        return int(cur.execute(f"SELECT COUNT(*) FROM {table} {where}", args).fetchone()[0])


def test_dsr_round_trip(env: Env, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    env.user("dora", "dpo", "*", mfa=True)
    env.user("sam", "security", "*")
    want = {t: {r.id for r in env.records[t]
                if pseudo(t, SUBJECT) in orjson.dumps(r.fields).decode()} for t in TENANTS}
    assert all(len(v) == 3 for v in want.values())

    exported = dsr(env, "export", reason="DSR-1 access")
    assert exported["per_tenant"] == {"acme": 3, "globex": 3}
    got = {t: {r["id"] for r in exported["records"] if r["tenant"] == t} for t in TENANTS}
    assert got == want

    restricted = dsr(env, "restrict", reason="DSR-2")
    assert restricted["count"] == 6
    for t in TENANTS:
        assert hunt(env, t, indicators=[SUBJECT]) == []
        assert len(hunt(env, t)) == 7
    assert dsr(env, "export")["count"] == 6  # the DPO still sees them

    note = f"subject says the lease at {SUBJECT} was a shared kiosk"
    corrected = dsr(env, "correct", note=note)
    assert corrected["count"] == 6
    with env.api.db.tx() as cur:
        notes = [n for (n,) in cur.execute("SELECT note FROM annotations").fetchall()]
    assert len(notes) == 6 and not any(SUBJECT in n for n in notes)
    assert pseudo("acme", SUBJECT) in notes[0] or pseudo("globex", SUBJECT) in notes[0]
    again = dsr(env, "export")
    assert all(len(r["annotations"]) == 1 for r in again["records"])

    neighbours_before = len(hunt(env, "acme", indicators=[NEIGHBOUR]))
    erased = dsr(env, "erase", reason="DSR-3 erasure")
    assert erased["count"] == 6 and erased["verified"] is True and erased["status"] == "done"
    all_ids = tuple(want["acme"] | want["globex"])
    marks = ", ".join("?" for _ in all_ids)
    assert count(env, "records", f"WHERE id IN ({marks})", all_ids) == 0
    assert count(env, "record_addresses", f"WHERE record_id IN ({marks})", all_ids) == 0
    assert count(env, "annotations") == 0
    assert count(env, "indexed_records", f"WHERE record_id IN ({marks})", all_ids) == 0
    assert dsr(env, "export")["count"] == 0
    for t in TENANTS:
        assert hunt(env, t, indicators=[SUBJECT]) == []
        assert len(hunt(env, t)) == 7
    assert len(hunt(env, "acme", indicators=[NEIGHBOUR])) == neighbours_before == 2

    listed = env.client.get("/v1/dsr/requests", headers=env.h("dora")).json()["requests"]
    kinds = [r["kind"] for r in listed]
    assert kinds.count("export") == 4 and {"restrict", "correct", "erase"} <= set(kinds)
    assert all(r["status"] == "done" for r in listed)
    erase_row = next(r for r in listed if r["kind"] == "erase")
    assert erase_row["detail"]["verified"] is True and erase_row["count"] == 6
    assert erase_row["subject"]["acme"] == [f"{pseudo('acme', SUBJECT)}/32"]
    with env.api.db.tx() as cur:
        stored = [s for (s,) in cur.execute("SELECT subject FROM dsr_requests").fetchall()]
    assert not any(SUBJECT in s for s in stored)

    v = env.client.get("/v1/audit/verify", headers=env.h("dora"))
    assert v.status_code == 200 and v.json()["entries"] >= 12
    assert main(["audit", "verify", "--store", store_url]) == 0
    assert "audit log OK" in capsys.readouterr().out

    with env.api.db.tx(write=True) as cur:
        cur.execute("UPDATE audit_log SET result_count = 0 WHERE action = 'dsr.erase'")
    assert main(["audit", "verify", "--store", store_url]) == 1
    assert "BROKEN" in capsys.readouterr().err
    v = env.client.get("/v1/audit/verify", headers=env.h("dora"))
    assert v.status_code == 409 and v.json()["error"] == "audit_chain_broken"


def test_deleted_audit_entry_is_detected(env: Env, store_url: str) -> None:
    env.user("sam", "security", "acme")
    for _ in range(3):
        hunt(env, "acme")
    assert env.api.audit.verify().entries == 3
    with env.api.db.tx(write=True) as cur:
        cur.execute("DELETE FROM audit_log WHERE seq = 2")
    with pytest.raises(ValueError, match="audit entry 1"):
        env.api.audit.verify()
