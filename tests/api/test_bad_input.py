"""Bad input gets a clear 4xx with a reason, and no error repeats an address,
a token or anything of another tenant."""

from __future__ import annotations

import time

import pytest
from api_kit import KEYS, SUBJECT, Env, make_env, pseudo, tenant_keys

from collector.auth import Users


@pytest.fixture
def benv(env: Env) -> Env:
    env.user("ann", "security", "acme")
    env.user("dora", "dpo", "acme", mfa=True)
    env.user("nomfa", "dpo", "acme")
    return env


def post(env: Env, body: object, who: str = "ann", path: str = "/v1/search", **kw: object):
    return env.client.post(path, json=body, headers=env.h(who), **kw)


@pytest.mark.parametrize(("body", "words"), [
    ({"tenant": "acme", "colour": "red"}, "1 unknown field(s)"),
    ({"tenant": "acme", "limit": 5000}, "limit must be at most 1000"),
    ({"tenant": "acme", "limit": 0}, "limit must be a positive integer"),
    ({"tenant": "acme", "limit": "10"}, "limit must be a positive integer"),
    ({"tenant": "acme", "kind": "secret"}, "kind must be one of"),
    ({"tenant": "acme", "since": "yesterday"}, "since must be unix seconds or an ISO 8601"),
    ({"tenant": "acme", "since": "2026-01-01T00:00:00"}, "needs a time zone"),
    ({"tenant": "acme", "since": 20, "until": 10}, "since must be before until"),
    ({"tenant": "acme", "until": -5}, "until must be between 1970 and 2100"),
    ({"tenant": "acme", "cursor": "not-a-cursor"}, "cursor is not one this API issued"),
    ({"tenant": "acme", "ip": "999.1.2.3"}, "ip must be an IPv4/IPv6 address or CIDR"),
    ({"tenant": "acme", "indicators": ["192.0.2.1", "10.0.0.300"]}, "indicators[1] must be"),
    ({"tenant": "acme", "indicators": []}, "indicators must be a list of 1 to 100"),
    ({"tenant": "acme", "text": "x" * 300}, "text must be a non-empty string of at most 256"),
    ({"tenant": "ACME!"}, "tenant is required"),
    ({}, "tenant is required"),
    ([1, 2], "request body must be a JSON object"),
])
def test_malformed_search_is_400_with_reason(benv: Env, body: object, words: str) -> None:
    r = post(benv, body)
    assert r.status_code == 400, r.text
    assert words in r.json()["reason"]
    assert r.json()["request_id"] == r.headers["x-request-id"]
    for raw in ("999.1.2.3", "10.0.0.300", "192.0.2.1"):
        assert raw not in r.text


def test_not_json_oversized_unknown_route_and_method(benv: Env) -> None:
    r = benv.client.post("/v1/search", content=b"{nope", headers=benv.h("ann"))
    assert r.status_code == 400 and "not valid JSON" in r.json()["reason"]
    r = benv.client.post("/v1/search", content=b" " * 70000, headers=benv.h("ann"))
    assert r.status_code == 413 and "at most 65536 bytes" in r.json()["reason"]
    r = benv.client.get("/v1/nothing", headers=benv.h("ann"))
    assert r.status_code == 404 and "openapi.json" in r.json()["reason"]
    r = benv.client.get("/v1/search", headers=benv.h("ann"))
    assert r.status_code == 405
    r = benv.client.get("/v1/stats", params={"tenant": "acme", "x": "1"}, headers=benv.h("ann"))
    assert r.status_code == 400 and "1 unknown query parameter(s)" in r.json()["reason"]


