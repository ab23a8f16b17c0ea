"""The collector's ingest re-check (issue 17, item 6) through the real worker and a
real store on both backends: a record that still carries a raw login, e-mail or
phone number is kept out of the store, quarantined as a digest, counted by class
and logged without its value; the rest of its batch is stored; a batch retried
after a store failure quarantines nothing twice. NOC labels get the same check."""

from __future__ import annotations

import logging
import os
import time

import orjson
import pytest
from factories import on_backends
from prometheus_client import CollectorRegistry
from transport_helpers import Keys

from collector import recheck
from collector.ingest import IngestWorker, SinkFailed
from collector.metrics.noc import NocMetrics
from collector.store import TaggedRecord, open_store
from collector.store.sink import StoreSink
from pipelines.digest import sha256_hex
from pipelines.envelope import Header, seal, topic_for
from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.record import Kind, Record, encode

T = "recheck-t"
LOGIN, EMAIL, PHONE = "adaeze", "adaeze@clinic.ng", "+2348035550147"
RAW = (LOGIN, EMAIL, "8035550147")


def rec(fields: dict[str, object], device: str = "tk-aaaaaa-0123456789abcdef0123",
        name: str = "syslog") -> Record:
    return Record(kind=Kind.LOG, tenant=T, site="s1", device=device, name=name,
                  fields=fields, ts=time.time())


def batch() -> tuple[list[Record], dict[str, Record]]:
    p = Pseudonymiser(TenantKey.from_hex("77" * 16 + "88" * 16))
    clean = [p.record(rec({"message": f"sshd[1]: Accepted publickey for {LOGIN} from "
                                      "10.1.2.3 port 22 ssh2"})),
             p.record(rec({"email": EMAIL, "phone": PHONE})),
             rec({"message": "kernel: link up on eth1"})]
    raw = {"user": rec({"message": f"sshd[2]: Accepted password for {LOGIN} from 10.1.2.4 "
                                   "port 22 ssh2"}),
           "email": rec({"message": f"postfix/smtp: to=<{EMAIL}>, status=sent"}),
           "phone": rec({"contact_note": f"call {PHONE} after 6"})}
    return clean + list(raw.values()), raw


def tag(records: list[Record]) -> list[TaggedRecord]:
    return [TaggedRecord(r, "logs", "legitimate interest", None) for r in records]


@on_backends
async def test_raw_identifier_records_are_quarantined_by_class(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = open_store(store_url)
    store.migrate()
    k = Keys(f"ag-{os.urandom(3).hex()}")
    sink = StoreSink(store, tag)
    failures = [1]

    async def flaky(h: Header, recs: list[Record]) -> bool:
        if failures:
            failures.pop()
            raise OSError("database went away")
        return await sink.sink(h, recs)

    reg = CollectorRegistry()
    recheck.COUNTS.register(reg)
    recheck.COUNTS.register(reg)  # once per registry, however often asked
    before = {c: reg.get_sample_value("privtel_records_quarantined_total", {"class": c}) or 0
              for c in ("user", "email", "phone", "host")}
    w = IngestWorker(broker_url="mqtt://127.0.0.1:1883", sink=flaky, quarantine=sink.quarantine,
                     agent_keys=k.agent_keys, collector_keys=k.collector_keys,
                     registry=CollectorRegistry())
    records, raw = batch()
    h = Header(tenant=T, agent_id=k.agent, batch_id=os.urandom(16).hex(), seq=1,
               created=time.time())
    payload = seal(h, records, k.collector.public, k.signing)
    try:
        with pytest.raises(SinkFailed):  # the store fails once: not acknowledged, retried
            await w.handle(topic_for(T, k.agent), payload)
        assert await w.handle(topic_for(T, k.agent), payload) == "accepted"
        assert store.count_records(tenant=T) == 3
        assert store.count_quarantined(recheck.REASON) == 3  # not 6: the retry added none
        after = {c: reg.get_sample_value("privtel_records_quarantined_total", {"class": c})
                 for c in before}
        assert {c: after[c] - before[c] for c in before} == \
            {"user": 1, "email": 1, "phone": 1, "host": 0}
        db = open_store(store_url)
        with db.tx() as cur:  # type: ignore[attr-defined]
            rows = cur.execute("SELECT reason, agent_id, batch_id, size, digest FROM "
                               "quarantine").fetchall()
            stored = orjson.dumps(cur.execute("SELECT fields FROM records").fetchall()).decode()
        db.close()
        assert {r[4] for r in rows} == {sha256_hex(encode([r])) for r in raw.values()}
        assert all(r[1] == k.agent and r[2] == h.batch_id for r in rows)
        assert not any(v in orjson.dumps(rows).decode() + stored for v in RAW)
    finally:
        store.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "quarantined: raw email in field(s) message" in logged
    assert not any(v in logged for v in RAW)


def test_noc_labels_with_a_raw_identifier_feed_no_series() -> None:
    reg = CollectorRegistry()
    recheck.COUNTS.register(reg)
    noc = NocMetrics(reg)
    before = reg.get_sample_value("privtel_metric_labels_withheld_total",
                                  {"label": "device", "class": "email"}) or 0
    ok = "tk-aaaaaa-0123456789abcdef0123"
    health = {"up": 1, "protocol": "snmp", "profile": "generic"}
    noc.observe([rec(health, device=ok, name="device.health"),
                 rec(health, device=EMAIL, name="device.health"),
                 rec({"if_index": 1, "if_name": f"to {PHONE}", "in_octets": 5}, device=ok,
                     name="if")])
    devices = {s.labels["device"] for m in noc.collect() for s in m.samples
               if "device" in s.labels}
    assert devices == {ok}
    text = orjson.dumps([s.labels for m in noc.collect() for s in m.samples]).decode()
    assert EMAIL not in text and "8035550147" not in text
    assert reg.get_sample_value("privtel_metric_labels_withheld_total",
                                {"label": "device", "class": "email"}) == before + 1
    assert reg.get_sample_value("privtel_metric_labels_withheld_total",
                                {"label": "ifname", "class": "phone"}) >= 1


def test_the_batch_verdict_holds_exactly_the_records_a_record_by_record_look_holds() -> None:
    """`held_back` judges each distinct string of a batch once; it must keep out the
    same records, with the same findings, as `findings` record by record."""
    records, raw = batch()
    held = recheck.held_back(records)
    assert [(r.id, f) for r, f in held] == \
        [(r.id, recheck.findings(r)) for r in records if recheck.findings(r)]
    assert {r.id for r, _ in held} == {r.id for r in raw.values()}
    clean = [r for r in records if not recheck.findings(r)]
    assert clean and recheck.held_back(clean) == []


def test_records_sharing_raw_labels_are_each_counted() -> None:
    """Label verdicts are remembered within a call; every record is still counted."""
    reg = CollectorRegistry()
    recheck.COUNTS.register(reg)
    key = {"label": "device", "class": "email"}
    before = reg.get_sample_value("privtel_metric_labels_withheld_total", key) or 0
    ok = "tk-aaaaaa-0123456789abcdef0123"
    recs = [rec({"up": 1}, device=EMAIL, name="device.health"),
            rec({"up": 1}, device=ok, name="device.health"),
            rec({"up": 0}, device=EMAIL, name="device.health")]
    assert list(recheck.screen_labels(recs)) == [recs[1]]
    assert reg.get_sample_value("privtel_metric_labels_withheld_total", key) == before + 2
