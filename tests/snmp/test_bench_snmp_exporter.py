"""bench/snmp_poll.py measures Prometheus' snmp_exporter beside us, and says so plainly
when the exporter is not there. Tiny sizes: figures are checked for presence, not speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

BENCH = Path(__file__).parents[2] / "bench" / "snmp_poll.py"
TINY = ["--interfaces", "20", "--devices", "2", "--scale-interfaces", "2", "--skip-pysnmp",
        "--exporter-scrapes", "1"]


def _run(*extra: str) -> tuple[str, dict[str, object]]:
    res = subprocess.run([sys.executable, str(BENCH), *TINY, *extra], capture_output=True,
                         text=True, timeout=240, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res.stdout, orjson.loads(res.stdout.strip().splitlines()[-1])


def test_exporter_walks_the_same_tables() -> None:
    out, last = _run()
    # 20 interfaces x 41 walked columns, the same count our walk reports (less its 4 GETs)
    assert f"snmp_exporter: {20 * 41} varbinds" in out, out
    assert last["snmp_exporter_client_cpu_s_per_10k"] is not None
    assert last["snmp_exporter_varbinds_per_s"] > 0
    assert last["varbinds"] == 20 * 41 + 4
    # alternated repeats: one figure per run behind each median, and the v3 ratio
    for key in ("client_cpu_s_per_10k", "v3_client_cpu_s_per_10k",
                "snmpbulkwalk_client_cpu_s_per_10k"):
        runs = last[f"{key}_runs"]
        assert len(runs) == last["repeats"] == 3
        assert min(runs) <= last[key] <= max(runs)
    ratio = last["v3_client_cpu_s_per_10k"] / last["client_cpu_s_per_10k"]
    assert abs(last["v3_to_v2c"] - ratio) <= 0.02 * ratio  # the medians are rounded


def test_missing_exporter_is_reported_not_fatal(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-snmp-exporter"
    out, last = _run("--snmp-exporter", str(missing))
    assert f"snmp_exporter: not measured: {missing} is not installed" in out, out
    assert last["snmp_exporter_client_cpu_s_per_10k"] is None
    assert last["snmp_exporter_varbinds_per_s"] is None
    assert last["client_cpu_s_per_10k"] > 0  # the rest of the bench still ran
