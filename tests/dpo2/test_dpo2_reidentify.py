"""`dsr export --reidentify` on both backends: the subject's own addresses come
back in clear in their records, nobody else's do, it needs TOTP and the dpo
role, and it is audited under its own action."""

from __future__ import annotations

import orjson
from api_kit import NEIGHBOUR, OTHER, SUBJECT, Env, pseudo
from factories import on_backends

pytestmark = on_backends
BODY = {"tenants": ["acme"], "addresses": [SUBJECT], "reidentify": True}


def test_reidentified_export_returns_only_the_subjects_identifiers(env: Env) -> None:
    env.user("dora", "dpo", "acme", mfa=True)
    env.user("sam", "security", "acme", mfa=True)
    assert env.client.post("/v1/dsr/export", json=BODY, headers=env.h("dora")
                           ).json()["error"] == "mfa_required"
    assert env.client.post("/v1/dsr/export", json=BODY, headers=env.h("sam", totp=True)
                           ).status_code == 403
    r = env.client.post("/v1/dsr/export", json=BODY, headers=env.h("dora", totp=True))
    assert r.status_code == 200, r.text
    recs = r.json()["records"]
    assert len(recs) == 3
    text = orjson.dumps(recs).decode()
    assert pseudo("acme", SUBJECT) not in text
    assert NEIGHBOUR not in text and OTHER not in text
    drop = next(x for x in recs if x["name"] == "fw.drop")
    assert drop["fields"]["src_ip"] == SUBJECT and drop["reidentified_fields"] == ["src_ip"]
    assert drop["fields"]["dst_ip"] == pseudo("acme", OTHER)
    log = next(x for x in recs if x["name"] == "syslog")
    assert f"from {SUBJECT} port" in log["fields"]["message"]
    with env.api.db.tx() as cur:
        rows = cur.execute("SELECT action, outcome, detail FROM audit_log WHERE action IN "
                           "('dsr.export', 'dsr.export.reidentify')").fetchall()
    assert [(a, o) for a, o, _ in rows] == [("dsr.export.reidentify", "done")]
    assert SUBJECT not in rows[0][2]


def test_reidentify_only_for_a_json_export(env: Env) -> None:
    env.user("dora", "dpo", "acme", mfa=True)
    for kind, extra in (("export", {"format": "ndjson"}), ("restrict", {})):
        r = env.client.post(f"/v1/dsr/{kind}", json={**BODY, **extra},
                            headers=env.h("dora", totp=True))
        assert r.status_code == 400
