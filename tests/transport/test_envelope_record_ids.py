"""A batch repeating a record id is refused when it is opened (`invalid_record`), not
by the store on every delivery (the poison batch of issue 12)."""

from __future__ import annotations

import orjson
import pytest
from transport_helpers import Keys, raw_header, raw_seal, records

from pipelines.envelope import EnvelopeError, open_sealed


def test_repeated_record_id_is_invalid_record() -> None:
    k = Keys("edge-1")
    recs = records("acme", 3)
    body = orjson.dumps([r.to_dict() for r in (recs[0], recs[1], recs[0])])
    with pytest.raises(EnvelopeError) as e:
        open_sealed(raw_seal(raw_header(k, "acme", 3), body, k), k.agent_keys,
                    k.collector_keys)
    assert e.value.reason == "invalid_record" and "more than once" in e.value.detail
    ok = orjson.dumps([r.to_dict() for r in recs])
    _h, got = open_sealed(raw_seal(raw_header(k, "acme", 3), ok, k), k.agent_keys,
                          k.collector_keys)
    assert [r.id for r in got] == [r.id for r in recs]
