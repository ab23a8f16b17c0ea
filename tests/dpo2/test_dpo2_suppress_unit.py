"""The agent's suppression list without a broker: it survives a restart (kept
signed in the state directory), and a list for another tenant, an older one,
one under another key or one arriving with no key configured is refused and
counted while the list in force stays."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from prometheus_client import CollectorRegistry

from agents.suppress import STATE_FILE, Suppressor
from pipelines.keys import generate_signing_key
from pipelines.record import Kind, Record
from pipelines.suppression import SuppressionList, sign_list

NET = ipaddress.ip_network("10.9.8.7/32")


def rec(addr: str) -> Record:
    return Record(kind=Kind.EVENT, tenant="acme", site="hq", device="d", name="x",
                  fields={"peer": addr, "note": "n"})


def test_list_survives_restart_and_bad_lists_are_refused(tmp_path: Path) -> None:
    sk = generate_signing_key()
    reg = CollectorRegistry()
    s = Suppressor("acme", sk.public_key(), reg, tmp_path)
    assert s.update(sign_list(SuppressionList("acme", 100.0, (NET,)), sk))
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o077 == 0

    again = Suppressor("acme", sk.public_key(), CollectorRegistry(), tmp_path)
    assert again.ranges == (NET,)
    assert [r.fields["peer"] for r in again.apply([rec("10.9.8.7"), rec("10.9.8.8")])
            ] == ["10.9.8.8"]

    for bad in (sign_list(SuppressionList("globex", 200.0, ()), sk),
                sign_list(SuppressionList("acme", 50.0, ()), sk),
                sign_list(SuppressionList("acme", 300.0, ()), generate_signing_key()),
                b"PTS1" + b"x" * 80):
        assert not s.update(bad)
    assert s.ranges == (NET,)
    assert reg.get_sample_value("privtel_agent_suppression_lists_rejected_total") == 4

    unkeyed = Suppressor("acme", None, CollectorRegistry(), None)
    assert not unkeyed.update(sign_list(SuppressionList("acme", 1.0, (NET,)), sk))
    assert unkeyed.apply([rec("10.9.8.7")])  # nothing in force: everything flows
