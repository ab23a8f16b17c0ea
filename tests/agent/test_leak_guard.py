"""The agent's last line of defence: a record that still holds a raw address after
pseudonymisation is held back, counted and quarantined locally, never shipped or logged."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from agents.runtime import Guard
from pipelines.pseudonym import FieldClass, PrivacyPolicy, Pseudonymiser, TenantKey
from pipelines.record import Kind, Record

RAW = "10.77.1.9"


def _guard(tmp_path: Path) -> tuple[Guard, CollectorRegistry]:
    key = TenantKey.from_hex(bytes(range(32)).hex())
    # an operator mistake: a field that holds addresses declared as public (not scanned)
    policy = PrivacyPolicy(fields={"peer_note": FieldClass.PUBLIC})
    registry = CollectorRegistry()
    return Guard(Pseudonymiser(key, policy), registry, tmp_path / "q"), registry


def _record(**fields: object) -> Record:
    return Record(kind=Kind.EVENT, tenant="acme", site="hq", device="core-1", name="x",
                  fields=fields)


def test_leaking_record_is_held_back_and_quarantined(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    guard, registry = _guard(tmp_path)
    clean = _record(message=f"login from {RAW}")
    leaky = _record(peer_note=f"peer {RAW} flapping")
    with caplog.at_level(logging.DEBUG):
        out = guard.apply([clean, leaky])
    assert [r.id for r in out] == [clean.id]
    assert RAW not in orjson.dumps([r.to_dict() for r in out]).decode()
    assert registry.get_sample_value("privtel_agent_leak_quarantined_records_total") == 1
    (qfile,) = (tmp_path / "q").iterdir()
    assert qfile.stat().st_mode & 0o077 == 0
    assert [orjson.loads(line)["id"] for line in qfile.read_bytes().splitlines()] == [leaky.id]
    assert RAW not in qfile.read_text() and "flapping" not in qfile.read_text()  # no raw value
    assert any(getattr(r, "record_id", None) == leaky.id for r in caplog.records)
    assert all(RAW not in r.getMessage() and RAW not in str(vars(r)) for r in caplog.records)


def test_clean_records_pass_untouched_but_pseudonymised(tmp_path: Path) -> None:
    guard, registry = _guard(tmp_path)
    out = guard.apply([_record(message=f"login from {RAW}", src_ip=RAW)])
    assert len(out) == 1 and RAW not in str(out[0].fields)
    assert out[0].device != "core-1"
    assert registry.get_sample_value("privtel_agent_leak_quarantined_records_total") == 0
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize(("value", "cls"), [
    ("Accepted publickey for adaeze from gw port 22 ssh2", "user"),
    ("mail adaeze@clinic.ng", "email"),
    ("call +234 803 555 0147", "phone"),
    ("rdns dsl-198-51-100-7.example-isp.net", "host"),
    ("arp 001b638445e6", "mac"),
])
def test_each_class_that_slips_past_the_policy_is_caught(tmp_path: Path, value: str,
                                                          cls: str) -> None:
    guard, registry = _guard(tmp_path)
    assert guard.apply([_record(peer_note=value)]) == []
    assert registry.get_sample_value("privtel_agent_leak_findings_total", {"class": cls}) == 1
    (qfile,) = (tmp_path / "q").iterdir()
    line = orjson.loads(qfile.read_bytes())
    assert {"field": "peer_note", "class": cls} == {k: line["findings"][0][k]
                                                    for k in ("field", "class")}
    assert value not in qfile.read_text()
    for word in value.split():
        if len(word) > 4:
            assert word not in qfile.read_text()


def test_quarantine_is_purged_after_its_retention(tmp_path: Path) -> None:
    guard, _ = _guard(tmp_path)
    guard.apply([_record(peer_note=f"peer {RAW}")])
    (qfile,) = (tmp_path / "q").iterdir()
    old = qfile.stat().st_mtime - 8 * 86400  # default retention: 7 days
    os.utime(qfile, (old, old))
    assert guard.purge() == 1 and not qfile.exists()


def test_learnt_names_survive_a_restart_as_digests_only(tmp_path: Path) -> None:
    key = TenantKey.from_hex(bytes(range(32)).hex())
    first = Guard(Pseudonymiser(key), CollectorRegistry(), None, tmp_path)
    first.apply([_record(message="sshd[1]: Accepted password for chinedu from 10.0.0.2 port 2")])
    stored = (tmp_path / "learnt-names.json")
    assert stored.stat().st_mode & 0o077 == 0 and "chinedu" not in stored.read_text()
    again = Guard(Pseudonymiser(key), CollectorRegistry(), None, tmp_path)  # a restart
    (out,) = again.apply([_record(message="cron: job of chinedu done")])
    assert "chinedu" not in str(out.fields["message"])
    assert str(out.fields["message"]).startswith("cron: job of tk-")
