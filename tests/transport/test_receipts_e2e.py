"""End-to-end receipts over the real broker: Shipper -> Mosquitto -> IngestWorker ->
ReceiptPublisher -> Mosquitto -> Shipper, and what the agent does when receipts fail."""

from __future__ import annotations

import logging
from pathlib import Path

import aiomqtt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client import CollectorRegistry
from transport_helpers import (
    Keys,
    SqliteSink,
    agent_config,
    header,
    raw_header,
    raw_seal,
    records,
    uid,
    wait_for,
)

from agents.shipper import Shipper
from collector.ingest import IngestWorker
from collector.receipts import ReceiptPublisher
from pipelines import keys
from pipelines.envelope import peek_header, seal, topic_for
from pipelines.receipt import Outcome, Receipts, receipt_topic, sign_receipts

URL = "mqtt://127.0.0.1:1883"  # configs only: these tests do not connect


def metric(reg: CollectorRegistry, name: str, **labels: str) -> float:
    v = reg.get_sample_value(name, labels or None)
    return 0.0 if v is None else v


def pair(url: str, k: Keys, store: SqliteSink, tenant: str, reg: CollectorRegistry,
         key: ed25519.Ed25519PrivateKey) -> tuple[ReceiptPublisher, IngestWorker]:
    """An ingest worker and the receipt publisher riding on its connection."""
    box: list[IngestWorker] = []
    rp = ReceiptPublisher(lambda: box[0].transport.sender(), key, registry=reg,
                          backoff_initial_s=0.05, backoff_max_s=0.5)
    box.append(worker(url, k, store, tenant, reg, rp))
    return rp, box[0]


def worker(url: str, k: Keys, store: SqliteSink, tenant: str, reg: CollectorRegistry,
           rp: ReceiptPublisher | None) -> IngestWorker:
    return IngestWorker(broker_url=url, sink=store.sink, quarantine=store.quarantine,
                        agent_keys=k.agent_keys, collector_keys=k.collector_keys, registry=reg,
                        topic_filter=f"privtel/v1/{tenant}/+/batches",
                        client_id=f"ingest-{tenant}", backoff_initial_s=0.1,
                        on_outcome=None if rp is None else rp.offer)


async def test_batches_leave_the_spool_on_the_collectors_receipt(mosquitto: str,
                                                                  tmp_path: Path) -> None:
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    rkey = keys.generate_signing_key()
    store = SqliteSink(tmp_path / "store.db")
    creg, areg = CollectorRegistry(), CollectorRegistry()
    cfg = agent_config(tmp_path / "agent", k, tenant, mosquitto, batch_max_records=10,
                       receipt_key=rkey.public_key())
    rp, w = pair(mosquitto, k, store, tenant, creg, rkey)
    async with rp, w:
        assert await wait_for(w.subscribed.is_set)
        async with Shipper(cfg, registry=areg, backoff_initial_s=0.1) as s:
            assert s.receipts_on
            sent = records(tenant, 45)
            await s.submit(sent)
            assert await s.flush(timeout=20)
            st = await s._run(s.spool.stats)
    assert (st.batches, st.unreceipted) == (0, 0)
    assert sorted(store.record_ids()) == sorted(r.id for r in sent)
    assert metric(areg, "privtel_agent_receipts_received_total", outcome="stored") == 5
    assert metric(creg, "privtel_receipts_sent_total", outcome="stored") == 5
    assert metric(areg, "privtel_agent_receipts_rejected_total") == 0
    assert metric(areg, "privtel_agent_unreceipted_batches") == 0


