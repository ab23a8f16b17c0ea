"""IngestWorker.handle, no broker: replay window, sequence, records, sink failure, rotation."""

from __future__ import annotations

import time

import orjson
import pytest
from prometheus_client import CollectorRegistry
from transport_helpers import Keys, header, raw_header, raw_seal, records

from collector.ingest import IngestError, IngestWorker, SinkFailed
from pipelines import keys
from pipelines.envelope import Header, seal, topic_for
from pipelines.record import Record

T = "t1"


class Recorder:
    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], int] = {}
        self.quarantined: list[str] = []
        self.fail = False

    async def sink(self, h: Header, recs: list[Record]) -> bool:
        if self.fail:
            raise OSError("disk full")
        if (h.agent_id, h.batch_id) in self.stored:
            return False
        self.stored[(h.agent_id, h.batch_id)] = len(recs)
        return True

    async def quarantine(self, reason: str, topic: str, h: Header | None, payload: bytes) -> None:
        self.quarantined.append(reason)


def make(k: Keys, rec: Recorder, **kw: object) -> tuple[IngestWorker, CollectorRegistry]:
    reg = CollectorRegistry()
    w = IngestWorker(broker_url="mqtt://127.0.0.1:1883", sink=rec.sink,
                     quarantine=rec.quarantine, agent_keys=k.agent_keys,
                     collector_keys=k.collector_keys, registry=reg, **kw)  # type: ignore[arg-type]
    return w, reg


def sealed(k: Keys, seq: int, created: float | None = None) -> bytes:
    return seal(header(T, k.agent, seq=seq, created=created), records(T), k.collector.public,
                k.signing)


async def test_too_old_and_future() -> None:
    k, rec = Keys("ag1"), Recorder()
    w, reg = make(k, rec, replay_window_s=3600)
    topic = topic_for(T, "ag1")
    assert await w.handle(topic, sealed(k, 1, created=time.time() - 7200)) == "too_old"
    assert await w.handle(topic, sealed(k, 2, created=time.time() + 7200)) == "too_old"
    assert await w.handle(topic, sealed(k, 3)) == "accepted"
    assert rec.quarantined == ["too_old", "too_old"]
    assert reg.get_sample_value("privtel_batches_rejected_total", {"reason": "too_old"}) == 2


async def test_sequence_window_and_duplicates() -> None:
    k, rec = Keys("ag1"), Recorder()
    w, reg = make(k, rec, seq_window=100)
    topic = topic_for(T, "ag1")
    b500 = sealed(k, 500)
    assert await w.handle(topic, b500) == "accepted"
    assert await w.handle(topic, b500) == "duplicate"
    assert await w.handle(topic, sealed(k, 500)) == "replayed"  # same seq, another batch id
    assert await w.handle(topic, sealed(k, 450)) == "accepted"  # late, inside the window
    assert await w.handle(topic, sealed(k, 400)) == "replayed"  # behind the window
    assert rec.quarantined == ["replayed", "replayed"]
    assert len(rec.stored) == 2
    assert reg.get_sample_value("privtel_batches_rejected_total", {"reason": "duplicate"}) == 1
    # After a restart the window is empty; the store's dedupe still holds.
    w2, reg2 = make(k, rec)
    assert await w2.handle(topic, b500) == "duplicate"
    assert reg2.get_sample_value("privtel_batches_rejected_total", {"reason": "duplicate"}) == 1


async def test_invalid_records_inside_a_valid_envelope() -> None:
    k, rec = Keys("ag1"), Recorder()
    w, _ = make(k, rec)
    topic = topic_for(T, "ag1")
    good = [r.to_dict() for r in records(T, 2)]
    other_tenant = [r.to_dict() for r in records("t2", 2)]
    bad_field = [{**good[0], "fields": {"x": [1, 2]}}]
    for body, n in ((orjson.dumps(other_tenant), 2), (orjson.dumps(bad_field), 1),
                    (orjson.dumps(good), 3), (b"not json", 1), (orjson.dumps({"a": 1}), 1)):
        assert await w.handle(topic, raw_seal(raw_header(k, T, n), body, k)) == "invalid_record"
    assert await w.handle(topic, raw_seal(raw_header(k, T, 2), orjson.dumps(good), k)) == (
        "accepted")
    assert await w.handle(topic, raw_seal(raw_header(k, T, 2, extra=1), orjson.dumps(good),
                                          k)) == "malformed"
    assert rec.quarantined == ["invalid_record"] * 5 + ["malformed"]


async def test_sink_failure_is_not_acknowledged_and_not_counted() -> None:
    k, rec = Keys("ag1"), Recorder()
    w, reg = make(k, rec)
    topic, b = topic_for(T, "ag1"), sealed(k, 9)
    rec.fail = True
    with pytest.raises(SinkFailed):
        await w.handle(topic, b)
    rec.fail = False
    assert await w.handle(topic, b) == "accepted"
    assert reg.get_sample_value("privtel_batches_accepted_total") == 1


async def test_collector_key_rotation_without_restart() -> None:
    k, rec = Keys("ag1"), Recorder()
    w, _ = make(k, rec)
    topic, new = topic_for(T, "ag1"), keys.generate_collector_key("mlkem768-x25519")
    fresh = seal(header(T, "ag1", seq=2), records(T), new.public, k.signing)
    assert await w.handle(topic, fresh) == "unknown_key"
    w.update_keys(collector_keys={**k.collector_keys, new.key_id: new})
    assert await w.handle(topic, fresh) == "accepted"
    assert await w.handle(topic, sealed(k, 3)) == "accepted"


async def test_agent_bound_to_its_tenant() -> None:
    k, rec = Keys("ag1"), Recorder()
    w, reg = make(k, rec, agent_tenants={"ag1": T})
    assert reg.get_sample_value("privtel_batches_rejected_total", {"reason": "unknown_agent"}) == 0
    other = seal(header("t9", "ag1", seq=1), records("t9"), k.collector.public, k.signing)
    assert await w.handle(topic_for("t9", "ag1"), other) == "unknown_agent"
    assert await w.handle(topic_for(T, "ag1"), sealed(k, 2)) == "accepted"
    assert rec.quarantined == ["unknown_agent"] and len(rec.stored) == 1
    assert reg.get_sample_value("privtel_batches_rejected_total", {"reason": "unknown_agent"}) == 1


def test_bad_arguments_are_named() -> None:
    k, rec = Keys("ag1"), Recorder()
    with pytest.raises(IngestError, match="broker_url"):
        IngestWorker(
            broker_url="http://x", sink=rec.sink, quarantine=rec.quarantine, agent_keys={},
            collector_keys={}, registry=CollectorRegistry())
    with pytest.raises(IngestError, match="shared_group"):
        make(k, rec, shared_group="a/b")
    with pytest.raises(IngestError, match="protocol"):
        make(k, rec, protocol="4")
    with pytest.raises(IngestError, match="seq_window"):
        make(k, rec, seq_window=0)
