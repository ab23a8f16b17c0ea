"""Lifting a restriction (GDPR Art. 18(3)) on both backends: the records come
back to the security team's search, only a DPO (or admin) with a TOTP code may
do it, it is recorded and audited, and a record that also belongs to someone
still restricted stays hidden."""

from __future__ import annotations

from typing import Any

import pytest
from api_kit import NEIGHBOUR, OTHER, SUBJECT, Env
from factories import on_backends

pytestmark = on_backends


@pytest.fixture
def uenv(env: Env) -> Env:
    env.user("dora", "dpo", "*", mfa=True)
    env.user("nomfa", "dpo", "*")
    env.user("sam", "security", "*")
    env.user("root", "admin", "*", mfa=True)
    return env


def dsr(env: Env, kind: str, addresses: list[str], tenants: tuple[str, ...] = ("acme",),
        who: str = "dora", totp: bool | None = None) -> Any:
    need = kind == "unrestrict" if totp is None else totp
    r = env.client.post(f"/v1/dsr/{kind}", json={"tenants": list(tenants),
                                                 "addresses": addresses},
                        headers=env.h(who, totp=need))
    return r


def ok(env: Env, kind: str, addresses: list[str], **kw: Any) -> dict[str, Any]:
    r = dsr(env, kind, addresses, **kw)
    assert r.status_code == 200, r.text
    assert not any(a in r.text for a in addresses)
    return dict(r.json())


def hunt(env: Env, tenant: str, address: str) -> set[str]:
    r = env.client.post("/v1/search", json={"tenant": tenant, "indicators": [address]},
                        headers=env.h("sam"))
    assert r.status_code == 200, r.text
    return {x["id"] for x in r.json()["records"]}


def test_unrestrict_round_trip(uenv: Env) -> None:
    both = ("acme", "globex")
    before = {t: hunt(uenv, t, SUBJECT) for t in both}
    assert all(len(v) == 3 for v in before.values())
    assert ok(uenv, "restrict", [SUBJECT], tenants=both)["count"] == 6
    assert all(hunt(uenv, t, SUBJECT) == set() for t in both)

    r = dsr(uenv, "unrestrict", [SUBJECT], tenants=both, who="sam", totp=False)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = dsr(uenv, "unrestrict", [SUBJECT], tenants=both, totp=False)
    assert r.status_code == 401 and r.json()["error"] == "mfa_required"
    r = dsr(uenv, "unrestrict", [SUBJECT], tenants=both, who="nomfa", totp=False)
    assert r.status_code == 403 and r.json()["error"] == "mfa_not_enrolled"
    assert all(hunt(uenv, t, SUBJECT) == set() for t in both)

    lifted = ok(uenv, "unrestrict", [SUBJECT], tenants=both)
    assert lifted["kind"] == "unrestrict" and lifted["status"] == "done"
    assert lifted["count"] == 6 and lifted["per_tenant"] == {"acme": 3, "globex": 3}
    assert lifted["kept"] == {"acme": 0, "globex": 0}
    assert {t: hunt(uenv, t, SUBJECT) for t in both} == before
    stats = uenv.client.get("/v1/stats", params={"tenant": "acme"}, headers=uenv.h("sam"))
    assert sum(stats.json()["records_by_kind"].values()) == 10
    assert ok(uenv, "unrestrict", [SUBJECT], who="root")["count"] == 0  # nothing left to lift

    listed = uenv.client.get("/v1/dsr/requests", headers=uenv.h("dora")).json()["requests"]
    row = next(x for x in listed if x["id"] == lifted["request_id"])
    assert row["kind"] == "unrestrict" and row["status"] == "done" and row["count"] == 6
    assert row["actor"] == "dora" and row["detail"]["kept"] == {"acme": 0, "globex": 0}
    assert SUBJECT not in str(row)
    with uenv.api.db.tx() as cur:
        audit = [tuple(x) for x in cur.execute(
            "SELECT actor, action, outcome, result_count FROM audit_log WHERE action = ? OR "
            "detail LIKE ? ORDER BY seq", ("dsr.unrestrict", "%dsr.unrestrict%")).fetchall()]
    assert audit == [("sam", "access.denied", "denied", 0),
                     ("dora", "mfa.failure", "denied", 0),
                     ("nomfa", "mfa.failure", "denied", 0),
                     ("dora", "dsr.unrestrict", "done", 6),
                     ("root", "dsr.unrestrict", "done", 0)]
    assert uenv.api.audit.verify().entries >= 10


def test_a_record_shared_with_a_restricted_subject_stays_hidden(uenv: Env) -> None:
    subject, other = hunt(uenv, "acme", SUBJECT), hunt(uenv, "acme", OTHER)
    shared = subject & other
    assert len(shared) == 1 and len(subject) == 3 and len(other) == 3
    ok(uenv, "restrict", [OTHER])
    ok(uenv, "restrict", [SUBJECT])
    lifted = ok(uenv, "unrestrict", [SUBJECT])
    assert lifted["count"] == 2 and lifted["kept"] == {"acme": 1}
    assert hunt(uenv, "acme", SUBJECT) == subject - shared
    assert hunt(uenv, "acme", OTHER) == set()
    lifted = ok(uenv, "unrestrict", [OTHER])
    assert lifted["count"] == 3 and lifted["kept"] == {"acme": 0}
    assert hunt(uenv, "acme", SUBJECT) == subject and hunt(uenv, "acme", OTHER) == other


def test_lifting_one_address_leaves_a_restricted_prefix_in_force(uenv: Env) -> None:
    subject, neighbour = hunt(uenv, "acme", SUBJECT), hunt(uenv, "acme", NEIGHBOUR)
    ok(uenv, "restrict", ["192.0.2.0/24"])
    lifted = ok(uenv, "unrestrict", [SUBJECT])
    assert lifted["count"] == 0 and lifted["kept"] == {"acme": 3}
    assert hunt(uenv, "acme", SUBJECT) == set()
    lifted = ok(uenv, "unrestrict", ["192.0.2.0/24"])
    assert lifted["count"] == len(subject | neighbour) and lifted["kept"] == {"acme": 0}
    assert hunt(uenv, "acme", SUBJECT) == subject