async def test_no_receipt_keeps_the_batch_and_resends_it_until_one_comes(
        mosquitto: str, tmp_path: Path) -> None:
    """PUBACK alone frees only the window; the resend is a duplicate to the store, and the
    duplicate's receipt finally frees the batch."""
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    rkey = keys.generate_signing_key()
    store = SqliteSink(tmp_path / "store.db")
    creg, areg = CollectorRegistry(), CollectorRegistry()
    cfg = agent_config(tmp_path / "agent", k, tenant, mosquitto, batch_max_records=10,
                       receipt_key=rkey.public_key(), spool="receipt_timeout_s = 0.5")
    async with Shipper(cfg, registry=areg, backoff_initial_s=0.1) as s:
        async with worker(mosquitto, k, store, tenant, creg, None) as w:  # sends no receipts
            assert await wait_for(w.subscribed.is_set)
            await s.submit(records(tenant, 20))
            assert await wait_for(lambda: metric(areg, "privtel_agent_batches_resent_total") >= 2)
            assert await wait_for(lambda: metric(areg, "privtel_agent_unreceipted_batches") == 2)
            st = await s._run(s.spool.stats)
            assert st.batches == 2
            assert metric(areg, "privtel_agent_unreceipted_oldest_age_seconds") >= 0
        assert store.count("SELECT count(*) FROM batches") == 2  # resends stored once
        creg2 = CollectorRegistry()
        rp, w2 = pair(mosquitto, k, store, tenant, creg2, rkey)
        async with rp, w2:
            assert await s.flush(timeout=20)
        assert metric(areg, "privtel_agent_receipts_received_total", outcome="duplicate") >= 2
    assert store.count("SELECT count(*) FROM records") == 20


async def test_forged_or_misaddressed_receipts_are_ignored_and_counted(
        mosquitto: str, tmp_path: Path) -> None:
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    rkey, forger = keys.generate_signing_key(), keys.generate_signing_key()
    areg = CollectorRegistry()
    cfg = agent_config(tmp_path / "agent", k, tenant, mosquitto, batch_max_records=5,
                       receipt_key=rkey.public_key())
    host, port = "127.0.0.1", int(mosquitto.rsplit(":", 1)[1])
    async with Shipper(cfg, registry=areg, backoff_initial_s=0.1) as s:
        await s.submit(records(tenant, 5))  # nobody ingests: published, never receipted
        assert await wait_for(lambda: metric(areg, "privtel_agent_unreceipted_batches") == 1)
        (batch,) = await s._run(s.spool.peek, 1, frozenset(), 1e12)
        topic = receipt_topic(tenant, k.agent)
        forged = sign_receipts(Receipts(tenant, k.agent, 0.0, ((batch.batch_id,
                                                               Outcome.STORED),)), forger)
        other = sign_receipts(Receipts(tenant, "someone-else", 0.0, ((batch.batch_id,
                                                                      Outcome.STORED),)), rkey)
        async with aiomqtt.Client(host, port) as c:
            for msg in (forged, other, b"garbage"):
                await c.publish(topic, msg, qos=1)
        assert await wait_for(lambda: metric(areg, "privtel_agent_receipts_rejected_total") == 3)
        assert (await s._run(s.spool.stats)).batches == 1
        good = sign_receipts(Receipts(tenant, k.agent, 0.0, ((batch.batch_id,
                                                             Outcome.QUARANTINED),)), rkey)
        async with aiomqtt.Client(host, port) as c:
            await c.publish(topic, good, qos=1)
        assert await s.flush(timeout=10)
    assert metric(areg, "privtel_agent_receipts_received_total", outcome="quarantined") == 1


