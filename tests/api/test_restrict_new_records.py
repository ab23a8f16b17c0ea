"""A restriction covers the subject's records that arrive after it, on both
backends: the address index flags them as it indexes them, so the security
team's search (free text, indicators, export) and the NOC's counts never show
them while the DPO's DSR export still does; a restriction's time range bounds
what it flags; once lifted, new records are left alone; records arriving while
a restrict or unrestrict runs follow the request, not the rule before it."""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest
from api_kit import KEYS, OTHER, SUBJECT, T0, Env, pseudo
from factories import on_backends

from collector.store import BatchMeta, TaggedRecord, open_store
from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.record import Kind, Record

pytestmark = on_backends
UNRELATED = "203.0.113.5"  # in no seeded record, restricted by no one


@pytest.fixture
def renv(env: Env) -> Env:
    env.user("dora", "dpo", "*", mfa=True)
    env.user("sam", "security", "*")
    env.user("nico", "noc", "*")
    return env


def arrive(env: Env, tenant: str, *records: tuple[str, float],
           received_at: float = T0 + 600) -> list[str]:
    """A new batch, stored the way the collector stores one, of log lines that
    each name one address ("late-arrival" marks them); their record ids."""
    p = Pseudonymiser(TenantKey.from_hex(KEYS[tenant]))
    recs = [p.record(Record(kind=Kind.LOG, tenant=tenant, site="hq", device="dev9",
                            name="syslog", ts=ts,
                            fields={"message": f"late-arrival: sshd login from {addr}"}))
            for addr, ts in records]
    store = open_store(env.url)
    try:
        assert store.write_batch(
            BatchMeta(agent_id=f"agent-{tenant}", batch_id=f"late-{os.urandom(4).hex()}",
                      seq=2, tenant=tenant, created=received_at, received_at=received_at),
            [TaggedRecord(r, "logs", "legitimate interest", None) for r in recs])
    finally:
        store.close()
    return [r.id for r in recs]


def dsr(env: Env, kind: str, addresses: list[str], tenants: tuple[str, ...] = ("acme",),
        **body: Any) -> dict[str, Any]:
    totp = kind in ("export", "erase", "unrestrict")
    r = env.client.post(f"/v1/dsr/{kind}", json={"tenants": list(tenants),
                                                 "addresses": addresses, **body},
                        headers=env.h("dora", totp=totp))
    assert r.status_code == 200, r.text
    return dict(r.json())


def search(env: Env, tenant: str = "acme", **body: Any) -> set[str]:
    r = env.client.post("/v1/search", json={"tenant": tenant, "limit": 1000, **body},
                        headers=env.h("sam"))
    assert r.status_code == 200, r.text
    return {x["id"] for x in r.json()["records"]}


def export(env: Env, tenant: str = "acme", **body: Any) -> set[str]:
    r = env.client.post("/v1/search/export", json={"tenant": tenant, **body},
                        headers=env.h("sam"))
    assert r.status_code == 200, r.text
    return {orjson.loads(line)["id"] for line in r.content.splitlines()}


def flags(env: Env, ids: list[str]) -> list[bool]:
    with env.api.db.tx() as cur:
        got = dict(cur.execute(f"SELECT id, restricted FROM records WHERE id IN "
                               f"({', '.join('?' for _ in ids)})", ids).fetchall())
    return [bool(got[i]) for i in ids]


def total(env: Env, tenant: str = "acme") -> int:
    r = env.client.get("/v1/stats", params={"tenant": tenant}, headers=env.h("nico"))
    assert r.status_code == 200, r.text
    return sum(r.json()["records_by_kind"].values())


