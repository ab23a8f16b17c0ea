"""The shipped Prometheus and Alertmanager files, checked by the real promtool and
amtool: the config loads from anywhere, every rule is valid, every alert fires in
its promtool case (and stays quiet in the neighbouring one), and every series the
rules rely on is documented and, where docs/metrics.md says so, exposed today."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from deploy_kit import DEPLOY, ROOT, run, tool
from peers.ports import free_port
from peers.procs import stop
from prometheus_client import CollectorRegistry

from agents.shipper import _Metrics as ShipperMetrics
from collector.ingest import IngestMetrics
from collector.metrics import NocMetrics, StoreMetrics
from collector.outputs.remote_write import RemoteWriteMetrics
from collector.retention import RetentionMetrics

PROM = DEPLOY / "prometheus"
RULES = PROM / "privtel-alerts.yml"
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))


def rule_groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def alert_names() -> set[str]:
    return {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}


def promtool() -> str:
    return tool("promtool", "prometheus")


def test_config_checks_from_any_directory(tmp_path: Path) -> None:
    """Rule files and agent target files resolve against the config's own folder."""
    r = run([promtool(), "check", "config", str(PROM / "prometheus.yml")], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert {"privtel-collector", "privtel-agent"} <= set(jobs)
    targets = [t for f in sorted((PROM / "agents").glob("*.yml"))
               for t in yaml.safe_load(f.read_text())]
    assert targets, "no agent target file ships beside prometheus.yml"
    for t in targets:
        assert {"tenant", "site", "agent"} <= set(t["labels"]), t


def test_a_broken_agent_target_file_fails_the_check(tmp_path: Path) -> None:
    shutil.copytree(PROM, tmp_path / "prometheus")
    (tmp_path / "prometheus" / "agents" / "broken.yml").write_text("- targets: 9109\n")
    r = run([promtool(), "check", "config", str(tmp_path / "prometheus" / "prometheus.yml")])
    assert r.returncode != 0
    assert "broken" in r.stdout + r.stderr or "agents" in r.stdout + r.stderr


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_a_real_prometheus_loads_the_shipped_files(tmp_path: Path) -> None:
    """Installed as the Debian package would have it: the files in one folder."""
    binary = tool("prometheus", "prometheus")
    etc = tmp_path / "etc"
    shutil.copytree(PROM, etc, ignore=shutil.ignore_patterns("tests"))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={etc / 'prometheus.yml'}",
             f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp_path / 'data'}"],
            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("Prometheus did not become ready")
        groups = _get(f"{base}/api/v1/rules")["data"]["groups"]
        assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in rule_groups())
        loaded = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
        assert loaded == alert_names()
        agents: list[dict] = []
        for _ in range(100):  # discovery hands targets over a few seconds after start
            targets = _get(f"{base}/api/v1/targets")["data"]["activeTargets"]
            agents = [t["labels"] for t in targets if t["labels"]["job"] == "privtel-agent"]
            if agents:
                break
            time.sleep(0.2)
        assert agents == [{"agent": "site1-edge", "instance": "127.0.0.1:9109",
                           "job": "privtel-agent", "site": "hq", "tenant": "acme"}]
    finally:
        stop(proc)


def test_rules_check() -> None:
    r = run([promtool(), "check", "rules", str(RULES)])
    assert r.returncode == 0, r.stdout + r.stderr
    n = sum(len(g["rules"]) for g in rule_groups())
    assert f"SUCCESS: {n} rules found" in r.stdout