async def test_without_a_receipt_key_puback_frees_the_batch_and_one_warning_says_so(
        mosquitto: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    store = SqliteSink(tmp_path / "store.db")
    cfg = agent_config(tmp_path / "agent", k, tenant, mosquitto, batch_max_records=10)
    caplog.set_level(logging.WARNING, logger="agents.shipper")
    async with worker(mosquitto, k, store, tenant, CollectorRegistry(), None) as w:
        assert await wait_for(w.subscribed.is_set)
        async with Shipper(cfg, registry=CollectorRegistry()) as s:
            assert not s.receipts_on
            await s.submit(records(tenant, 10))
            assert await s.flush(timeout=20)
    warnings = [r.getMessage() for r in caplog.records if "acknowledgements are off" in
                r.getMessage()]
    assert len(warnings) == 1
    assert store.count("SELECT count(*) FROM records") == 10


async def test_ingest_tells_each_final_outcome_once_and_never_for_another_agents_topic(
        mosquitto: str, tmp_path: Path) -> None:
    """stored after the commit, duplicate, quarantined; a batch whose header names another
    agent than its topic earns no receipt for anyone."""
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    store = SqliteSink(tmp_path / "store.db")
    told: list[tuple[str, str, str, Outcome]] = []

    def listen(t: str, a: str, b: str, o: Outcome) -> None:
        told.append((t, a, b, o))

    good = seal(header(tenant, k.agent), records(tenant, 2), k.collector.public, k.signing)
    bad_hdr = raw_header(k, tenant, 3)  # says 3 records, carries 2: invalid once opened
    bad = raw_seal(bad_hdr, orjson.dumps([r.to_dict() for r in records(tenant, 2)]), k)
    stray_hdr = header(tenant, k.agent, seq=5)
    stray = seal(stray_hdr, records(tenant, 1), k.collector.public, k.signing)
    host, port = "127.0.0.1", int(mosquitto.rsplit(":", 1)[1])
    w = IngestWorker(broker_url=mosquitto, sink=store.sink, quarantine=store.quarantine,
                     agent_keys=k.agent_keys, collector_keys=k.collector_keys,
                     registry=CollectorRegistry(), topic_filter=f"privtel/v1/{tenant}/+/batches",
                     client_id=f"ingest-{tenant}", on_outcome=listen)
    async with w:
        assert await wait_for(w.subscribed.is_set)
        async with aiomqtt.Client(host, port) as c:
            for topic, msg in ((topic_for(tenant, k.agent), good),
                               (topic_for(tenant, k.agent), good),
                               (topic_for(tenant, k.agent), bad),
                               (topic_for(tenant, "someone-else"), stray)):
                await c.publish(topic, msg, qos=1)
        assert await wait_for(lambda: store.count("SELECT count(*) FROM quarantine") == 2)
        assert await wait_for(lambda: len(told) >= 3)
    good_id = peek_header(good).batch_id
    assert told == [(tenant, k.agent, good_id, Outcome.STORED),
                    (tenant, k.agent, good_id, Outcome.DUPLICATE),
                    (tenant, k.agent, str(bad_hdr["batch"]), Outcome.QUARANTINED)]


def test_keys_init_and_the_demo_configs_turn_receipts_on(tmp_path: Path) -> None:
    from agents import config as agent_cfg
    from collector import config as collector_cfg
    from collector.receipts import load_receipt_key
    from privtel.commands.keys import key_files, write_key_files
    from privtel.demo.run import write_configs

    phrase = b"a long enough passphrase"
    write_key_files(tmp_path / "enc", "edge-1", "acme", passphrase=phrase)
    enc = key_files(tmp_path / "enc", "edge-1", "acme")
    assert b"ENCRYPTED PRIVATE KEY" in enc["receipt_key"].read_bytes()
    pf = tmp_path / "phrase"
    pf.write_bytes(phrase + b"\n")
    pf.chmod(0o600)
    rk = load_receipt_key(enc["receipt_key"], pf)
    assert keys.verify_key_pem(rk.public_key()) == enc["receipt_pub"].read_bytes()

    a, c = write_configs(tmp_path / "demo", broker_url=URL, protocol="5",
                         devices=[], interval_s=5, metrics_port=0)
    acfg, ccfg = agent_cfg.load(a), collector_cfg.load(c)
    files = key_files(tmp_path / "demo" / "keys", acfg.agent_id, acfg.tenant)
    assert acfg.keys.collector_receipt_key == files["receipt_pub"]
    assert ccfg.receipt_key == files["receipt_key"]
    pub = keys.load_verify_key(files["receipt_pub"].read_bytes())
    assert pub.public_bytes_raw() == load_receipt_key(files["receipt_key"], None
                                                      ).public_key().public_bytes_raw()


def test_a_receipt_key_that_is_not_ed25519_is_a_config_error(tmp_path: Path) -> None:
    from collector import config as collector_cfg
    from collector.runtime import receipt_publisher
    from pipelines.config import ConfigError
    from privtel.commands.keys import key_files
    from privtel.demo.run import write_configs

    _, c = write_configs(tmp_path / "demo", broker_url=URL, protocol="5",
                         devices=[], interval_s=5, metrics_port=0)
    files = key_files(tmp_path / "demo" / "keys", "demo-agent", "demo")
    files["receipt_key"].write_bytes(files["collector_key"].read_bytes())
    with pytest.raises(ConfigError, match="receipt_key"):
        receipt_publisher(collector_cfg.load(c), CollectorRegistry(), lambda: None)
