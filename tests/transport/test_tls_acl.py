"""TLS + client certificates + per-agent ACL, against Mosquitto started from deploy/mosquitto/."""

from __future__ import annotations

import asyncio
import getpass
import ssl
import threading
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.reasoncodes import ReasonCode
from peers.ports import free_port
from prometheus_client import CollectorRegistry
from transport_helpers import Broker, Keys, SqliteSink, agent_config, records, uid, wait_for

from agents.shipper import Shipper
from collector.ingest import IngestWorker
from collector.receipts import ReceiptPublisher
from pipelines import keys
from pipelines.envelope import topic_for
from pipelines.keys import ANNOUNCE_TOPIC
from pipelines.receipt import receipt_topic
from privtel.cli import main as privtel

DEPLOY = Path(__file__).parents[2] / "deploy" / "mosquitto" / "mosquitto.conf"


@pytest.fixture
def tls_broker(tmp_path: Path) -> tuple[Broker, Path, str]:
    tenant = f"t{uid()}"
    certs = tmp_path / "certs"
    assert privtel(["certs", "init", "--dir", str(certs), "--agent", f"{tenant}/agent-a",
                    "--agent", f"{tenant}/agent-b"]) == 0
    # a second collector identity, so probing collector rights never reuses the worker's session
    assert privtel(["certs", "add-collector", "--dir", str(certs), "--collector-id", "probe"]) == 0
    port = free_port()
    conf = DEPLOY.read_text()
    for old, new in (("/etc/mosquitto/privtel/", f"{certs}/"),
                     ("/var/lib/mosquitto/", f"{tmp_path}/broker/"),
                     ("listener 8883", f"listener {port} 127.0.0.1")):
        assert old in conf, old
        conf = conf.replace(old, new)
    b = Broker(tmp_path / "broker", conf + f"\nuser {getpass.getuser()}\n", port)
    b.start()
    yield b, certs, tenant
    b.stop()


def _ctx(certs: Path, who: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if who is not None:
        ctx.load_cert_chain(certs / f"{who}.crt", certs / f"{who}.key")
    return ctx


def _paho_publish(port: int, ctx: ssl.SSLContext, topic: str) -> int:
    """Publish once with MQTT 5 and return the PUBACK reason code (135 = not authorized)."""
    done, codes = threading.Event(), []
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.tls_set_context(ctx)

    def on_publish(client: paho.Client, ud: object, mid: int, rc: ReasonCode, p: object) -> None:
        codes.append(rc.value)
        done.set()

    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(topic, b"x", qos=1).wait_for_publish(10)
        assert done.wait(10)
    finally:
        c.disconnect()
        c.loop_stop()
    return codes[0]


async def test_tls_acl(tls_broker: tuple[Broker, Path, str], tmp_path: Path) -> None:
    broker, certs, tenant = tls_broker
    url = f"mqtts://127.0.0.1:{broker.port}"
    k = Keys("agent-a")
    store = SqliteSink(tmp_path / "store.db")
    reg = CollectorRegistry()
    mqtt = (f'ca_file = "{certs}/ca.crt"\ncert_file = "{certs}/agent-{tenant}.agent-a.crt"\n'
            f'key_file = "{certs}/agent-{tenant}.agent-a.key"')
    cfg = agent_config(tmp_path / "agent", k, tenant, url, mqtt=mqtt)
    async with IngestWorker(broker_url=url, sink=store.sink, quarantine=store.quarantine,
                            agent_keys=k.agent_keys, collector_keys=k.collector_keys,
                            registry=reg, shared_group=f"g{uid()}", client_id=f"c{uid()}",
                            ca_file=certs / "ca.crt", cert_file=certs / "collector.crt",
                            key_file=certs / "collector.key") as w:
        assert await wait_for(w.subscribed.is_set), "collector could not subscribe over TLS"
        async with Shipper(cfg, registry=CollectorRegistry()) as s:
            await s.submit(records(tenant, 5))
            assert await s.flush(timeout=20)
        assert await wait_for(lambda: store.count("SELECT count(*) FROM records") == 5)

        own, other = topic_for(tenant, "agent-a"), topic_for(tenant, "agent-b")
        assert _paho_publish(broker.port, _ctx(certs, f"agent-{tenant}.agent-b"), other) == 0
        assert _paho_publish(broker.port, _ctx(certs, f"agent-{tenant}.agent-b"), own) == 135
        assert _paho_publish(broker.port, _ctx(certs, "collector-probe"), own) == 135

        # Mosquitto grants the subscription but filters every message by read access.
        async with aiomqtt.Client("127.0.0.1", broker.port, tls_context=_ctx(
                certs, f"agent-{tenant}.agent-b"), protocol=aiomqtt.ProtocolVersion.V5,
                timeout=5) as c:
            await c.subscribe("privtel/v1/#", qos=1)
            before = reg.get_sample_value("privtel_batches_received_total") or 0
            assert _paho_publish(broker.port, _ctx(certs, f"agent-{tenant}.agent-a"), own) == 0
            assert await wait_for(
                lambda: (reg.get_sample_value("privtel_batches_received_total") or 0) > before)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(aiter(c.messages)), 1.0)

    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", broker.port, tls_context=_ctx(certs, None),
                                  timeout=2):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", broker.port, timeout=2):
            pass
    assert store.count("SELECT count(*) FROM records") == 5
    # only the collector may announce its public key (16: accepted, no subscribers)
    assert _paho_publish(broker.port, _ctx(certs, "collector-probe"), ANNOUNCE_TOPIC) in (0, 16)
    assert _paho_publish(broker.port, _ctx(certs, f"agent-{tenant}.agent-b"), ANNOUNCE_TOPIC) == 135


