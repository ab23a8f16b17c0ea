"""Retention enforcement: tagging on ingest, reload, purge with metrics and audit, CLI."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from collector_kit import BACKENDS, meta, rec
from prometheus_client import CollectorRegistry

from collector.retention import JsonlAuditLog, RetentionService
from pipelines.config import ConfigError
from pipelines.record import Kind
from pipelines.retention import DAY

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "retention.toml"
NOW = 1_750_000_000.0


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    v = reg.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_example_policy_tags_by_jurisdiction():
    svc = RetentionService(None, policy_path=EXAMPLE, jurisdictions={"initech": "eu"})
    logs = [rec(0, kind=Kind.LOG, name="syslog", tenant=t, ts=NOW, msg="x")
            for t in ("acme", "globex", "initech")]
    tagged = svc.tag(logs, now=NOW)
    assert [t.retention_class for t in tagged] == ["raw_cli", "logs", "raw_cli"]
    assert tagged[1].expires_at == pytest.approx(NOW + 90 * DAY)
    assert svc.policy.gaps == []


def test_unmatched_records_are_counted_in_metrics(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[classes.m]\ndays = 10\nlegal_basis = "x"\n'
                      '[classes.short]\ndays = 1\nlegal_basis = "y"\n'
                      '[[rules]]\nkind = "metric"\nclass = "m"\n')
    reg = CollectorRegistry()
    svc = RetentionService(None, policy_path=policy, registry=reg)
    out = svc.tag([rec(0), rec(1, kind=Kind.EVENT, name="e", s=1),
                   rec(2, kind=Kind.EVENT, name="e", s=1)], now=NOW)
    assert [t.retention_class for t in out] == ["m", "short", "short"]
    assert value(reg, "privtel_retention_unmatched_records_total", kind="event") == 2
    assert value(reg, "privtel_retention_policy_gaps") == 4


def test_bad_reload_keeps_previous_policy(tmp_path):
    policy = tmp_path / "p.toml"
    shutil.copy(EXAMPLE, policy)
    reg = CollectorRegistry()
    svc = RetentionService(None, policy_path=policy, registry=reg)
    policy.write_text(policy.read_text().replace('class = "metrics"', 'class = "nope"'))
    assert svc.reload() is False
    assert "metrics" in svc.policy.classes
    assert value(reg, "privtel_retention_policy_reloads_total", result="error") == 1
    policy.write_text(EXAMPLE.read_text().replace("days = 395", "days = 400"))
    os.utime(policy, (NOW, NOW))
    assert svc.reload_if_changed() is True
    assert svc.policy.classes["metrics"].days == 400
    assert svc.reload_if_changed() is False
    assert value(reg, "privtel_retention_policy_reloads_total", result="ok") == 2


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_purge_reports_metrics_and_audit(store, tmp_path):
    reg = CollectorRegistry()
    audit = tmp_path / "audit.jsonl"
    svc = RetentionService(store, registry=reg, audit=JsonlAuditLog(audit))
    old = [rec(i, kind=Kind.LOG, name="syslog", ts=NOW - 100 * DAY, msg="x") for i in range(3)]
    new = [rec(i, ts=NOW) for i in range(2)]
    assert store.write_batch(meta("b1"), svc.tag(old + new, now=NOW))
    dry = svc.purge(dry_run=True, now=NOW)
    assert dry.deleted == {"logs": 3}
    assert store.count_records() == 5
    assert value(reg, "privtel_retention_purged_records_total", retention_class="logs") == 0
    done = svc.purge(now=NOW)
    assert done.deleted == {"logs": 3}
    assert store.count_records() == 2
    assert value(reg, "privtel_retention_purged_records_total", retention_class="logs") == 3
    assert value(reg, "privtel_retention_purge_runs_total", trigger="on_demand",
                 result="ok") == 1
    assert value(reg, "privtel_retention_last_purge_timestamp_seconds") > 0
    entries = [orjson.loads(line) for line in audit.read_bytes().splitlines()]
    assert [(e["action"], e["dry_run"], e["total"]) for e in entries] == [
        ("retention.purge", True, 3), ("retention.purge", False, 3)]
    assert oct(audit.stat().st_mode & 0o777) == "0o600"


async def test_scheduled_purge_runs_until_stopped(store):
    reg = CollectorRegistry()
    svc = RetentionService(store, registry=reg, interval_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    for _ in range(200):
        if value(reg, "privtel_retention_purge_runs_total", trigger="scheduled",
                 result="ok") >= 2:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert value(reg, "privtel_retention_purge_runs_total", trigger="scheduled",
                 result="ok") >= 2


def test_service_refuses_bad_interval():
    with pytest.raises(ValueError, match="interval_s must be positive"):
        RetentionService(None, interval_s=0)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """The real argument parser and command, in process (a subprocess adds seconds)."""
    from privtel.commands import retention

    def run(*args: str) -> Run:
        parser = argparse.ArgumentParser(prog="privtel")
        retention.register(parser.add_subparsers(dest="command", required=True))
        ns = parser.parse_args(["retention", *args])
        try:
            code = int(ns.func(ns))
        except (ConfigError, ValueError) as e:
            print(f"privtel: error: {e}", file=sys.stderr)
            code = 2
        out = capsys.readouterr()
        return Run(code, out.out, out.err)

    return run


def test_cli_is_discovered_by_privtel():
    from privtel.cli import build_parser

    ns = build_parser().parse_args(["retention", "check", "--policy", str(EXAMPLE)])
    assert ns.func(ns) == 0


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_cli_purge_dry_run_then_purge(cli, store, store_url, tmp_path):
    svc = RetentionService(store)
    old = [rec(i, kind=Kind.LOG, name="syslog", ts=1_600_000_000.0, msg="x") for i in range(4)]
    store.write_batch(meta("b1"), svc.tag(old))
    audit = tmp_path / "audit.jsonl"
    dry = cli("purge", "--dry-run", "--store", store_url, "--policy", str(EXAMPLE),
               "--audit", str(audit))
    assert dry.returncode == 0, dry.stderr
    assert "(dry run)" in dry.stdout
    assert any(line.split()[:3] == ["logs", "90", "days"] and line.split()[-1] == "4"
               for line in dry.stdout.splitlines())
    assert "4 would be deleted" in dry.stdout
    assert store.count_records() == 4
    done = cli("purge", "--json", "--store", store_url, "--policy", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout.strip().splitlines()[-1])["deleted"] == {"logs": 4}
    assert store.count_records() == 0
    assert len(audit.read_bytes().splitlines()) == 1


def test_cli_bad_store_url_is_a_clear_error(cli):
    r = cli("purge", "--store", "mysql://u:pw@10.0.0.1/x")
    assert r.returncode == 2
    assert "unsupported store URL scheme 'mysql'" in r.stderr
    assert "10.0.0.1" not in r.stderr and "pw@" not in r.stderr


def test_cli_check_reports_policy_and_refuses_bad_one(cli, tmp_path):
    ok = cli("check", "--policy", str(EXAMPLE))
    assert ok.returncode == 0
    assert "6 classes" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[classes.a]\ndays = 1\nlegal_basis = "x"\n[[rules]]\nclass = "b"\n')
    r = cli("check", "--policy", str(bad))
    assert r.returncode == 2
    assert f"{bad}: rules[0].class: unknown class 'b'" in r.stderr


async def test_running_service_picks_up_policy_edits(tmp_path, store):
    policy = tmp_path / "p.toml"
    shutil.copy(EXAMPLE, policy)
    svc = RetentionService(store, policy_path=policy, interval_s=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop, reload_check_s=0.02))
    policy.write_text(EXAMPLE.read_text().replace("days = 395", "days = 400"))
    os.utime(policy, (NOW, NOW))
    for _ in range(250):
        if svc.policy.classes["metrics"].days == 400:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert svc.policy.classes["metrics"].days == 400


def test_cli_purge_with_collector_config_and_env_store(cli, store, store_url, tmp_path,
                                                       monkeypatch):
    store.write_batch(meta("b1"), RetentionService(store).tag(
        [rec(0, kind=Kind.LOG, name="syslog", ts=1_600_000_000.0, msg="x")]))
    cfg = tmp_path / "collector.toml"
    cfg.write_text(f'[collector]\nstore = "{store_url}"\nretention_policy = "{EXAMPLE}"\n'
                   '[keys]\nprivate_keys = ["collector.key"]\n'
                   '[[agents]]\nid = "agent1"\ntenant = "acme"\npublic_key = "agent1.pub"\n')
    cfg.chmod(0o644)
    refused = cli("purge", "--dry-run", "--config", str(cfg))
    assert refused.returncode == 2
    assert "chmod 600" in refused.stderr
    cfg.chmod(0o600)
    dry = cli("purge", "--dry-run", "--json", "--config", str(cfg))
    assert dry.returncode == 0, dry.stderr
    assert orjson.loads(dry.stdout)["deleted"] == {"logs": 1}
    monkeypatch.setenv("PRIVTEL_STORE", store_url)
    done = cli("purge", "--json", "--store", "env")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["deleted"] == {"logs": 1}
    assert store.count_records() == 0
    monkeypatch.delenv("PRIVTEL_STORE")
    assert cli("purge", "--store", "env").returncode == 2


def test_batch_tag_equals_policy_tag_per_record(tmp_path):
    """Tagging asks the policy once per kind, tenant and site; every record must
    still get what `Policy.tag` gives it, unmatched counts included."""
    policy = tmp_path / "p.toml"
    policy.write_text('[classes.m]\ndays = 10\nlegal_basis = "x"\n'
                      '[classes.short]\ndays = 1\nlegal_basis = "y"\n'
                      '[classes.keep]\nuntil = "contract_end"\nlegal_basis = "z"\n'
                      '[[rules]]\nkind = "metric"\nclass = "m"\n'
                      '[[rules]]\nkind = "inventory"\nclass = "keep"\n')
    reg = CollectorRegistry()
    svc = RetentionService(None, policy_path=policy, registry=reg,
                           jurisdictions={"globex": "eu"})
    records = [rec(i, kind=k, tenant=t, name="n", ts=NOW + (i - 3) * 100, s=1)
               for i, (k, t) in enumerate([(Kind.METRIC, "acme"), (Kind.METRIC, "acme"),
                                           (Kind.EVENT, "acme"), (Kind.EVENT, "acme"),
                                           (Kind.METRIC, "globex"), (Kind.INVENTORY, "acme"),
                                           (Kind.EVENT, "globex"), (Kind.METRIC, "acme")])]
    got = svc.tag(records, now=NOW)
    reference = RetentionService(None, policy_path=policy, jurisdictions={"globex": "eu"})
    want = [reference.policy.tag(r, reference.jurisdictions.get(r.tenant), now=NOW)
            for r in records]
    pairs = zip(records, want, strict=True)
    assert [(t.record, t.retention_class, t.legal_basis, t.expires_at) for t in got] == \
        [(r, w.retention_class, w.legal_basis, w.expires_at) for r, w in pairs]
    assert value(reg, "privtel_retention_unmatched_records_total", kind="event") == 3
    assert got[5].expires_at is None and got[0].expires_at == NOW - 300 + 10 * DAY