def test_wrong_tokens_are_401_and_audited_without_the_secret(benv: Env) -> None:
    good = benv.tokens["ann"]
    tid = good.split("_")[1]
    cases = {
        None: "missing Authorization",
        "Basic abc": "must be 'Bearer <token>'",
        "Bearer ptk_nope": "malformed",
        f"Bearer ptk_{'0' * 16}_{'A' * 43}": "not valid",
        f"Bearer ptk_{tid}_{'B' * 43}": "not valid",
    }
    for header, words in cases.items():
        h = {} if header is None else {"Authorization": header}
        r = benv.client.post("/v1/search", json={"tenant": "acme"}, headers=h)
        assert r.status_code == 401 and words in r.json()["reason"], (header, r.text)
    Users(benv.api.db).revoke("ann")
    r = post(benv, {"tenant": "acme"})
    assert r.status_code == 401 and "revoked" in r.json()["reason"]
    token = Users(benv.api.db).add("brief", "security", "acme", expires_in_s=60,
                                   now=time.time() - 120)
    r = benv.client.post("/v1/search", json={"tenant": "acme"},
                         headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "expired" in r.json()["reason"]
    with benv.api.db.tx() as cur:
        rows = cur.execute("SELECT detail FROM audit_log WHERE action = 'login.failure'"
                           ).fetchall()
    assert len(rows) == 7
    assert not any(good.split("_", 2)[2] in d or "B" * 43 in d for (d,) in rows)


def test_totp_expired_wrong_replayed_missing(benv: Env) -> None:
    body = {"tenants": ["acme"], "addresses": [SUBJECT]}
    path = "/v1/dsr/export"

    def go(code: str | None, who: str = "dora") -> tuple[int, str]:
        h = benv.h(who)
        if code is not None:
            h["X-TOTP"] = code
        r = benv.client.post(path, json=body, headers=h)
        return r.status_code, r.json().get("error", "ok")

    assert go(benv.code("dora", step_offset=-4)) == (401, "mfa_expired")
    wrong = "000000" if benv.code("dora") != "000000" else "111111"
    assert go(wrong) == (401, "mfa_failed")
    assert go("12ab") == (401, "mfa_failed")
    assert go(None) == (401, "mfa_required")
    code = benv.code("dora")
    assert go(code) == (200, "ok")
    assert go(code) == (401, "mfa_replayed")
    assert go("123456", who="nomfa") == (403, "mfa_not_enrolled")


def test_other_tenant_refusal_says_nothing_about_it(benv: Env) -> None:
    exists = post(benv, {"tenant": "globex"})
    missing = post(benv, {"tenant": "nosuchtenant"})
    assert exists.status_code == missing.status_code == 403
    assert exists.json()["reason"] == missing.json()["reason"]
    assert "globex" not in exists.text


def test_indicator_without_a_key_is_a_clear_400(tmp_path) -> None:
    env = make_env(f"sqlite:///{tmp_path / 's.db'}", keys=tenant_keys("acme"))
    env.user("ann", "security", "*")
    r = post(env, {"tenant": "globex", "indicators": [SUBJECT]})
    assert r.status_code == 400 and "no pseudonymisation key" in r.json()["reason"]
    assert SUBJECT not in r.text
    r = post(env, {"tenant": "globex", "ip": pseudo("globex", SUBJECT)})
    assert r.status_code == 200 and len(r.json()["records"]) == 3
    assert "globex" in KEYS
    env.client.close()
    env.api.close()


def test_key_holder_never_shows_a_key(benv: Env) -> None:
    keys = benv.api.searcher.keys
    text = repr(keys) + str(keys)
    assert all(k not in text for k in KEYS.values())
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(keys)


def test_indicator_prefix_longer_than_the_policy_keeps_is_refused() -> None:
    import ipaddress

    from collector.search import QueryError, TenantKeys
    from pipelines.pseudonym import PrivacyPolicy, TenantKey

    keys = TenantKeys({"acme": [TenantKey.from_hex(KEYS["acme"])]},
                      PrivacyPolicy(preserve_prefix_v4=24))
    nets = keys.networks("acme", ipaddress.ip_network("192.0.2.0/24"))
    assert len(nets) == 1 and nets[0].prefixlen == 24
    assert keys.networks("acme", ipaddress.ip_network("192.0.2.7/32"))[0].prefixlen == 32
    with pytest.raises(QueryError, match="at most /24") as e:
        keys.networks("acme", ipaddress.ip_network("192.0.2.0/28"))
    assert "192.0.2" not in str(e.value)


def test_unknown_names_that_look_like_addresses_are_masked(benv: Env) -> None:
    r = post(benv, {"tenant": "acme", "192.0.2.55": 1})
    assert r.status_code == 400 and "1 unknown field(s)" in r.json()["reason"]
    assert "192.0.2.55" not in r.text
    r = benv.client.get("/v1/stats", params={"tenant": "acme", "10.9.8.7": "x"},
                        headers=benv.h("ann"))
    assert r.status_code == 400 and "10.9.8.7" not in r.text
