"""Every action with every role, against the token's own tenant and another:
allowed exactly where the matrix says so, and MFA where it is required."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from api_kit import SUBJECT, Env, make_env
from starlette.routing import Route

from collector.auth import LOCAL_ACTIONS, MATRIX, NEEDS_TOTP, ROLES, Action
from collector.holds import HoldSpec

OWN, OTHER_TENANT = "acme", "globex"


def call(env: Env, action: Action, who: str, tenant: str) -> int:
    h = env.h(who, totp=action in NEEDS_TOTP)
    c = env.client
    dsr_body = {"tenants": [tenant], "addresses": [SUBJECT]}
    requests: dict[Action, Callable[[], object]] = {
        Action.STATS: lambda: c.get("/v1/stats", params={"tenant": tenant}, headers=h),
        Action.SEARCH: lambda: c.post("/v1/search", json={"tenant": tenant}, headers=h),
        Action.SEARCH_INDICATOR: lambda: c.post(
            "/v1/search", json={"tenant": tenant, "indicators": [SUBJECT]}, headers=h),
        Action.SEARCH_EXPORT: lambda: c.post("/v1/search/export", json={"tenant": tenant},
                                             headers=h),
        Action.DSR_EXPORT: lambda: c.post("/v1/dsr/export", json=dsr_body, headers=h),
        Action.DSR_EXPORT_REIDENTIFY: lambda: c.post(
            "/v1/dsr/export", json={**dsr_body, "reidentify": True}, headers=h),
        Action.DSR_ERASE: lambda: c.post("/v1/dsr/erase", json=dsr_body, headers=h),
        Action.DSR_RESTRICT: lambda: c.post("/v1/dsr/restrict", json=dsr_body, headers=h),
        Action.DSR_UNRESTRICT: lambda: c.post("/v1/dsr/unrestrict", json=dsr_body, headers=h),
        Action.DSR_CORRECT: lambda: c.post("/v1/dsr/correct",
                                           json={**dsr_body, "note": "fixed"}, headers=h),
        Action.DSR_LIST: lambda: c.get("/v1/dsr/requests", headers=h),
        Action.DSR_OBJECT: lambda: c.post("/v1/dsr/object", json=dsr_body, headers=h),
        Action.DSR_UNOBJECT: lambda: c.post("/v1/dsr/unobject", json=dsr_body, headers=h),
        Action.AUDIT_VERIFY: lambda: c.get("/v1/audit/verify", headers=h),
        Action.HOLD_ADD: lambda: c.post("/v1/holds", json={"tenant": tenant, "reason": "r"},
                                        headers=h),
        Action.HOLD_LIST: lambda: c.get("/v1/holds", params={"tenant": tenant}, headers=h),
        Action.HOLD_RELEASE: lambda: c.post("/v1/holds/release", json={
            "id": env.api.holds.add(HoldSpec(tenant, None, None, None, "r"), actor="t")[0].id,
            "reason": "r"}, headers=h),
    }
    assert set(requests) == set(Action) - LOCAL_ACTIONS, "every action needs a request here"
    return int(requests[action]().status_code)  # type: ignore[attr-defined]


TENANT_FREE = {Action.DSR_LIST, Action.AUDIT_VERIFY}


@pytest.fixture(scope="module")
def menv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    path = tmp_path_factory.mktemp("rbac") / "store.db"
    e = make_env(f"sqlite:///{path}")
    for role in ROLES:
        e.user(role, role, OWN, mfa=True)
    e.user("all-noc", "noc", "*")
    yield e
    e.client.close()
    e.api.close()


@pytest.mark.parametrize("tenant", [OWN, OTHER_TENANT])
@pytest.mark.parametrize("action", sorted(set(Action) - LOCAL_ACTIONS))
@pytest.mark.parametrize("role", ROLES)
def test_matrix(menv: Env, role: str, action: Action, tenant: str) -> None:
    allowed = action in MATRIX[role] and (tenant == OWN or action in TENANT_FREE)
    status = call(menv, action, role, tenant)
    assert status == (200 if allowed else 403), (role, action, tenant, status)


def test_matrix_is_the_only_place_and_is_complete() -> None:
    assert set(MATRIX) == set(ROLES)
    assert MATRIX["admin"] == frozenset(Action)
    assert MATRIX["noc"] == {Action.STATS}
    assert Action.SEARCH not in MATRIX["dpo"] and Action.DSR_ERASE not in MATRIX["security"]
    assert MATRIX["dpo"] >= NEEDS_TOTP - {Action.TENANT_OFFBOARD}  # offboarding: admin only
    assert Action.DSR_UNRESTRICT in NEEDS_TOTP and Action.DSR_UNRESTRICT not in MATRIX["security"]


def test_every_v1_route_is_exercised(menv: Env) -> None:
    paths = {r.path for r in menv.client.app.routes if isinstance(r, Route)}  # type: ignore
    v1 = {p for p in paths if p.startswith("/v1/")} - {"/v1/whoami"}
    assert v1 == {"/v1/stats", "/v1/search", "/v1/search/export", "/v1/dsr/export",
                  "/v1/dsr/erase", "/v1/dsr/restrict", "/v1/dsr/unrestrict", "/v1/dsr/correct",
                  "/v1/dsr/object", "/v1/dsr/unobject",
                  "/v1/dsr/requests", "/v1/audit/verify", "/v1/holds", "/v1/holds/release"}


@pytest.mark.parametrize("action", sorted(NEEDS_TOTP - LOCAL_ACTIONS))
@pytest.mark.parametrize("role", ["dpo", "admin"])
def test_reveal_and_delete_need_a_totp(menv: Env, role: str, action: Action) -> None:
    if action.value.startswith("dsr."):
        path = f"/v1/dsr/{action.value.split('.')[1]}"
        body: dict[str, object] = {"tenants": [OWN], "addresses": [SUBJECT]}
        if action is Action.DSR_EXPORT_REIDENTIFY:
            body["reidentify"] = True
    elif action is Action.HOLD_ADD:
        path, body = "/v1/holds", {"tenant": OWN, "reason": "r"}
    else:
        hold = menv.api.holds.add(HoldSpec(OWN, None, None, None, "r"), actor="t")[0]
        path, body = "/v1/holds/release", {"id": hold.id, "reason": "r"}
    r = menv.client.post(path, json=body, headers=menv.h(role))
    assert r.status_code == 401 and r.json()["error"] == "mfa_required"


def test_wildcard_scope_reaches_every_tenant_but_not_other_actions(menv: Env) -> None:
    assert call(menv, Action.STATS, "all-noc", OTHER_TENANT) == 200
    assert call(menv, Action.SEARCH, "all-noc", OWN) == 403


def test_refusals_are_audited(menv: Env) -> None:
    call(menv, Action.SEARCH, "noc", OWN)
    with menv.api.db.tx() as cur:
        rows = cur.execute("SELECT actor, outcome FROM audit_log WHERE action = "
                           "'access.denied'").fetchall()
    assert ("noc", "denied") in [tuple(r) for r in rows]
