"""Guessing is slowed down: wrong TOTP codes lock the token, bad tokens lock the
client, a right guess during the lockout is refused unchecked, the window is
moved by an injected clock (no sleeping), and every refusal is audited without
the client's address."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
from api_kit import SUBJECT, Env, make_env
from factories import on_backends

from collector.api.throttle import Throttle, Throttled, ThrottleLimits, Window
from collector.auth import TOTP_STEP

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

BODY = {"tenants": ["acme"], "addresses": [SUBJECT]}
ELSEWHERE = "203.0.113.45"


class FakeClock:
    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tenv(store_url: str, clock: FakeClock) -> Iterator[Env]:
    e = make_env(store_url, clock=clock)
    e.user("dora", "dpo", "acme", mfa=True)
    e.user("root", "admin", "*", mfa=True)
    e.user("sam", "security", "acme")
    try:
        yield e
    finally:
        e.client.close()
        e.api.close()


def wrong_code(env: Env, name: str) -> str:
    """Six digits that match no step the server would even call expired."""
    totp = pyotp.TOTP(env.secrets[name], interval=TOTP_STEP)
    now = time.time()
    taken = {totp.at(now + k * TOTP_STEP) for k in range(-22, 3)}
    return next(c for c in (f"{i:06d}" for i in range(1_000_000)) if c not in taken)


def export(env: Env, who: str, code: str | None, client: TestClient | None = None) -> Any:
    h = env.h(who)
    if code is not None:
        h["X-TOTP"] = code
    return (client or env.client).post("/v1/dsr/export", json=BODY, headers=h)


def audit_rows(env: Env, action: str) -> list[tuple[Any, ...]]:
    with env.api.db.tx() as cur:
        return [tuple(r) for r in cur.execute(
            "SELECT actor, outcome, detail FROM audit_log WHERE action = ? ORDER BY seq",
            (action,)).fetchall()]


def last_step(env: Env, name: str) -> int:
    with env.api.db.tx() as cur:
        return int(cur.execute("SELECT totp_last_step FROM api_users WHERE name = ?",
                               (name,)).fetchone()[0])


def dsr_rows(env: Env) -> int:
    with env.api.db.tx() as cur:
        return int(cur.execute("SELECT COUNT(*) FROM dsr_requests").fetchone()[0])


@on_backends
def test_totp_lockout_refuses_even_the_right_code_until_the_window_passes(
        tenv: Env, clock: FakeClock) -> None:
    bad = wrong_code(tenv, "dora")
    for _ in range(5):
        r = export(tenv, "dora", bad)
        assert r.status_code == 401 and r.json()["error"] == "mfa_failed"
    assert len(audit_rows(tenv, "mfa.failure")) == 5

    right = tenv.code("dora")  # also sets the last used step to 0
    r = export(tenv, "dora", right)
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"] == "900"
    assert r.json()["error"] == "throttled" and "900 s" in r.json()["reason"]
    assert last_step(tenv, "dora") == 0, "the code was checked (and spent) during lockout"
    assert dsr_rows(tenv) == 0

    (actor, outcome, detail), = audit_rows(tenv, "mfa.throttled")
    assert actor == "dora" and outcome == "throttled"
    assert '"retry_after_s":900' in detail and "too_many_totp_failures" in detail
    assert right not in detail

    # Only this token's second factor is locked: its plain actions and other tokens work.
    assert tenv.client.get("/v1/dsr/requests", headers=tenv.h("dora")).status_code == 200
    assert export(tenv, "root", tenv.code("root")).status_code == 200

    clock.t += 899
    r = export(tenv, "dora", tenv.code("dora"))
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert len(audit_rows(tenv, "mfa.throttled")) == 2
    clock.t += 1
    r = export(tenv, "dora", tenv.code("dora"))
    assert r.status_code == 200, r.text
    assert last_step(tenv, "dora") > 0
    assert [o for (_a, o, _d) in audit_rows(tenv, "dsr.export")] == ["done", "done"]
    assert tenv.api.audit.verify().entries == 5 + 2 + 1 + 2  # failures, refusals, list, exports


@on_backends
def test_a_good_code_clears_the_count_and_a_missing_code_is_no_guess(tenv: Env) -> None:
    bad = wrong_code(tenv, "dora")
    for _ in range(4):
        assert export(tenv, "dora", bad).status_code == 401
    assert export(tenv, "dora", tenv.code("dora")).status_code == 200
    for _ in range(4):
        r = export(tenv, "dora", bad)
        assert r.status_code == 401 and r.json()["error"] == "mfa_failed"
    for _ in range(10):
        r = export(tenv, "dora", None)
        assert r.status_code == 401 and r.json()["error"] == "mfa_required"
    assert export(tenv, "dora", tenv.code("dora")).status_code == 200
    assert audit_rows(tenv, "mfa.throttled") == []


@on_backends
def test_bad_tokens_lock_the_client_not_everyone(tenv: Env, clock: FakeClock) -> None:
    app = tenv.client.app
    other = TestClient(app, client=(ELSEWHERE, 40000))
    tid = tenv.tokens["sam"].split("_")[1]
    forged = {"Authorization": f"Bearer ptk_{tid}_{'B' * 43}"}
    for _ in range(30):  # no token at all is not a guess
        assert tenv.client.get("/v1/whoami").status_code == 401
    for _ in range(20):
        assert tenv.client.get("/v1/whoami", headers=forged).status_code == 401
    r = tenv.client.get("/v1/whoami", headers=tenv.h("sam"))
    assert r.status_code == 429 and r.headers["Retry-After"] == "60"
    assert r.json()["error"] == "throttled"
    assert other.get("/v1/whoami", headers=tenv.h("sam")).status_code == 200

    (actor, outcome, detail), = audit_rows(tenv, "login.throttled")
    assert actor == "-" and outcome == "throttled" and "too_many_bad_tokens" in detail
    with tenv.api.db.tx() as cur:
        everything = str(cur.execute("SELECT * FROM audit_log").fetchall())
    assert "testclient" not in everything and ELSEWHERE not in everything

    clock.t += 30
    assert tenv.client.get("/v1/whoami", headers=tenv.h("sam")).status_code == 429
    clock.t += 30
    assert tenv.client.get("/v1/whoami", headers=tenv.h("sam")).status_code == 200
    assert tenv.client.get("/v1/whoami", headers=forged).status_code == 401
    other.close()


def test_parallel_guesses_hold_slots() -> None:
    """Five codes being checked at once use up the window before any has failed."""
    clock = FakeClock()
    w = Window(5, 900, clock, reserve=True, max_keys=10)
    for _ in range(5):
        w.admit("tok")
    with pytest.raises(Throttled) as e:
        w.admit("tok")
    assert e.value.retry_after == 1
    w.done("tok", None)
    w.admit("tok")
    for _ in range(5):
        w.done("tok", False)
    with pytest.raises(Throttled) as e:
        w.admit("tok")
    assert e.value.retry_after == 900
    w.admit("other")


def test_key_table_is_bounded_and_clients_are_opaque() -> None:
    clock = FakeClock()
    w = Window(3, 60, clock, reserve=False, max_keys=100)
    for i in range(500):
        w.done(f"k{i}", False)
    assert 90 <= len(w) <= 100
    w.done("k499", False)
    w.done("k499", False)
    with pytest.raises(Throttled):  # the newest key is still remembered
        w.admit("k499")
    clock.t += 61
    for i in range(11):  # crosses the cap: every expired key goes, not just the oldest
        w.done(f"n{i}", False)
    assert len(w) <= 11
    t = Throttle(ThrottleLimits(), clock)
    k = t.client_key(ELSEWHERE)
    assert ELSEWHERE not in k and len(k) == 32
    assert t.client_key("2001:db8:1:2::1") == t.client_key("2001:db8:1:2:ffff::9")
    assert t.client_key("2001:db8:1:2::1") != t.client_key("2001:db8:1:3::1")
    assert t.client_key("::ffff:203.0.113.45") == k
    assert Throttle(ThrottleLimits(), clock).client_key(ELSEWHERE) != k  # per process
    with pytest.raises(ValueError, match="at least 1"):
        ThrottleLimits(totp_failures=0)
    assert ThrottleLimits() == ThrottleLimits(5, 900.0, 20, 60.0)
