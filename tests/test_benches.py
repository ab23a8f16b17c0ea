"""Every benchmark still runs and ends with the JSON line its issue asks for.

Tiny sizes: this checks that the scripts work and report the agreed keys, never
how fast anything is (tests assert no timings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

BENCH = Path(__file__).parents[1] / "bench"
CASES = {
    "pseudonymise.py": (["--devices", "5", "--lines", "500", "--repeat", "1"],
                        {"lines_per_s_warm", "records_per_s_warm", "orjson_records_per_s"}),
    "transport.py": (["--batches", "5", "--records", "20"],
                     {"sealed_batches_per_s", "e2e_ack_batches_per_s", "sealed_mb_per_s",
                      "raw_mb_per_s"}),
    "ingest.py": (["--records", "2000", "--batch", "200", "--scale", "1,2"],
                  {"sqlite_records_per_s", "sqlite_raw_insert_per_s", "postgres_records_per_s",
                   "postgres_raw_insert_per_s", "decode_validate_us", "copy_encode_us",
                   "postgres_scale"}),
    "snmp_poll.py": (["--interfaces", "20", "--devices", "3", "--scale-interfaces", "2",
                      "--skip-pysnmp"],
                     {"client_cpu_s_per_10k", "varbinds_per_s",
                      "snmpbulkwalk_client_cpu_s_per_10k", "scale_cpu_cores",
                      "scale_peak_rss_mb"}),
    "api_search.py": ([], {"page_100_ms", "baseline_sql_page_100_ms", "indicator_ms"}),
    "metrics.py": (["--quick"], {"scrape_cpu_s_10k_devices", "series_10k_devices",
                                 "remote_write_samples_per_s", "promtool_samples_per_s"}),
    "ssh_poll.py": (["--devices", "3", "--concurrency", "1,3"],
                    {"devices_per_s", "cpu_s_per_device", "peak_rss_mb", "baseline_devices_per_s",
                     "speedup", "devices", "devices_up"}),
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_bench_runs_and_reports(script: str, mosquitto: str, pg_dsn: str) -> None:
    args, keys = CASES[script]
    env = dict(os.environ, BENCH_RECORDS="2000")
    res = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                         text=True, timeout=240, env=env, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    last = orjson.loads(res.stdout.strip().splitlines()[-1])
    assert keys <= set(last), sorted(keys - set(last))
    if "devices_up" in keys:  # a poll bench: every device answered with a health record, up=1
        assert last["devices_up"] == last["devices"] > 0, last
