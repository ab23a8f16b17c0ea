"""`Record.with_fields` takes a short way for a changed `fields` and `device`;
these tests hold it to the same rules and messages as the validating constructor."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.record import MAX_FIELDS, MAX_STRING, Kind, Record, RecordError, encode


def base() -> Record:
    return Record(kind=Kind.METRIC, tenant="acme", site="hq", device="sw-1", name="if",
                  fields={"if_index": 1, "if_alias": "uplink"}, ts=1700000000.5)


def test_copy_equals_one_built_through_the_constructor() -> None:
    r = base()
    c = r.with_fields({"if_index": 2, "if_alias": "x", "ratio": 0.5, "up": True, "n": None},
                      device="tk-1")
    v = Record(kind=r.kind, tenant=r.tenant, site=r.site, device="tk-1", name=r.name,
               fields={"if_index": 2, "if_alias": "x", "ratio": 0.5, "up": True, "n": None},
               ts=r.ts, id=r.id)
    assert type(c) is Record and c == v and encode([c]) == encode([v])
    assert r.with_fields({"a": 1}).device == "sw-1"


@pytest.mark.parametrize(("fields", "changes", "message"), [
    ({"bad name": 1}, {}, "field name 'bad name'"),
    ({"ok_name": "x" * (MAX_STRING + 1)}, {}, "longer than"),
    ({"big": 2**64}, {}, "64-bit range"),
    ({"small": -(2**63) - 1}, {}, "64-bit range"),
    ({"nested": [1]}, {}, "must be a scalar"),
    ({f"f{i}": i for i in range(MAX_FIELDS + 1)}, {}, f"at most {MAX_FIELDS}"),
    ({"a": 1}, {"device": ""}, "device must be"),
    ({"a": 1}, {"device": "d" * 129}, "device must be"),
    ({"a": 1}, {"device": 5}, "device must be"),
    ({"a": 1}, {"name": "Bad"}, "name must match"),
    ({"a": 1}, {"device": "tk-1", "ts": -1}, "ts must be"),
])
def test_short_way_keeps_every_rule(fields: Any, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(RecordError, match=message):
        base().with_fields(fields, **changes)


def test_other_mappings_and_changes_still_build() -> None:
    from types import MappingProxyType
    r = base().with_fields(MappingProxyType({"a": 1}), site="dc2")
    assert r.site == "dc2" and dict(r.fields) == {"a": 1}
