"""The access matrix in collector/auth.py is the one source: every action x
role x (with, without a TOTP code) is walked through the surface that serves it
(the API, or the CLI for local actions), and the outcome is what the matrix
and NEEDS_TOTP say. TOTP secrets are sealed in the database with the server's
key: a clear secret is sealed at start, a sealed one is useless without the key
or moved to another user."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from api_kit import Env, make_env, tenant_keys
from factories import on_backends
from test_rbac import OWN, call

from collector.api import ApiConfig, create_app
from collector.auth import (
    LOCAL_ACTIONS,
    MATRIX,
    NEEDS_TOTP,
    ROLES,
    TOTP_STEP,
    Action,
    AuthError,
    Users,
)
from collector.store import open_db
from pipelines.pseudonym import Pseudonymiser, TenantKey
from privtel.cli import main

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def walk_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Path]]:
    d = tmp_path_factory.mktemp("walk")
    e = make_env(f"sqlite:///{d / 'store.db'}")
    for role in ROLES:
        e.user(role, role, OWN, mfa=True)
        tok = d / f"{role}.token"
        tok.write_text(e.tokens[role])
        tok.chmod(0o600)
    yield e, d
    e.client.close()
    e.api.close()


def _no_code(env: Env, action: Action, who: str, tenant: str) -> int:
    """`call` with the token only."""
    original = env.h
    env.h = lambda name, totp=False, step_offset=0: original(name)  # type: ignore[method-assign]
    try:
        return call(env, action, who, tenant)
    finally:
        env.h = original  # type: ignore[method-assign]


def _local(env: Env, d: Path, action: Action, role: str, with_totp: bool) -> int:
    """The CLI's own decision against the matrix: 0 when it went ahead, else its refusal."""
    if action is Action.REIDENTIFY:
        key = d / "tenant.key"
        if not key.exists():
            key.write_text(KEY.hex() + "\n")
            key.chmod(0o600)
        argv = ["reidentify", "--key-file", str(key), "--store", env.url, "--tenant", OWN,
                "--reason", "walk the access matrix", "--token-file", str(d / f"{role}.token"),
                *(["--totp", env.code(role)] if with_totp else []),
                Pseudonymiser(TenantKey.from_hex(KEY.hex())).ip("192.0.2.10")]
        return 0 if main(argv) == 0 else 1
    assert action is Action.TENANT_OFFBOARD
    argv = ["tenant", "offboard", OWN, "--reason", "walk", "--store", env.url,
            "--token-file", str(d / f"{role}.token")]
    if with_totp:
        argv += ["--totp", env.code(role)]
    return main(argv)  # a dry run: the decision is the same as for --execute


@pytest.mark.parametrize("with_totp", [True, False], ids=["totp", "token-only"])
@pytest.mark.parametrize("action", sorted(Action))
@pytest.mark.parametrize("role", ROLES)
def test_walk_the_matrix(walk_env: tuple[Env, Path], role: str, action: Action,
                         with_totp: bool) -> None:
    env, d = walk_env
    allowed = action in MATRIX[role]
    needs = action in NEEDS_TOTP
    if action in LOCAL_ACTIONS:
        rc = _local(env, d, action, role, with_totp)
        assert rc == (0 if allowed and (with_totp or not needs) else 1), (role, action)
        return
    status = call(env, action, role, OWN) if with_totp else _no_code(env, action, role, OWN)
    want = 403 if not allowed else 401 if needs and not with_totp else 200
    assert status == want, (role, action, with_totp, status)


@on_backends
def test_totp_secrets_are_sealed_and_clear_ones_sealed_at_start(store_url: str) -> None:
    env = make_env(store_url)
    try:
        old = Users(env.api.db)  # a server from before the key: enrols in clear
        old.add("olga", "dpo", "acme")
        clear = pyotp.parse_uri(old.enrol_totp("olga")).secret
        sealed_users = Users(env.api.db, KEY)
        token = sealed_users.add("dora", "dpo", "acme")
        secret = pyotp.parse_uri(sealed_users.enrol_totp("dora")).secret
        with env.api.db.tx() as cur:
            rows = dict(cur.execute("SELECT name, totp_secret FROM api_users").fetchall())
        assert rows["olga"] == clear
        assert rows["dora"].startswith("enc1:") and secret not in rows["dora"]

        app = create_app(ApiConfig(store_url=env.url, keys=tenant_keys(), index_interval_s=0.0,
                                   totp_key=KEY))
        keyed = Env(type(env.client)(app), env.url, env.records)
        try:
            with keyed.api.db.tx() as cur:
                rows = dict(cur.execute("SELECT name, totp_secret FROM api_users").fetchall())
            assert rows["olga"].startswith("enc1:") and clear not in rows["olga"]
            keyed.tokens["dora"], keyed.secrets["dora"] = token, secret
            r = keyed.client.post("/v1/holds", json={"tenant": "acme", "reason": "r"},
                                  headers=keyed.h("dora", totp=True))
            assert r.status_code == 200, r.text
            # the server without the key cannot use a sealed secret, and says why
            env.tokens["dora"], env.secrets["dora"] = token, secret
            r = env.client.post("/v1/holds", json={"tenant": "acme", "reason": "r"},
                                headers=env.h("dora", totp=True))
            assert r.status_code == 500 and r.json()["error"] == "mfa_unavailable"
            # a sealed secret copied to another user's row does not open there
            with keyed.api.db.tx(write=True) as cur:
                cur.execute("UPDATE api_users SET totp_secret = ? WHERE name = 'olga'",
                            (rows["dora"],))
            users = Users(keyed.api.db, KEY)
            p = users.authenticate(f"Bearer {token}")
            moved = dataclasses.replace(p, name="olga")
            with pytest.raises(AuthError) as e:
                users.check_totp(moved, pyotp.TOTP(secret, interval=TOTP_STEP).now())
            assert e.value.code == "mfa_unavailable"
        finally:
            keyed.client.close()
            keyed.api.close()
    finally:
        env.client.close()
        env.api.close()


def test_totp_key_file_cli(tmp_path: Path) -> None:
    f = tmp_path / "totp.key"
    assert main(["users", "totp-key-init", str(f)]) == 0
    assert oct(f.stat().st_mode & 0o777) == "0o600" and len(bytes.fromhex(f.read_text())) == 32
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["users", "add", "dora", "--role", "dpo", "--tenant", "acme", "--store",
                 url]) == 0
    assert main(["users", "mfa-enrol", "dora", "--store", url, "--totp-key-file",
                 str(f)]) == 0
    db = open_db(url)
    try:
        with db.tx() as cur:
            (stored,) = cur.execute("SELECT totp_secret FROM api_users").fetchone()
    finally:
        db.close()
    assert stored.startswith("enc1:")
    os.chmod(f, 0o644)
    assert main(["users", "mfa-enrol", "dora", "--store", url, "--totp-key-file",
                 str(f)]) == 2
