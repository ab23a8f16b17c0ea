"""Header identifiers must match their patterns as whole strings: `$` also matches
before a final newline, and a signed batch whose batch id ended in one used to
open cleanly and then break the PostgreSQL COPY on every redelivery."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from transport_helpers import Keys, header, raw_header, raw_seal, records

from pipelines.envelope import EnvelopeError, open_sealed, seal
from pipelines.record import encode


@pytest.mark.parametrize("key", ["tenant", "agent", "batch", "ckid", "skid", "pkids"])
def test_a_trailing_newline_in_a_header_identifier_is_malformed(key: str) -> None:
    k = Keys("agent1")
    over: dict[str, object] = {"batch": os.urandom(16).hex()}
    good = raw_header(k, "t1", 2, **over)
    bad = dict(good)
    bad[key] = [*good["pkids"], "pk1\n"] if key == "pkids" else f"{good[key]}\n"  # type: ignore[misc]
    agent_keys = k.agent_keys | {"agent1\n": k.signing.public_key()}
    body = encode(records("t1", 2))
    assert open_sealed(raw_seal(good, body, k), agent_keys, k.collector_keys)[0].records == 2
    with pytest.raises(EnvelopeError) as e:
        open_sealed(raw_seal(bad, body, k), agent_keys, k.collector_keys)
    assert e.value.reason == "malformed"


def test_seal_refuses_such_a_header_too() -> None:
    k = Keys("agent1")
    h = header("t1", "agent1")
    with pytest.raises(EnvelopeError, match="batch must be 32 lowercase hex"):
        seal(replace(h, batch_id=h.batch_id + "\n"), records("t1"), k.collector.public,
             k.signing)
