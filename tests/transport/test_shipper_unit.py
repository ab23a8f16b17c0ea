"""Shipper misuse and edge cases, against the real broker where it publishes at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from transport_helpers import Keys, SqliteSink, agent_config, records, uid, wait_for

from agents.shipper import Shipper, ShipperError
from collector.ingest import IngestWorker
from pipelines import keys
from pipelines.config import ConfigError
from pipelines.record import Kind, Record
from plumbing.broker import BrokerAddress, BrokerUrlError, parse_broker_url


def test_broker_address() -> None:
    assert parse_broker_url("mqtt://127.0.0.1") == BrokerAddress("mqtt", "127.0.0.1", 1883)
    tls = parse_broker_url("mqtts://broker.example:9883")
    assert (tls.host, tls.port, tls.tls) == ("broker.example", 9883, True)
    for bad in ("tcp://x:1", "mqtt://", "mqtt://h:notaport"):
        with pytest.raises(BrokerUrlError, match="broker url"):
            parse_broker_url(bad)


async def test_refusals(tmp_path: Path) -> None:
    k = Keys(f"a{uid()}")
    cfg = agent_config(tmp_path / "a", k, "t1", "mqtt://127.0.0.1:1")
    s = Shipper(cfg, registry=CollectorRegistry())
    with pytest.raises(ShipperError, match="not running"):
        await s.submit(records("t1"))
    async with s:
        with pytest.raises(ValueError, match="not this agent's tenant"):
            await s.submit(records("t2"))
    with pytest.raises(ShipperError):
        await s.submit(records("t1"))
    other = keys.generate_collector_key("mlkem768-x25519")
    with pytest.raises(ConfigError, match=r"agent\.suite"):
        Shipper(cfg, registry=CollectorRegistry(), collector_public_key=other.public)
    os.chmod(cfg.keys.signing_key, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        Shipper(cfg, registry=CollectorRegistry())
    with pytest.raises(ConfigError, match=r"spool\.bogus: unknown key"):
        Shipper(agent_config(tmp_path / "b", k, "t1", "mqtt://127.0.0.1:1", spool="bogus = 1"),
                registry=CollectorRegistry())


async def test_oversized_records_split_or_dropped_and_rotation(mosquitto: str,
                                                               tmp_path: Path) -> None:
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    store = SqliteSink(tmp_path / "store.db")
    areg = CollectorRegistry()
    cfg = agent_config(tmp_path / "a", k, tenant, mosquitto, batch_max_records=50)
    new = keys.generate_collector_key()
    big = [Record(kind=Kind.LOG, tenant=tenant, site="s", device="d", name="syslog",
                  fields={f"f{j}": os.urandom(8000).hex() for j in range(20)})
           for _ in range(8)]  # 320 kB of hex each, ~160 kB compressed: 8 exceed 1 MiB
    huge = Record(kind=Kind.LOG, tenant=tenant, site="s", device="d", name="syslog",
                  fields={f"f{j}": os.urandom(8000).hex() for j in range(200)})  # > 1 MiB alone
    async with IngestWorker(broker_url=mosquitto, sink=store.sink, quarantine=store.quarantine,
                            agent_keys=k.agent_keys,
                            collector_keys={**k.collector_keys, new.key_id: new},
                            registry=CollectorRegistry(), client_id=f"c{uid()}",
                            topic_filter=f"privtel/v1/{tenant}/+/batches") as w:
        assert await wait_for(w.subscribed.is_set)
        async with Shipper(cfg, registry=areg) as s:
            await s.submit([*big, huge])
            assert await s.flush(timeout=30)
            s.set_collector_key(new.public)
            small = records(tenant, 3)
            await s.submit(small)
            assert await s.flush(timeout=30)
        assert await wait_for(lambda: store.count("SELECT count(*) FROM records") == 11)
    assert store.count("SELECT count(*) FROM batches") >= 3
    assert areg.get_sample_value("privtel_agent_records_dropped_total",
                                 {"reason": "oversized"}) == 1
    assert sorted(store.record_ids()) == sorted(r.id for r in [*big, *small])
