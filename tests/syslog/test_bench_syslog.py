"""bench/syslog.py still runs and reports its agreed keys (tiny sizes; no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

BENCH = Path(__file__).parents[2] / "bench" / "syslog.py"
KEYS = {"syslog_tcp_msgs_per_s", "syslog_udp_msgs_per_s", "rsyslog_msgs_per_s",
        "udp_loss_ratio_at_10k_per_s", "cpu_s_per_10k_msgs", "peak_rss_mb"}


def test_bench_runs_and_reports(mosquitto: str) -> None:
    res = subprocess.run([sys.executable, str(BENCH), "--messages", "3000", "--udp-rate", "500",
                          "--udp-seconds", "1", "--broker", mosquitto],
                         capture_output=True, text=True, timeout=240, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    last = orjson.loads(res.stdout.strip().splitlines()[-1])
    assert set(last) >= KEYS, sorted(KEYS - set(last))
    assert last["messages"] == 3000 and last["syslog_tcp_msgs_per_s"] > 0
