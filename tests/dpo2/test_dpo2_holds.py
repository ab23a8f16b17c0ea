"""Legal hold on both backends: a hold keeps records from the purge and from a
DSR erasure (which says which hold, and why), every decision is audited,
and releasing the hold lets both go ahead."""

from __future__ import annotations

import orjson
from api_kit import SUBJECT, T0, Env, pseudo
from factories import on_backends
from prometheus_client import CollectorRegistry

from collector.retention import RetentionService
from collector.store import open_store

# Past the end of the expiry partition, so PostgreSQL drops it whole when nothing in it is held.
LATER = T0 + 30 * 86400
pytestmark = on_backends


def count(env: Env, where: str = "", args: tuple = ()) -> int:
    with env.api.db.tx() as cur:
        return int(cur.execute(f"SELECT COUNT(*) FROM records {where}", args).fetchone()[0])


def audited(env: Env, action: str) -> list[dict]:
    with env.api.db.tx() as cur:
        rows = cur.execute("SELECT outcome, result_count, detail FROM audit_log WHERE action = ?"
                           " ORDER BY seq", (action,)).fetchall()
    return [{"outcome": r[0], "count": int(r[1]), "detail": orjson.loads(r[2])} for r in rows]


def add_hold(env: Env, who: str = "dora", **body: object) -> dict:
    r = env.client.post("/v1/holds", json={"tenant": "acme", "reason": "case 2026-17 dispute",
                                           **body}, headers=env.h(who, totp=True))
    assert r.status_code == 200, r.text
    return r.json()


def release(env: Env, hold_id: str) -> dict:
    r = env.client.post("/v1/holds/release", json={"id": hold_id, "reason": "settled"},
                        headers=env.h("dora", totp=True))
    assert r.status_code == 200, r.text
    return r.json()


def test_hold_blocks_purge_and_release_restores_it(env: Env, store_url: str) -> None:
    env.user("dora", "dpo", "acme", mfa=True)
    _rewrite_with_expiry(store_url, env, T0 + 3600)
    store = open_store(store_url)
    try:
        registry = CollectorRegistry()
        svc = RetentionService(store, registry=registry)
        hold = add_hold(env, since=T0, until=T0 + 300)  # first five of ten records
        assert hold["held_records"] == 5 and hold["hold"]["active"]
        assert SUBJECT not in orjson.dumps(hold).decode()

        dry = svc.purge(dry_run=True, now=LATER)
        assert dry.deleted.get("logs") == 5 and count(env, "WHERE tenant = 'acme'") == 10
        svc.purge(now=LATER)
        assert count(env, "WHERE tenant = 'acme'") == 5
        assert count(env, "WHERE tenant = 'acme' AND ts < ?", (T0 + 300,)) == 5
        assert registry.get_sample_value("privtel_legal_hold_records", {"tenant": "acme"}) == 5
        assert registry.get_sample_value("privtel_legal_holds_active") == 1

        listed = env.client.get("/v1/holds", params={"tenant": "acme"}, headers=env.h("dora"))
        assert listed.status_code == 200
        assert [h["id"] for h in listed.json()["holds"]] == [hold["hold"]["id"]]

        out = release(env, hold["hold"]["id"])
        assert out["still_held_records"] == 0 and not out["hold"]["active"]
        svc.purge(now=LATER)
        assert count(env, "WHERE tenant = 'acme'") == 0
        assert registry.get_sample_value("privtel_legal_hold_records", {"tenant": "acme"}) == 0
        assert count(env, "WHERE tenant = 'globex'") == 10  # never expired, never touched
    finally:
        store.close()
    adds, releases = audited(env, "hold.add"), audited(env, "hold.release")
    assert adds[0]["count"] == 5 and adds[0]["detail"]["reason"] == "case 2026-17 dispute"
    assert releases[0]["detail"]["reason"] == "settled"