def test_rule_unit_tests_pass() -> None:
    assert RULE_TESTS
    r = run([promtool(), "test", "rules", *map(str, RULE_TESTS)], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(RULE_TESTS), r.stdout


def _cases() -> list[dict]:
    return [case for f in RULE_TESTS for t in yaml.safe_load(f.read_text())["tests"]
            for case in t.get("alert_rule_test", [])]


def test_every_alert_is_seen_firing_and_seen_quiet() -> None:
    fired = {c["alertname"] for c in _cases() if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in _cases() if not c.get("exp_alerts")}
    assert alert_names() - fired == set(), "alerts without a firing promtool case"
    assert alert_names() - quiet == set(), "alerts without a case where they stay quiet"
    assert fired <= alert_names(), "promtool cases for alerts that do not exist"


@pytest.mark.parametrize(("test_file", "alert", "old", "new"), [
    # One alert per worker instead of one per agent.
    ("liveness.yml", "PrivtelAgentSilent", "max without (instance) (privtel_agent_up) == 0",
     "privtel_agent_up == 0"),
    # A device that answers again is still reported down.
    ("liveness.yml", "PrivtelDeviceDown", "max without (instance) (privtel_device_up) == 0",
     "max without (instance) (privtel_device_up) >= 0"),
    # Collectors gone from discovery leave no `up` series to compare with 0.
    ("collector.yml", "PrivtelCollectorGone", 'absent(up{job="privtel-collector"})',
     'up{job="privtel-collector"} == 0'),
    # Utilisation in bytes, not bits.
    ("interfaces.yml", "PrivtelInterfaceSaturated",
     "rate(privtel_interface_in_octets_total[5m]) * 8",
     "rate(privtel_interface_in_octets_total[5m])"),
])
def test_rule_tests_catch_a_broken_rule(tmp_path: Path, test_file: str, alert: str, old: str,
                                        new: str) -> None:
    """The promtool cases are sharp enough to fail on a plausible mistake."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM, copy)
    text = RULES.read_text()
    assert text.count(old) == 1, old
    (copy / RULES.name).write_text(text.replace(old, new))
    r = run([promtool(), "test", "rules", str(copy / "tests" / test_file)], timeout=300)
    assert r.returncode != 0, f"breaking {alert} went unnoticed"
    assert alert in r.stdout + r.stderr


def test_alertmanager_example() -> None:
    amtool = tool("amtool", "prometheus-alertmanager")
    path = PROM / "alertmanager.yml"
    r = run([amtool, "check-config", str(path)])
    assert r.returncode == 0, r.stdout + r.stderr
    route = [amtool, "config", "routes", "test", f"--config.file={path}"]
    assert run([*route, "severity=critical"]).stdout.split() == ["noc-critical"]
    assert run([*route, "severity=warning"]).stdout.split() == ["noc"]
    cfg = yaml.safe_load(path.read_text())
    mentioned = " ".join(str(m) for rule in cfg["inhibit_rules"]
                         for key in ("source_matchers", "target_matchers") for m in rule[key])
    for name in re.findall(r"Privtel\w+", mentioned):  # a prefix where a regex follows
        assert any(a.startswith(name) for a in alert_names()), f"inhibition names {name}"


# --- series names: docs/metrics.md against the rule tests and the code ---

def documented() -> dict[str, str]:
    rows = re.findall(r"^\| `([A-Za-z_:][\w:]*)` \|.*\| (today|to come|Prometheus)\b",
                      (ROOT / "docs" / "metrics.md").read_text(), re.M)
    return dict(rows)


def fed_series() -> set[str]:
    return {s["series"].split("{", 1)[0] for f in RULE_TESTS
            for t in yaml.safe_load(f.read_text())["tests"] for s in t["input_series"]}


def exposed_today() -> set[str]:
    """Sample names the collector's and the agent's registries and the NOC
    exposition can produce, from their declared families and types."""
    reg = CollectorRegistry()
    IngestMetrics(reg)
    StoreMetrics(reg, "sqlite")
    RetentionMetrics(reg)
    ShipperMetrics(reg)
    RemoteWriteMetrics(reg)
    families = [(m.name, m.type) for m in reg.collect()]
    families += [(m.name, m.type) for m in NocMetrics(None).describe()]
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    return {name + s for name, kind in families for s in suffixes[kind]}


def test_every_series_the_rules_use_is_documented() -> None:
    missing = fed_series() - set(documented())
    assert not missing, f"series fed to the rule tests but not in docs/metrics.md: {missing}"


def test_documented_today_means_exposed_today() -> None:
    today = {n for n, status in documented().items() if status == "today"}
    assert today
    assert not today - exposed_today(), "docs/metrics.md says 'today' for names the code " \
        f"does not expose: {sorted(today - exposed_today())}"
    assert {"privtel_agent_up", "privtel_agent_last_seen_timestamp_seconds",
            "privtel_interface_in_packets_total"} <= today
