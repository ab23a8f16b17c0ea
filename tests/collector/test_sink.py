"""StoreSink: the ingest worker's sink and quarantine, over a real store."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from collector_kit import BACKENDS, meta, rec, tagged
from prometheus_client import CollectorRegistry

from collector.metrics import InstrumentedStore, StoreMetrics
from collector.outputs import build_outputs
from collector.retention import RetentionService
from collector.store import StorePermanentError
from collector.store.sink import StoreSink
from pipelines.envelope import Header


def header(batch_id: str | None = None) -> Header:
    return Header(tenant="acme", agent_id="agent1", batch_id=batch_id or os.urandom(16).hex(),
                  seq=1, created=time.time() - 3)


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
async def test_sink_tags_stores_and_feeds_outputs_after_commit(store):
    reg = CollectorRegistry()
    outputs = build_outputs(["noc"], reg)
    sink = StoreSink(store, RetentionService(None).tag, outputs)
    h = header()
    now = time.time()
    recs = [rec(i, ts=now, device="tok9") for i in range(3)]
    async with outputs:
        assert await sink.sink(h, recs) is True
        assert await sink.sink(h, recs) is False
    assert reg.get_sample_value("privtel_output_delivered_total", {"output": "noc"}) == 1
    assert store.count_records(retention_class="metrics", device="tok9") == 3
    assert reg.get_sample_value("privtel_interface_in_octets_total",
                                {"tenant": "acme", "site": "site1", "device": "tok9",
                                 "ifindex": "eth1", "ifname": "eth1"}) == 1.0


class _Seen:
    def __init__(self) -> None:
        self.batches: list[object] = []

    def offer(self, header: Header, records: object) -> None:
        self.batches.append(records)


async def test_sink_does_not_offer_a_failed_write(store):
    seen = _Seen()
    sink = StoreSink(store, RetentionService(None).tag, seen)
    bad = [rec(0, tenant="other")]
    with pytest.raises(StorePermanentError):
        await sink.sink(header(), bad)
    assert seen.batches == []


async def test_quarantine_keeps_digest_and_size_not_payload(store):
    sink = StoreSink(store, RetentionService(None).tag)
    payload = b"PTB1" + os.urandom(200)
    await sink.quarantine("bad_signature", "privtel/v1/acme/agent1/batches", header("ab" * 16),
                          payload)
    await sink.quarantine("malformed", "privtel/v1/acme/agent1/batches", None, b"junk")
    assert store.count_quarantined("bad_signature") == 1
    with store._tx() as cur:
        cur.execute("SELECT reason, agent_id, batch_id, size, digest FROM quarantine ORDER BY id")
        rows = cur.fetchall()
    assert rows == [("bad_signature", "agent1", "ab" * 16, 204,
                     hashlib.sha256(payload).hexdigest()),
                    ("malformed", None, None, 4, hashlib.sha256(b"junk").hexdigest())]


def test_instrumented_store_counts_errors(store):
    reg = CollectorRegistry()
    s = InstrumentedStore(store, StoreMetrics(reg, store.backend))
    with pytest.raises(StorePermanentError):
        s.write_batch(meta("b1"), [tagged(rec(0, tenant="other"))])
    assert reg.get_sample_value("privtel_store_batches_total",
                                {"backend": "sqlite", "result": "error"}) == 1
    assert reg.get_sample_value("privtel_store_write_seconds_count",
                                {"backend": "sqlite"}) == 1
