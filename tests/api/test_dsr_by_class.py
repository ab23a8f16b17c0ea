"""A data subject found by any identifier class (issue 17, item 8), on both backends:
search by `user:`, `email:`, `host:`, `mac:`, `phone:` subjects; DSR export,
restrict (which also covers the subject's records that arrive later), unrestrict
and erase (verified by a second search, every derived row gone) by class; the
raw values are never in a response, an error, the audit log, the request rows
or a log line."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from api_kit import KEYS, T0, Env, make_env, tenant_keys
from factories import on_backends
from peers.ports import free_port
from prometheus_client import CollectorRegistry

from collector.api import ApiConfig, create_app
from collector.api.serve import server
from collector.retention import RetentionService
from collector.store import BatchMeta, TaggedRecord, open_store
from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.record import Kind, Record
from privtel.cli import main

pytestmark = on_backends

LOGIN, EMAIL, PHONE = "adaeze", "adaeze@clinic.ng", "+2348035550147"
MAC, HOST, PERSON = "00:1b:63:84:45:e6", "iphone-de-chinedu", "Adaeze Okafor"
RAW = (LOGIN, EMAIL, "8035550147", "84:45:e6", HOST, "Okafor")
# what each seeded record names, by a label the tests use
SEEDED: dict[str, tuple[Kind, str, dict[str, Any]]] = {
    "ssh": (Kind.LOG, "syslog", {"message": f"sshd[411]: Accepted publickey for {LOGIN} "
                                            "from 192.0.2.50 port 52144 ssh2"}),
    "lease": (Kind.EVENT, "dhcp.lease", {"client_mac": MAC, "hostname": HOST,
                                         "client_ip": "192.0.2.60"}),
    "contact": (Kind.INVENTORY, "snmp.system",
                {"sys_contact": f"{PERSON} <{EMAIL}> +234 803 555 0147"}),
    "mail": (Kind.LOG, "syslog", {"message": f"postfix/local: to=<{EMAIL}>, status=sent"}),
    "vpn": (Kind.EVENT, "vpn.login", {"user": LOGIN, "phone": "08035550147"}),
    "dnsmasq": (Kind.LOG, "syslog", {"message": f"dnsmasq-dhcp[77]: DHCPACK(eth0) 192.0.2.61 "
                                                f"{MAC} {HOST}"}),
    "other": (Kind.LOG, "syslog", {"message": "sshd[9]: Accepted publickey for chukwu from "
                                              "192.0.2.70 port 40000 ssh2"}),
}
FOUND_BY = {"user": {"ssh", "vpn"}, "email": {"contact", "mail"}, "phone": {"contact", "vpn"},
            "mac": {"lease", "dnsmasq"}, "host": {"lease", "dnsmasq"}, "person": {"contact"}}
SUBJECT_LINES = {"user": f"user:{LOGIN}", "email": "email:Adaeze@Clinic.ng",
                 "phone": "phone:0803 555 0147", "mac": "mac:001b.6384.45e6",
                 "host": f"host:{HOST}", "person": f"person:{PERSON}"}


def store_batch(url: str, tenant: str, records: list[Record], received_at: float,
                expires: float | None = None) -> None:
    store = open_store(url)
    try:
        assert store.write_batch(
            BatchMeta(agent_id=f"agent-{tenant}", batch_id=f"cls-{os.urandom(4).hex()}", seq=5,
                      tenant=tenant, created=received_at, received_at=received_at),
            [TaggedRecord(r, "logs", "legitimate interest", expires) for r in records])
    finally:
        store.close()


def seed_classes(env: Env, tenant: str = "acme", expires: float | None = None
                 ) -> dict[str, str]:
    """The records above, pseudonymised by the agent's pseudonymiser and stored;
    label -> record id."""
    p = Pseudonymiser(TenantKey.from_hex(KEYS[tenant]))
    recs = {k: p.record(Record(kind=kind, tenant=tenant, site="clinic", device="gw1", name=n,
                               fields=dict(f), ts=T0 + 1000 + i))
            for i, (k, (kind, n, f)) in enumerate(SEEDED.items())}
    store_batch(env.url, tenant, list(recs.values()), T0 + 1001, expires)
    for r in recs.values():
        assert not any(raw in orjson.dumps(r.fields).decode() for raw in RAW)
    return {k: r.id for k, r in recs.items()}


@pytest.fixture
def cenv(env: Env) -> Env:
    env.user("dora", "dpo", "*", mfa=True)
    env.user("sam", "security", "*")
    return env


def search(env: Env, tenant: str = "acme", **body: Any) -> set[str]:
    r = env.client.post("/v1/search", json={"tenant": tenant, "limit": 1000, **body},
                        headers=env.h("sam"))
    assert r.status_code == 200, r.text
    assert not any(raw in r.text for raw in RAW)
    return {x["id"] for x in r.json()["records"]}


def dsr(env: Env, kind: str, subjects: Any, tenants: tuple[str, ...] = ("acme",),
        **body: Any) -> dict[str, Any]:
    totp = kind in ("export", "erase", "unrestrict")
    r = env.client.post(f"/v1/dsr/{kind}", json={"tenants": list(tenants),
                                                 "subjects": subjects, **body},
                        headers=env.h("dora", totp=totp))
    assert r.status_code == 200, r.text
    assert not any(raw in r.text for raw in RAW)
    return dict(r.json())


def test_search_by_every_class(cenv: Env) -> None:
    ids = seed_classes(cenv)
    for cls, line in SUBJECT_LINES.items():
        got = search(cenv, subjects=[line])
        assert got == {ids[k] for k in FOUND_BY[cls]}, cls
    # the object form and the subject-file text form say the same
    assert search(cenv, subjects=[{"class": "user", "value": LOGIN}]) == \
        {ids["ssh"], ids["vpn"]}
    assert search(cenv, subjects=f"# ticket 7\n{SUBJECT_LINES['email']}\nip:192.0.2.50\n") == \
        {ids["contact"], ids["mail"], ids["ssh"]}
    # a token seen in a record finds every record holding it
    r = cenv.client.post("/v1/search", json={"tenant": "acme", "subjects": [f"user:{LOGIN}"]},
                         headers=cenv.h("sam"))
    (tok,) = r.json()["subject_tokens"]
    assert search(cenv, token=tok) == {ids["ssh"], ids["vpn"]}
    # another tenant's key gives other tokens: nothing of acme's is found from globex
    assert search(cenv, tenant="globex", subjects=[f"user:{LOGIN}"]) == set()


def test_dsr_by_user_and_email_export_restrict_later_records_erase(cenv: Env) -> None:
    ids = seed_classes(cenv)
    subject = [f"user:{LOGIN}", {"class": "email", "value": EMAIL}]
    mine = {ids[k] for k in ("ssh", "vpn", "contact", "mail")}

    exported = dsr(cenv, "export", subject, reason="DSR-11 access")
    assert {r["id"] for r in exported["records"]} == mine
    assert exported["per_tenant"] == {"acme": 4}

    restricted = dsr(cenv, "restrict", subject, reason="DSR-12")
    assert restricted["count"] == 4
    assert search(cenv, subjects=[f"user:{LOGIN}"]) == set()
    assert search(cenv, text="postfix") == set()
    assert ids["other"] in search(cenv, text="Accepted")
    # a record of the subject arriving after the restriction is hidden as it is indexed
    p = Pseudonymiser(TenantKey.from_hex(KEYS["acme"]))
    late = p.record(Record(kind=Kind.LOG, tenant="acme", site="clinic", device="gw1",
                           name="syslog", ts=T0 + 5000,
                           fields={"message": f"sshd[500]: Accepted password for {LOGIN} from "
                                              "192.0.2.51 port 1 ssh2"}))
    unrelated = p.record(Record(kind=Kind.LOG, tenant="acme", site="clinic", device="gw1",
                                name="syslog", ts=T0 + 5001,
                                fields={"message": "sshd[501]: Accepted password for chukwu "
                                                   "from 192.0.2.52 port 2 ssh2"}))
    store_batch(cenv.url, "acme", [late, unrelated], T0 + 5002)
    seen = search(cenv, text="Accepted password")
    assert late.id not in seen and unrelated.id in seen
    with cenv.api.db.tx() as cur:
        flag = cur.execute("SELECT restricted FROM records WHERE id = ?", (late.id,)).fetchone()
    assert bool(flag[0]) is True
    assert late.id in {r["id"] for r in dsr(cenv, "export", subject)["records"]}

    lifted = dsr(cenv, "unrestrict", subject, reason="DSR-12 lifted")
    assert lifted["count"] == 5 and lifted["kept"] == {"acme": 0}
    assert search(cenv, subjects=[f"user:{LOGIN}"]) == {ids["ssh"], ids["vpn"], late.id}

    erased = dsr(cenv, "erase", subject, reason="DSR-13 erasure")
    assert erased["count"] == 5 and erased["verified"] is True
    gone = sorted(mine | {late.id})
    marks = ", ".join("?" for _ in gone)
    with cenv.api.db.tx() as cur:
        for table, col in (("records", "id"), ("record_tokens", "record_id"),
                           ("record_addresses", "record_id"), ("indexed_records", "record_id")):
            n = cur.execute(f"SELECT COUNT(*) FROM {table} WHERE {col} IN ({marks})",
                            gone).fetchone()[0]
            assert n == 0, table
    assert search(cenv, subjects=subject) == set()
    assert dsr(cenv, "export", subject)["count"] == 0
    assert ids["other"] in search(cenv)  # someone else's records stay


@pytest.mark.parametrize("cls", ["host", "mac", "phone"])
def test_dsr_by_host_mac_phone(cenv: Env, cls: str) -> None:
    ids = seed_classes(cenv)
    want = {ids[k] for k in FOUND_BY[cls]}
    assert {r["id"] for r in dsr(cenv, "export", [SUBJECT_LINES[cls]])["records"]} == want
    assert dsr(cenv, "restrict", [SUBJECT_LINES[cls]])["count"] == len(want)
    assert search(cenv, subjects=[SUBJECT_LINES[cls]]) == set()
    erased = dsr(cenv, "erase", [SUBJECT_LINES[cls]])
    assert erased["verified"] is True and erased["count"] == len(want)
    assert dsr(cenv, "export", [SUBJECT_LINES[cls]])["count"] == 0


def test_hold_by_class_keeps_the_subjects_records_from_erasure_and_purge(cenv: Env) -> None:
    """A legal hold names its subject by login name and e-mail: erasure keeps exactly
    the held records (and says so), the purge skips them, release lets both through;
    the hold row keeps tokens only."""
    ids = seed_classes(cenv, expires=T0 + 3600)
    held = {ids[k] for k in ("ssh", "vpn", "contact", "mail")}
    r = cenv.client.post("/v1/holds", json={
        "tenant": "acme", "reason": "case 88", "subjects": f"user:{LOGIN}\nemail:{EMAIL}\n"},
        headers=cenv.h("dora", totp=True))
    assert r.status_code == 200, r.text
    assert r.json()["held_records"] == len(held)
    assert not any(raw in r.text for raw in RAW)
    hold = r.json()["hold"]
    assert hold["subject"] and all(t.startswith("tk-") for t in hold["subject"])
    with cenv.api.db.tx() as cur:
        marked = {i for (i,) in cur.execute(
            f"SELECT id FROM records WHERE held = {cur.dialect.true}").fetchall()}
    assert marked == held

    everyone = [f"user:{LOGIN}", f"email:{EMAIL}", f"host:{HOST}"]
    erased = dsr(cenv, "erase", everyone, reason="DSR-20")
    assert erased["held"] == {"acme": len(held)}
    assert erased["holds"] == [{"id": hold["id"], "tenant": "acme", "reason": "case 88"}]
    left = {r["id"] for r in dsr(cenv, "export", everyone)["records"]}
    assert left == held  # the host's lease and dnsmasq records went, the held ones stayed

    store = open_store(cenv.url)
    try:
        RetentionService(store, registry=CollectorRegistry()).purge(now=T0 + 30 * 86400)
    finally:
        store.close()
    assert {r["id"] for r in dsr(cenv, "export", everyone)["records"]} == held

    r = cenv.client.post("/v1/holds/release", json={"id": hold["id"], "reason": "settled"},
                         headers=cenv.h("dora", totp=True))
    assert r.status_code == 200 and r.json()["still_held_records"] == 0
    assert dsr(cenv, "erase", everyone)["verified"] is True
    assert dsr(cenv, "export", everyone)["count"] == 0


def test_a_hold_by_host_covers_what_an_erasure_by_it_would_reach(cenv: Env) -> None:
    """The device's own records too (found through the stored device token, as search
    and DSR find them), not only records naming the host in a field."""
    ids = seed_classes(cenv)
    r = cenv.client.post("/v1/holds", json={"tenant": "acme", "reason": "case 89",
                                            "subjects": ["host:gw1"]},
                         headers=cenv.h("dora", totp=True))
    assert r.status_code == 200 and r.json()["held_records"] == len(ids)
    erased = dsr(cenv, "erase", ["host:gw1"])
    assert erased["held"] == {"acme": len(ids)}
    assert search(cenv, subjects=["host:gw1"]) == set(ids.values())


def test_a_restriction_stays_while_another_subject_holds_the_record(cenv: Env) -> None:
    """Two subjects share the contact record (e-mail and phone): lifting one keeps it."""
    ids = seed_classes(cenv)
    dsr(cenv, "restrict", [f"email:{EMAIL}"])
    dsr(cenv, "restrict", [f"phone:{PHONE}"])
    lifted = dsr(cenv, "unrestrict", [f"email:{EMAIL}"])
    assert lifted["kept"] == {"acme": 1}
    assert search(cenv, subjects=[f"email:{EMAIL}"]) == {ids["mail"]}


def test_raw_values_never_stored_logged_or_echoed(cenv: Env,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    seed_classes(cenv)
    caplog.set_level(logging.DEBUG)
    dsr(cenv, "export", [f"user:{LOGIN}", f"email:{EMAIL}", f"phone:{PHONE}"])
    dsr(cenv, "restrict", [f"host:{HOST}", f"mac:{MAC}"])
    bad: list[tuple[str, Any]] = [
        ("/v1/search", {"tenant": "acme", "subjects": ["email:adaeze-at-clinic.ng"]}),
        ("/v1/search", {"tenant": "acme", "subjects": ["phone:0147-x"]}),
        ("/v1/search", {"tenant": "acme", "subjects": [f"login:{LOGIN}"]}),
        ("/v1/search", {"tenant": "acme", "subjects": ["mac:84:45:e6:zz"]}),
        ("/v1/search", {"tenant": "acme", "subjects": [{"class": "user", "value": LOGIN,
                                                        "why": EMAIL}]}),
        ("/v1/search", {"tenant": "acme", EMAIL: 1}),
        ("/v1/search", {"tenant": "acme", "IP10.9.8.5": 1, "aabb-ccdd-eeff": 2}),
        ("/v1/search", {"tenant": "acme", "token": HOST}),
        ("/v1/dsr/export", {"tenants": ["acme"], "subjects": [f"user:{LOGIN}"],
                            LOGIN: True}),
        ("/v1/dsr/restrict", {"tenants": ["acme"], "subjects": ["ip:10.9.8.300"],
                              "note": PERSON}),
    ]
    for path, body in bad:
        who = cenv.h("sam") if path == "/v1/search" else cenv.h("dora", totp=True)
        r = cenv.client.post(path, json=body, headers=who)
        assert r.status_code == 400, (path, r.text)
        assert not any(raw in r.text for raw in (*RAW, "10.9.8", "ccdd", "zz")), r.text
    r = cenv.client.get("/v1/stats", params={"tenant": "acme", EMAIL: "1", PHONE: "2"},
                        headers=cenv.h("sam"))
    assert r.status_code == 400 and "2 unknown query parameter(s)" in r.json()["reason"]
    assert not any(raw in r.text for raw in (*RAW, "2348035550147"))
    # nothing raw in what the server keeps or logs
    with cenv.api.db.tx() as cur:
        kept = [orjson.dumps(row).decode() for t in ("audit_log", "dsr_requests")
                for row in cur.execute(f"SELECT * FROM {t}").fetchall()]
        entries = cur.execute("SELECT detail FROM audit_log WHERE action = 'dsr.export'"
                              ).fetchall()
    assert kept and not any(raw in k for k in kept for raw in (*RAW, "2348035550147"))
    assert orjson.loads(entries[0][0])["subjects"] == {"email": 1, "phone": 1, "user": 1}
    logged = "\n".join(r.getMessage() for r in caplog.records
                        if r.name != "httpx")  # the test's own client logs what it sends
    assert not any(raw in logged for raw in (*RAW, "2348035550147"))


@pytest.fixture
def live_http(store_url: str) -> Iterator[tuple[Env, str]]:
    """The API on a loopback port (plain HTTP) for the command line."""
    e = make_env(store_url)
    port = free_port()
    app = create_app(ApiConfig(store_url=store_url, keys=tenant_keys(), index_interval_s=0.0))
    srv = server(app, host="127.0.0.1", port=port, log_level="warning")
    t = threading.Thread(target=srv.run, name="uvicorn", daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and t.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield e, f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        t.join(timeout=10)
        app.state.api.close()
        e.client.close()
        e.api.close()


def test_cli_subject_file(live_http: tuple[Env, str], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    env, api = live_http
    ids = seed_classes(env)
    env.user("dora", "dpo", "*", mfa=True)
    env.user("sam", "security", "*")
    tokens = {}
    for name in ("dora", "sam"):
        f = tmp_path / f"{name}.token"
        f.write_text(env.tokens[name] + "\n")
        f.chmod(0o600)
        tokens[name] = str(f)
    subj = tmp_path / "subject.txt"
    subj.write_text(f"# DSR-20\nuser:{LOGIN}\nemail:{EMAIL}\n")
    common = ["--api", api]
    capsys.readouterr()
    assert main(["query", *common, "--token-file", tokens["sam"], "--tenant", "acme",
                 "--subject-file", str(subj)]) == 0
    out, err = capsys.readouterr()
    assert {orjson.loads(x)["id"] for x in out.splitlines()} == \
        {ids[k] for k in ("ssh", "vpn", "contact", "mail")}
    assert not any(raw in out + err for raw in RAW)
    out_file = tmp_path / "export.json"
    assert main(["dsr", "export", *common, "--token-file", tokens["dora"], "--tenant", "acme",
                 "--subject-file", str(subj), "--totp", env.code("dora"),
                 "--out", str(out_file)]) == 0
    capsys.readouterr()
    assert orjson.loads(out_file.read_bytes())["count"] == 4
    assert main(["dsr", "erase", *common, "--token-file", tokens["dora"], "--tenant", "acme",
                 "--subject-file", str(subj), "--totp", env.code("dora"), "--yes"]) == 0
    result = orjson.loads(capsys.readouterr()[0])
    assert result["verified"] is True and result["count"] == 4
    # a bad line is named by its number, its value never repeated
    subj.write_text(f"user:{LOGIN}\nmail:{EMAIL}\n")
    assert main(["dsr", "restrict", *common, "--token-file", tokens["dora"], "--tenant",
                 "acme", "--subject-file", str(subj)]) == 2
    err = capsys.readouterr()[1]
    assert "line 2" in err and EMAIL not in err and LOGIN not in err
    assert main(["dsr", "restrict", *common, "--token-file", tokens["dora"], "--tenant",
                 "acme"]) == 2
    assert "--subject-file" in capsys.readouterr()[1]


def test_a_device_name_is_a_host_subject(cenv: Env) -> None:
    """A device named after its owner: its records are found by `host:` through the
    stored device token, and a restriction covers the device's later records."""
    ids = seed_classes(cenv)
    assert search(cenv, subjects=["host:gw1"]) == set(ids.values())
    assert dsr(cenv, "restrict", ["host:gw1"])["count"] == len(ids)
    p = Pseudonymiser(TenantKey.from_hex(KEYS["acme"]))
    late = p.record(Record(kind=Kind.LOG, tenant="acme", site="clinic", device="gw1",
                           name="syslog", ts=T0 + 9000, fields={"message": "carrier regained"}))
    other = p.record(Record(kind=Kind.LOG, tenant="acme", site="clinic", device="gw2",
                            name="syslog", ts=T0 + 9001, fields={"message": "carrier regained"}))
    store_batch(cenv.url, "acme", [late, other], T0 + 9002)
    assert search(cenv, text="carrier regained") == {other.id}
    lifted = dsr(cenv, "unrestrict", ["host:gw1"])
    assert lifted["count"] == len(ids) + 1
    assert search(cenv, text="carrier regained") == {late.id, other.id}
