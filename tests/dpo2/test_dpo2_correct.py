"""Correction that replaces a field value, on both backends: the new value is
stored pseudonymised as the agent would have, the old one survives only as a
SHA-256 digest in the annotation, the request is audited, and the address
index follows the new value."""

from __future__ import annotations

import orjson
from api_kit import SUBJECT, Env, pseudo
from factories import on_backends

from pipelines.digest import sha256_hex

pytestmark = on_backends
NEW_ADDR = "203.0.113.9"


def test_correct_replaces_a_value_and_keeps_only_a_digest(env: Env) -> None:
    env.user("dora", "dpo", "acme", mfa=True)
    (lease,) = [r for r in env.records["acme"] if r.name == "dhcp.lease"]
    old = lease.fields["client_ip"]
    body = {"tenants": ["acme"], "addresses": [SUBJECT], "note": "lease was misattributed",
            "field": "client_ip", "value": NEW_ADDR, "reason": "DSR-16"}
    r = env.client.post("/v1/dsr/correct", json=body, headers=env.h("dora"))
    assert r.status_code == 200, r.text
    assert r.json()["per_tenant"] == {"acme": 1}  # only the record that has the field
    assert NEW_ADDR not in r.text and SUBJECT not in r.text
    with env.api.db.tx() as cur:
        (fields,) = cur.execute("SELECT fields FROM records WHERE tenant = 'acme' AND id = ?",
                                (lease.id,)).fetchone()
        notes = [n for (n,) in cur.execute("SELECT note FROM annotations WHERE record_id = ?",
                                           (lease.id,)).fetchall()]
        (detail,) = cur.execute("SELECT detail FROM audit_log WHERE action = 'dsr.correct'"
                                ).fetchone()
    fields = env.api.db.dialect.json(fields)
    assert fields["client_ip"] == pseudo("acme", NEW_ADDR)
    assert fields["hostname"] == lease.fields["hostname"]  # the rest untouched
    assert notes == [f"lease was misattributed [field client_ip replaced; old value "
                     f"sha256:{sha256_hex(orjson.dumps(old))}]"]
    assert old not in str(notes) and orjson.loads(detail)["per_tenant"] == {"acme": 1}
    # the index follows: the record is now found by the new address
    ex = env.client.post("/v1/dsr/export", json={"tenants": ["acme"], "addresses": [NEW_ADDR]},
                         headers=env.h("dora", totp=True))
    assert [x["id"] for x in ex.json()["records"]] == [lease.id]


def test_correct_refuses_half_a_replacement(env: Env) -> None:
    env.user("dora", "dpo", "acme", mfa=True)
    for extra in ({"field": "client_ip"}, {"value": "x"}, {"field": "Bad Name", "value": 1},
                  {"field": "x", "value": {"nested": 1}}):
        body = {"tenants": ["acme"], "addresses": [SUBJECT], "note": "n", **extra}
        r = env.client.post("/v1/dsr/correct", json=body, headers=env.h("dora"))
        assert r.status_code == 400, extra
    r = env.client.post("/v1/dsr/restrict", json={"tenants": ["acme"], "addresses": [SUBJECT],
                                                  "field": "x", "value": 1},
                        headers=env.h("dora"))
    assert r.status_code == 400
