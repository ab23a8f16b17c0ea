"""Every panel and variable query of every shipped dashboard, run on a real Prometheus
that scrapes the running demo (`privtel demo --prometheus`): no query may error, and
none may come back empty unless the demo cannot fill it (dashboard_kit.DEMO_EMPTY) or
it needs a series another feature brings (dashboard_kit.TO_COME), each with its reason.
The same run shows the demo moves: traffic rates, a flapping interface, a device gone,
and the shipped alerts reacting."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_kit import (
    DASHBOARDS,
    DEMO_EMPTY,
    TO_COME,
    allowed_empty,
    load,
    queries,
    resolve,
    run,
)
from peers.ports import free_port

from privtel.demo.prometheus import Prometheus, binary

PICK = {"device": "count by (device) (privtel_interface_in_octets_total)"}
READY = {
    "a device is down": "count(max without (instance) (privtel_device_up) == 0)",
    "traffic moves": "count(rate(privtel_interface_in_octets_total[30s]) > 0)",
    "an interface flapped": "count(max_over_time((max without (instance) "
                            "(privtel_interface_oper_status) == 2)[5m:2s]))",
    "the agent is scraped": 'count(up{job="privtel-agent"} == 1)',
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    if binary() is None:
        pytest.fail("prometheus is not installed: apt-get install prometheus (.ci/run does)")
    work = tmp_path_factory.mktemp("noc-dash")
    log = work / "demo.log"
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "privtel", "demo", "--interval", "2", "--prometheus",
             "--prometheus-port", str(port), "--away-after", "20", "--away-for", "900",
             "--data-dir", str(work / "demo")], stdout=out, stderr=subprocess.STDOUT)
    prom = Prometheus(port)
    try:
        deadline = time.monotonic() + 180
        missing = dict(READY)
        while missing and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(2)
            if f"prometheus at {prom.url}" not in log.read_text():
                continue
            missing = {k: q for k, q in missing.items() if not prom.query(q)}
        assert not missing, f"the demo never showed: {sorted(missing)}\n" + \
            log.read_text()[-3000:]
        yield prom
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _uses_to_come(expr: str) -> bool:
    return any(re.search(rf"\b{name}\b", expr) for name in TO_COME)


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_query_runs_and_the_demo_fills_it(demo: Prometheus, path: Path) -> None:
    d = load(path)
    values = resolve(demo, d, PICK)
    empty = []
    for q in queries(d, values):
        try:
            result = run(demo, q)
        except ValueError as e:
            pytest.fail(f"{path.name}: {q.panel}: {e}")
        if not result and not _uses_to_come(q.expr) and not allowed_empty(q):
            empty.append(f"{q.panel} [{q.ref}]: {q.expr}")
    assert not empty, f"{path.name}: empty on the demo:\n" + "\n".join(empty)


def test_allowances_name_real_panels() -> None:
    titles = {(load(p)["uid"], panel["title"]) for p in DASHBOARDS for panel in load(p)["panels"]}
    assert {k[:2] for k in DEMO_EMPTY} <= titles


def test_the_demo_moves(demo: Prometheus) -> None:
    rates = [float(r["value"][1]) for r in demo.query(
        "max without (instance) (rate(privtel_interface_in_octets_total[30s]) * 8 / "
        "(privtel_interface_speed_bits_per_second > 0))")]
    assert len([r for r in rates if r > 0]) >= 3
    assert len({round(r, 2) for r in rates if r > 0}) >= 3, "utilisation differs by interface"
    reasons = {r["metric"]["reason"] for r in demo.query(
        "max without (instance) (privtel_device_poll_failures) == 1")}
    assert "timeout" in reasons
    uptime = demo.query("max without (instance) (deriv(privtel_device_uptime_seconds[1m]))")
    assert any(0.5 < float(r["value"][1]) < 1.5 for r in uptime), uptime


def test_the_shipped_alerts_react(demo: Prometheus) -> None:
    """The gone device and the flapping interface (admin up) put their alerts in
    pending; Prometheus keeps that in its ALERTS series."""
    assert demo.api("rules")["groups"], "the shipped rules were not loaded"
    want, seen = {"PrivtelDeviceDown", "PrivtelInterfaceDown"}, set()
    deadline = time.monotonic() + 90  # rules run on their own interval, after the scrape
    while seen != want and time.monotonic() < deadline:
        seen = {r["metric"]["alertname"] for r in demo.query(
            'max_over_time(ALERTS{alertname=~"PrivtelDeviceDown|PrivtelInterfaceDown"}[10m])')}
        time.sleep(0 if seen == want else 2)
    assert seen == want