async def test_an_agent_cannot_take_over_the_collectors_session(
        tls_broker: tuple[Broker, Path, str]) -> None:
    """An agent connecting with the collector's client id gets its own identity as client id:
    the collector's persistent session survives and keeps receiving batches."""
    broker, certs, tenant = tls_broker
    dropped = threading.Event()
    got: list[bytes] = []
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="privtel-ingest-victim",
                    protocol=paho.MQTTv311, clean_session=False)
    c.tls_set_context(_ctx(certs, "collector"))
    c.on_disconnect = lambda *a: dropped.set()
    c.on_message = lambda cl, ud, m: got.append(m.payload)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        c.subscribe(topic_for(tenant, "agent-a"), qos=1)
        await asyncio.sleep(0.5)
        a = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="privtel-ingest-victim",
                        protocol=paho.MQTTv311, clean_session=True)
        a.tls_set_context(_ctx(certs, f"agent-{tenant}.agent-a"))
        a.connect("127.0.0.1", broker.port)
        a.loop_start()
        try:
            a.publish(topic_for(tenant, "agent-a"), b"after-takeover-attempt", qos=1
                      ).wait_for_publish(10)
        finally:
            a.disconnect()
            a.loop_stop()
        assert await wait_for(lambda: b"after-takeover-attempt" in got), \
            "the collector stopped receiving after an agent claimed its client id"
        assert not dropped.is_set(), "the broker disconnected the collector"
    finally:
        c.disconnect()
        c.loop_stop()


async def test_receipts_reach_only_their_agent_over_the_shipped_config(
        tls_broker: tuple[Broker, Path, str], tmp_path: Path) -> None:
    """The collector's receipts ride on its ingest connection (one identity, one client id,
    as `use_username_as_clientid` wants); only the collector may write an agent's receipt
    topic and only that agent reads it."""
    broker, certs, tenant = tls_broker
    url = f"mqtts://127.0.0.1:{broker.port}"
    k = Keys("agent-a")
    rkey = keys.generate_signing_key()
    store = SqliteSink(tmp_path / "store.db")
    reg, areg = CollectorRegistry(), CollectorRegistry()
    mqtt = (f'ca_file = "{certs}/ca.crt"\ncert_file = "{certs}/agent-{tenant}.agent-a.crt"\n'
            f'key_file = "{certs}/agent-{tenant}.agent-a.key"')
    cfg = agent_config(tmp_path / "agent", k, tenant, url, mqtt=mqtt,
                       receipt_key=rkey.public_key())
    box: list[IngestWorker] = []
    rp = ReceiptPublisher(lambda: box[0].transport.sender(), rkey, registry=reg)
    box.append(IngestWorker(broker_url=url, sink=store.sink, quarantine=store.quarantine,
                            agent_keys=k.agent_keys, collector_keys=k.collector_keys,
                            registry=reg, client_id=f"c{uid()}", on_outcome=rp.offer,
                            ca_file=certs / "ca.crt", cert_file=certs / "collector.crt",
                            key_file=certs / "collector.key"))
    mine = receipt_topic(tenant, "agent-a")
    async with rp, box[0] as w, aiomqtt.Client(
            "127.0.0.1", broker.port, tls_context=_ctx(certs, f"agent-{tenant}.agent-b"),
            protocol=aiomqtt.ProtocolVersion.V5, timeout=5) as spy:
        assert await wait_for(w.subscribed.is_set)
        await spy.subscribe("privtel/v1/#", qos=1)
        async with Shipper(cfg, registry=areg) as s:
            await s.submit(records(tenant, 5))
            assert await s.flush(timeout=20)
        assert areg.get_sample_value("privtel_agent_receipts_received_total",
                                     {"outcome": "stored"}) == 1
        assert reg.get_sample_value("privtel_ingest_reconnects_total") == 0
        with pytest.raises(TimeoutError):  # agent-b saw neither the batch nor the receipt
            await asyncio.wait_for(anext(aiter(spy.messages)), 1.0)
    assert _paho_publish(broker.port, _ctx(certs, f"agent-{tenant}.agent-b"), mine) == 135
    assert _paho_publish(broker.port, _ctx(certs, f"agent-{tenant}.agent-a"), mine) == 135
