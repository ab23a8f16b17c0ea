"""Random and mutated bytes: always a clean EnvelopeError, never a crash or a stored batch."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from transport_helpers import Keys, header, records

from collector.ingest import IngestWorker
from pipelines import envelope
from pipelines.envelope import EnvelopeError, open_sealed, seal

K = Keys("ag1")
GOOD = seal(header("t1", "ag1"), records("t1", 4), K.collector.public, K.signing)


def _outcome(data: bytes) -> str:
    try:
        open_sealed(data, K.agent_keys, K.collector_keys)
    except EnvelopeError as e:
        assert e.reason in envelope.REASONS
        return e.reason
    return "accepted"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    assert _outcome(data) in {"malformed", "oversized"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 600))
def test_framed_random_headers(hjson: bytes, clen: int) -> None:
    data = envelope.MAGIC + struct.pack(">H", len(hjson)) + hjson + struct.pack(">I", clen)
    data += b"\x00" * (clen + 64)
    assert _outcome(data) == "malformed"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(1, 255)), min_size=1,
                max_size=4))
def test_mutated_batches(flips: list[tuple[int, int]]) -> None:
    bad = bytearray(GOOD)
    for i, x in flips:
        bad[i] ^= x
    if bytes(bad) != GOOD:  # two flips of one byte can cancel out
        assert _outcome(bytes(bad)) != "accepted"


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=512), cut=st.integers(0, len(GOOD) - 1))
async def test_ingest_handle_never_stores_junk(data: bytes, cut: int) -> None:
    stored: list[object] = []
    quarantined: list[str] = []

    async def sink(h: object, recs: object) -> bool:
        stored.append(h)
        return True

    async def quarantine(reason: str, topic: str, h: object, payload: bytes) -> None:
        quarantined.append(reason)

    w = IngestWorker(broker_url="mqtt://127.0.0.1:1883", sink=sink, quarantine=quarantine,
                     agent_keys=K.agent_keys, collector_keys=K.collector_keys,
                     registry=CollectorRegistry())
    topic = envelope.topic_for("t1", "ag1")
    assert await w.handle(topic, data) in {"malformed", "oversized"}
    assert await w.handle(topic, GOOD[:cut]) == "malformed"
    assert await w.handle(topic, GOOD) == "accepted"
    assert len(stored) == 1 and len(quarantined) == 2