def test_records_arriving_after_a_restrict_are_hidden(renv: Env) -> None:
    assert dsr(renv, "restrict", [SUBJECT])["count"] == 3
    assert total(renv) == 7
    a_log, a_late, b = arrive(renv, "acme", (SUBJECT, T0 + 700), (SUBJECT, T0 + 9000),
                              (UNRELATED, T0 + 710))

    # Free text first: the path that never touched the index before a restriction.
    assert search(renv, text="late-arrival") == {b}
    assert search(renv, text=pseudo("acme", SUBJECT)) == set()
    assert flags(renv, [a_log, a_late, b]) == [True, True, False]
    assert search(renv, indicators=[SUBJECT]) == set()
    assert search(renv, indicators=[UNRELATED]) == {b}
    everything = search(renv)
    assert b in everything and not {a_log, a_late} & everything and len(everything) == 8
    assert export(renv, text="late-arrival") == {b}
    assert total(renv) == 8

    exported = dsr(renv, "export", [SUBJECT])
    mine = {r["id"]: r["restricted"] for r in exported["records"]}
    assert exported["count"] == 5 and mine[a_log] is True and mine[a_late] is True


def test_a_time_bounded_restriction_flags_only_records_in_its_range(renv: Env) -> None:
    assert dsr(renv, "restrict", [SUBJECT], since=T0, until=T0 + 600)["count"] == 3
    inside, outside, before = arrive(renv, "acme", (SUBJECT, T0 + 599), (SUBJECT, T0 + 600),
                                     (SUBJECT, T0 - 1))
    assert search(renv, text="late-arrival") == {outside, before}
    assert flags(renv, [inside, outside, before]) == [True, False, False]
    assert search(renv, indicators=[SUBJECT]) == {outside, before}


def test_after_unrestrict_new_records_are_left_alone(renv: Env) -> None:
    dsr(renv, "restrict", [SUBJECT])
    (while_restricted,) = arrive(renv, "acme", (SUBJECT, T0 + 700))
    assert search(renv, indicators=[SUBJECT]) == set()
    assert flags(renv, [while_restricted]) == [True]

    lifted = dsr(renv, "unrestrict", [SUBJECT])
    assert lifted["count"] == 4 and lifted["kept"] == {"acme": 0}
    assert while_restricted in search(renv, indicators=[SUBJECT])
    assert renv.api.searcher.index.guarded("acme") is False
    (after,) = arrive(renv, "acme", (SUBJECT, T0 + 800), received_at=T0 + 900)
    assert after in search(renv, text="late-arrival")
    assert flags(renv, [while_restricted, after]) == [False, False]
    assert len(search(renv, indicators=[SUBJECT])) == 5


def test_a_prefix_restriction_outlives_lifting_one_address_for_new_records(
        renv: Env) -> None:
    dsr(renv, "restrict", ["192.0.2.0/24"])
    dsr(renv, "unrestrict", [SUBJECT])  # lifts nothing: the /24 still stands
    subject, neighbour, b = arrive(renv, "acme", (SUBJECT, T0 + 700), ("192.0.2.200", T0 + 701),
                                   (UNRELATED, T0 + 702))
    assert search(renv, text="late-arrival") == {b}
    assert flags(renv, [subject, neighbour, b]) == [True, True, False]


def test_without_restrictions_new_records_are_untouched(renv: Env) -> None:
    ids = arrive(renv, "acme", (SUBJECT, T0 + 700), (UNRELATED, T0 + 701))
    assert renv.api.searcher.index.guarded("acme") is False
    assert search(renv, text="late-arrival") == set(ids)
    assert search(renv, indicators=[SUBJECT]) >= {ids[0]}
    assert flags(renv, ids) == [False, False]

    dsr(renv, "restrict", [SUBJECT], tenants=("globex",))  # another tenant's restriction
    assert renv.api.searcher.index.guarded("acme") is False
    acme = arrive(renv, "acme", (SUBJECT, T0 + 800), received_at=T0 + 900)
    globex = arrive(renv, "globex", (SUBJECT, T0 + 800), received_at=T0 + 900)
    assert acme[0] in search(renv, indicators=[SUBJECT])
    assert search(renv, "globex", indicators=[SUBJECT]) == set()
    assert flags(renv, acme + globex) == [False, True]


