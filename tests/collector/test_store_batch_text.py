"""The per-batch caches of the COPY encoder: repeated sites, devices, times and tags
must not leak one record's value or escaping into another's."""

from __future__ import annotations

import pytest
from collector_kit import BACKENDS, fetch, meta

from collector.store import TaggedRecord
from pipelines.record import Kind, Record

pytestmark = pytest.mark.parametrize("store_url", BACKENDS, indirect=True)


def test_a_batch_of_look_alike_records_round_trips(store):
    sites = ["hq", "a\tb", "back\\slash", "hq"]
    devices = ["d\n1", "d1", "d\\n1", "d1"]
    texts = ["plain", "tab\there", "a literal \\u0000, not a NUL", "nul\x00inside", 'q"\\']
    records = [TaggedRecord(Record(kind=Kind.LOG, tenant="acme", site=sites[i % 4],
                                   device=devices[i % 4], name="syslog",
                                   fields={"msg": texts[i % 5], "n": i},
                                   ts=1_700_000_000.0 + i % 3),
                            "logs" if i % 2 else "metrics",
                            "basis\\one" if i % 3 else "basis\ttwo",
                            None if i % 5 == 0 else 1_800_000_000.0 + i % 2)
               for i in range(40)]
    assert store.write_batch(meta("b1"), records)
    for t in records:
        r = t.record
        got = fetch(store, r.id)
        assert (got["site"], got["device"], got["retention_class"], got["legal_basis"],
                got["expires_at"], got["fields"]["n"]) == (
            r.site, r.device, t.retention_class, t.legal_basis, t.expires_at, r.fields["n"])
        assert got["fields"]["msg"] in (r.fields["msg"], str(r.fields["msg"]).replace(
            "\x00", "\ufffd"))
