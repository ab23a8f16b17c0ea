"""Every dashboard's PromQL expression names only metrics the collector or the agent
exposes, or a series listed in dashboard_kit.TO_COME with the feature that brings it
(the alert rules are checked against docs/metrics.md in
tests/deploy/test_prometheus_rules.py). tests/noc_dash runs every query on a real
Prometheus scraping the demo."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_kit import meta, rec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.scheduler import Scheduler
from agents.shipper import _Metrics as ShipperMetrics
from collector.ingest import IngestMetrics
from collector.metrics import InstrumentedStore, NocMetrics, StoreMetrics
from collector.outputs import build_outputs
from collector.outputs.remote_write import RemoteWriteConfig
from collector.retention import RetentionService
from pipelines.record import Kind

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "noc_dash"))
from dashboard_kit import TO_COME

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
POLICY = Path(__file__).parent / "testdata" / "retention_no_events.toml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
BUILD = DEPLOY / "grafana" / "build_dashboards.py"
PROMETHEUS_OWN = {"up"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan"}


def exposed_names(store) -> set[str]:
    """Sample names of a collector with every component registered and fed once."""
    reg = CollectorRegistry()
    noc = NocMetrics(reg)
    IngestMetrics(reg)
    ShipperMetrics(reg)
    Scheduler([], lambda records: None, registry=reg)
    build_outputs([], reg, configured={"remote_write": [RemoteWriteConfig(url="http://x")]})
    sm = StoreMetrics(reg, store.backend)
    svc = RetentionService(store, registry=reg, policy_path=POLICY)
    s = InstrumentedStore(store, sm)
    now = 1_750_000_000.0
    records = [
        rec(0, kind=Kind.HEALTH, name="device.health", ts=now, up=0, reason="timeout",
            protocol="snmp", poll_duration_s=1.0, uptime_s=5),
        rec(0, name="if", ts=now, if_name="eth0", in_octets=1, out_octets=1, in_errors=0,
            out_errors=0, in_discards=0, out_discards=0, oper_status=1, admin_status=1,
            speed_bps=10),
        rec(0, name="host.cpu", ts=now, cpu_util_pct=1.0),
        rec(0, name="host.memory", ts=now, mem_used_bytes=1, mem_total_bytes=2),
        rec(0, kind=Kind.LOG, name="syslog", ts=now - 400 * 86400, msg="x"),
        rec(0, kind=Kind.EVENT, name="link.down", ts=now, state="down"),
    ]
    s.write_batch(meta("b1"), svc.tag(records, now=now))
    s.quarantine("bad_signature", "t", None, None, 1, "00")
    svc.purge(now=now)
    sm.refresh(s)
    noc.stale_after_s = 1e12
    noc.observe(records[:4])
    names = set()
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        names |= {smp.name for smp in fam.samples}
    suffix = {"counter": "_total", "gauge": ""}  # labelled families with no child yet
    return names | {f.name + suffix[f.type] for f in reg.collect() if f.type in suffix}


def strip_promql(expr: str) -> str:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    return expr


def metric_names(expr: str) -> set[str]:
    names = set()
    lv = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr)
    if lv:
        expr = lv.group(1)
    for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", strip_promql(expr)):
        word = m.group(1)
        if word.lower() not in KEYWORDS:
            names.add(word)
    return names


def dashboard_exprs(d: dict[str, Any]) -> list[str]:
    out = []

    def panels(ps: list[dict[str, Any]]) -> None:
        for p in ps:
            out.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            panels(p.get("panels", []))

    panels(d.get("panels", []))
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        out.append(q["query"] if isinstance(q, dict) else q)
    return out


def test_metric_name_extraction():
    assert metric_names('sum by (reason) (rate(privtel_x_total{reason!="duplicate"}[5m])) > 0') \
        == {"privtel_x_total"}
    assert metric_names('label_values(privtel_device_up{tenant=~"$tenant"}, site)') \
        == {"privtel_device_up"}
    assert metric_names("time() - max(a_b) and on (x) c") == {"a_b", "c"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_uses_only_exposed_metrics(path, store):
    d = json.loads(path.read_text())
    exprs = dashboard_exprs(d)
    assert len(exprs) >= 5
    exposed = exposed_names(store) | PROMETHEUS_OWN | set(TO_COME)
    for expr in exprs:
        unknown = metric_names(expr) - exposed
        assert not unknown, f"{path.name}: {expr!r} uses {sorted(unknown)}"
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "privtel-prometheus"


def test_dashboards_are_provisioned_with_unique_uids():
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids)) == 4
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "privtel-prometheus"
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/privtel.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/privtel"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_layout_is_sound(path):
    d = json.loads(path.read_text())
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        assert p["title"] and p["targets"]
    names = [v["name"] for v in d["templating"]["list"]]
    for p in d["panels"]:
        for t in p["targets"]:
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in names or var == "__rate_interval", \
                    f"{p['title']}: ${var} is not a dashboard variable"


def test_committed_dashboards_are_what_the_builder_writes():
    spec = importlib.util.spec_from_file_location("build_dashboards", BUILD)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rendered = mod.render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for p in DASHBOARDS:
        assert p.read_text() == rendered[p.name], f"{p.name}: run {BUILD.name}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_rates_follow_the_scrape_interval_and_workers_are_not_double_counted(path):
    d = json.loads(path.read_text())
    exprs = dashboard_exprs(d)
    for expr in exprs:
        for window in re.findall(r"\b(?:rate|irate)\([^\[]*\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", expr
    if d["uid"] in ("privtel-fleet", "privtel-device"):
        for expr in exprs:
            if expr.startswith("label_values("):
                continue
            if "privtel_device_" in expr or "privtel_interface_" in expr:
                assert "max without (instance)" in expr or "max by (" in expr, expr
    if d["uid"] == "privtel-collector":
        assert [v["name"] for v in d["templating"]["list"]] == ["instance"]
        for p in d["panels"]:
            for t in p["targets"]:
                assert 'instance=~"$instance"' in t["expr"], p["title"]