def _rewrite_with_expiry(url: str, env: Env, expires: float) -> None:
    """Write acme's records again with an expiry, through the store (which makes the
    PostgreSQL partition), replacing the seeded copies."""
    from collector.store import BatchMeta, TaggedRecord

    recs = env.records["acme"]
    with env.api.db.tx(write=True) as cur:
        cur.execute("DELETE FROM records WHERE tenant = 'acme'")
    store = open_store(url)
    try:
        store.write_batch(BatchMeta("agent-acme", "b-expiring", 2, "acme", T0, T0 + 1),
                          [TaggedRecord(r, "logs", "legitimate interest", expires) for r in recs])
    finally:
        store.close()


def test_hold_refuses_erasure_and_release_lets_it_through(env: Env) -> None:
    env.user("dora", "dpo", "*", mfa=True)
    hold = add_hold(env, addresses=[SUBJECT])
    assert hold["held_records"] == 3
    assert hold["hold"]["subject"] and SUBJECT not in orjson.dumps(hold).decode()
    assert any(pseudo("acme", SUBJECT) in n for n in hold["hold"]["subject"])

    body = {"tenants": ["acme", "globex"], "addresses": [SUBJECT], "reason": "DSR-9"}
    r = env.client.post("/v1/dsr/erase", json=body, headers=env.h("dora", totp=True))
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["held"] == {"acme": 3, "globex": 0}
    assert res["holds"] == [{"id": hold["hold"]["id"], "tenant": "acme",
                             "reason": "case 2026-17 dispute"}]
    assert res["verified"] is True and res["status"] == "done"  # globex's went
    assert count(env, "WHERE tenant = 'acme'") == 10 and count(env, "WHERE tenant = 'globex'") == 7

    only_acme = {**body, "tenants": ["acme"]}
    r = env.client.post("/v1/dsr/erase", json=only_acme, headers=env.h("dora", totp=True))
    assert r.json()["status"] == "refused" and r.json()["held"] == {"acme": 3}
    erases = audited(env, "dsr.erase")
    assert [e["detail"]["held"] for e in erases] == [{"acme": 3, "globex": 0}, {"acme": 3}]
    assert all(e["detail"]["holds"] == [hold["hold"]["id"]] for e in erases)

    release(env, hold["hold"]["id"])
    r = env.client.post("/v1/dsr/erase", json=only_acme, headers=env.h("dora", totp=True))
    assert r.json()["status"] == "done" and r.json()["held"] == {"acme": 0}
    assert r.json()["verified"] is True and count(env, "WHERE tenant = 'acme'") == 7


def test_hold_needs_totp_a_reason_and_the_right_role(env: Env) -> None:
    env.user("dora", "dpo", "acme", mfa=True)
    env.user("sam", "security", "*", mfa=True)
    env.user("other", "dpo", "globex", mfa=True)
    h = {"tenant": "acme", "reason": "dispute"}
    assert env.client.post("/v1/holds", json=h, headers=env.h("dora")).json()["error"] == \
        "mfa_required"
    assert env.client.post("/v1/holds", json=h, headers=env.h("sam", totp=True)
                           ).status_code == 403
    assert env.client.post("/v1/holds", json=h, headers=env.h("other", totp=True)
                           ).status_code == 403
    r = env.client.post("/v1/holds", json={"tenant": "acme"}, headers=env.h("dora", totp=True))
    assert r.status_code == 400 and "reason" in r.json()["reason"]
    hold = add_hold(env)
    # another tenant's DPO may not release it; an unknown id is not found
    r = env.client.post("/v1/holds/release", json={"id": hold["hold"]["id"], "reason": "x"},
                        headers=env.h("other", totp=True))
    assert r.status_code == 403
    r = env.client.post("/v1/holds/release", json={"id": "0" * 16, "reason": "x"},
                        headers=env.h("dora", totp=True))
    assert r.status_code == 404
    assert count(env, "WHERE held = " + env.api.db.dialect.true) == 10