def test_a_record_committed_but_not_yet_indexed_is_not_shown(renv: Env) -> None:
    """Received long before the index's window, so only the sweep finds it: until
    then a guarded search does not show it, whoever's it is."""
    dsr(renv, "restrict", [SUBJECT])
    subject, b = arrive(renv, "acme", (SUBJECT, T0 + 700), (UNRELATED, T0 + 701),
                        received_at=T0 - 3600)
    assert search(renv, text="late-arrival") == set()
    assert flags(renv, [subject, b]) == [False, False]  # not checked yet, and not shown
    renv.api.searcher.index.refresh(force=True)
    assert search(renv, text="late-arrival") == {b}
    assert flags(renv, [subject, b]) == [True, False]


def test_a_record_indexed_while_a_restrict_runs_is_flagged(renv: Env,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The race the second pass closes: a record committed and indexed after the
    restrict's first pass, by a step that ran before the request row existed."""
    service, index = renv.api.dsr, renv.api.searcher.index
    record, late, seen = service._record, [], []

    def record_after_a_late_arrival(*a: Any, **kw: Any) -> None:
        late.extend(arrive(renv, "acme", (SUBJECT, T0 + 700)))
        seen.append(index.refresh(eager=True))
        seen.append(flags(renv, late))
        seen.append(index.guarded("acme"))
        record(*a, **kw)

    monkeypatch.setattr(service, "_record", record_after_a_late_arrival)
    assert dsr(renv, "restrict", [SUBJECT])["count"] == 3  # counted: the first pass
    monkeypatch.setattr(service, "_record", record)
    # indexed by the rule before the request, while its tenant's searches were guarded
    assert seen == [1, [False], True]
    assert flags(renv, late) == [True]
    assert search(renv, text="late-arrival") == set()


def test_a_record_flagged_while_an_unrestrict_runs_is_lifted(renv: Env,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    dsr(renv, "restrict", [SUBJECT], tenants=("acme",))
    dsr(renv, "restrict", [OTHER], tenants=("acme",))
    service = renv.api.dsr
    record, late, seen = service._record, [], []

    def record_after_a_late_arrival(*a: Any, **kw: Any) -> None:
        late.extend(arrive(renv, "acme", (SUBJECT, T0 + 700), (OTHER, T0 + 701)))
        seen.append(renv.api.searcher.index.refresh(eager=True))
        seen.append(flags(renv, late))
        record(*a, **kw)

    monkeypatch.setattr(service, "_record", record_after_a_late_arrival)
    assert dsr(renv, "unrestrict", [SUBJECT])["kept"] == {"acme": 1}
    monkeypatch.setattr(service, "_record", record)
    assert seen == [2, [True, True]]  # flagged by the rule before the request
    assert flags(renv, late) == [False, True]  # OTHER's restriction still stands
    assert search(renv, text="late-arrival") == {late[0]}


def test_ipv6_and_nested_prefixes_flag_exactly_their_ranges(renv: Env) -> None:
    """Several prefix lengths and both families in force at once, as the index's
    lookup keys them: only addresses inside one of the ranges are flagged."""
    dsr(renv, "restrict", ["2001:db8:7::/48"])
    dsr(renv, "restrict", ["2001:db8:7:1::5", "10.20.0.0/16"], since=T0 + 650)
    ids = arrive(renv, "acme", ("2001:db8:7:ffff::1", T0 + 700), ("2001:db8:8::1", T0 + 700),
                 ("2001:db8:7:1::5", T0 + 700), ("10.20.30.40", T0 + 600),
                 ("10.20.30.40", T0 + 700), ("10.21.0.1", T0 + 700))
    assert search(renv, text="late-arrival") == {ids[1], ids[3], ids[5]}
    assert flags(renv, ids) == [True, False, True, False, True, False]
