"""NOC metrics cost: one scrape of the exposition, and remote write to a real receiver.

Scrape: `NocMetrics` holding 1,000 and 10,000 devices x 48 interfaces (a
health record and 48 interface records per device per poll round), served as a
collector serves it (`NocMetrics.render` through `plumbing.metrics_http`).
After each of three poll rounds: the first render after start (cold: every
device's templates are built), a steady-state render (every counter changed
since the last scrape), and a steady-state scrape over HTTP fetched by curl, all
in CPU seconds of this process (the server; curl is another process). Also what
gzip at level 1 would add to a scrape (the NOC endpoint answers uncompressed).

Remote write: the same kind of poll rounds through `RemoteWriteOutput` into a
real Prometheus (`--web.enable-remote-write-receiver`), timed from the first
delivered batch until the receiver acknowledged every sample; the sender's CPU
(this process) and the receiver's (the Prometheus process) are reported apart,
as the wall-clock rate is bounded by whichever has less CPU on a shared machine.
Baseline in the same run: `promtool tsdb create-blocks-from openmetrics`
ingesting the same samples written as OpenMetrics text (raw TSDB ingestion, no
network, no protobuf).

    python bench/metrics.py [--devices 1000,10000] [--interfaces 48]
                            [--rw-devices 500] [--rw-rounds 4] [--quick]

`--quick` runs tiny sizes (tests/test_benches.py); the JSON keys then hold the
tiny figures. Last line JSON: scrape_cpu_s_<n>_devices (HTTP, steady state),
render_warm_cpu_s_<n>_devices, render_cold_cpu_s_<n>_devices,
gzip1_cpu_s_<n>_devices, bytes_<n>_devices, series_<n>_devices (n as 1k, 10k),
remote_write_samples_per_s, remote_write_cpu_s_per_100k,
remote_write_samples_per_sender_cpu_s, receiver_cpu_s_per_100k,
promtool_samples_per_s, peak_rss_mb.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# measure the tree this file is in, not whichever checkout the venv has installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from prometheus_client import CollectorRegistry

from collector.metrics.noc import NocMetrics
from collector.outputs.base import Committed
from collector.outputs.remote_write import (
    RemoteWriteConfig,
    RemoteWriteOutput,
    samples_of,
)
from pipelines.envelope import Header
from pipelines.record import Kind, Record
from plumbing.metrics_http import serve
from privtel.demo.prometheus import Prometheus
from privtel.demo.run import free_port

TENANT, SITE = "bench", "site1"


def poll_round(devices: int, interfaces: int, ts: float, k: int) -> list[list[Record]]:
    """One poll of every device: a health record and one record per interface."""
    out = []
    for d in range(devices):
        dev = f"tk-{d:06x}"
        recs = [Record(kind=Kind.HEALTH, tenant=TENANT, site=SITE, device=dev,
                       name="device.health", ts=ts,
                       fields={"up": 1, "reason": None, "protocol": "snmp",
                               "poll_duration_s": 0.2, "uptime_s": 1000 + 30 * k})]
        for i in range(interfaces):
            base = (d * interfaces + i) * 1000 + k * 3_750_000
            recs.append(Record(kind=Kind.METRIC, tenant=TENANT, site=SITE, device=dev, name="if",
                               ts=ts, fields={
                                   "if_name": f"ge-0/0/{i}", "in_octets": base,
                                   "out_octets": 2 * base, "in_errors": k, "out_errors": 0,
                                   "in_discards": 0, "out_discards": k,
                                   "oper_status": "up", "admin_status": 1,
                                   "speed_bps": 1_000_000_000}))
        out.append(recs)
    return out


def _http_get(url: str) -> int:
    """Fetch `url` with curl (another process, so this one's CPU is the server's alone)."""
    tool = shutil.which("curl")
    if tool is None:
        raise SystemExit("curl is not installed")
    out = subprocess.run([tool, "-sS", "-o", "/dev/null", "-w", "%{size_download}", url],
                         check=True, capture_output=True, text=True)
    return int(out.stdout)


def scrape(devices: int, interfaces: int) -> dict[str, float]:
    """A collector's /metrics: the (here empty) registry and `NocMetrics.render` through
    the shared endpoint, as `collector.outputs.noc_renderer` wires it."""
    noc = NocMetrics(None, max_devices=devices, max_interfaces=interfaces)
    server, _ = serve(CollectorRegistry(), "127.0.0.1", 0, extra=noc.render_parts)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    now = time.time()
    out: dict[str, float] = {}
    try:
        for k in range(3):
            for recs in poll_round(devices, interfaces, now - 90 + 30 * k, k):
                noc.observe(recs)
            t = time.process_time()
            if k == 2:  # steady state, through HTTP: this process serves, curl reads
                out["bytes"] = float(_http_get(url))
                out["cpu_s"] = time.process_time() - t
                continue
            text = noc.render()
            out["render_cold_cpu_s" if k == 0 else "render_warm_cpu_s"] = (
                time.process_time() - t)
        out["series"] = float(text.count(b"\n") - text.count(b"\n#") - text.startswith(b"#"))
        t = time.process_time()
        gzip.compress(text, compresslevel=1)   # what a gzip-encoded answer would add, at best
        out["gzip1_cpu_s"] = time.process_time() - t
    finally:
        server.shutdown()
        server.server_close()
    return out


def header() -> Header:
    return Header(tenant=TENANT, agent_id="bench", batch_id=os.urandom(16).hex(), seq=1,
                  created=time.time())


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds another process (the receiver) has used so far."""
    st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")


async def remote_write(url: str, rounds: list[list[list[Record]]], batch_devices: int,
                       shards: int) -> dict[str, float]:
    reg = CollectorRegistry()
    total = sum(len(list(samples_of(r))) for rnd in rounds for recs in rnd for r in recs)
    out = RemoteWriteOutput(RemoteWriteConfig(url=url, queue_size=max(total, 10_000),
                                              max_samples_per_send=5000, shards=shards), reg)
    sent = out.metrics.sent.labels(out.name)
    async with out:
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        for rnd in rounds:
            for i in range(0, len(rnd), batch_devices):
                recs = [r for device in rnd[i:i + batch_devices] for r in device]
                await out.deliver(Committed(header(), recs))
                await asyncio.sleep(0)
        while sent._value.get() < total:
            failed = reg.get_sample_value("privtel_remote_write_samples_dropped_total",
                                          {"output": out.name, "reason": "rejected"})
            if failed:
                raise RuntimeError(f"the receiver refused {failed:.0f} samples")
            await asyncio.sleep(0.01)
        wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    return {"samples": float(total), "wall_s": wall, "cpu_s": cpu}


def openmetrics(rounds: list[list[list[Record]]]) -> str:
    """The same samples as OpenMetrics text, series by series in time order."""
    series: dict[str, list[tuple[float, int]]] = {}
    for rnd in rounds:
        for recs in rnd:
            for r in recs:
                for labels, value, ms in samples_of(r):
                    name = dict(labels)["__name__"]
                    lv = ",".join(f'{k}="{v}"' for k, v in labels if k != "__name__")
                    series.setdefault(f"{name}{{{lv}}}", []).append((value, ms))
    lines = [f"{s} {v} {ms / 1000:.3f}" for s, points in series.items() for v, ms in points]
    return "\n".join(lines) + "\n# EOF\n"


def promtool_ingest(text: str, samples: float) -> dict[str, float]:
    tool = shutil.which("promtool")
    if tool is None:
        raise SystemExit("promtool is not installed (apt-get install prometheus)")
    with tempfile.TemporaryDirectory(prefix="privtel-bench-") as tmp:
        src = Path(tmp) / "samples.om"
        src.write_text(text)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([tool, "tsdb", "create-blocks-from", "openmetrics", str(src),
                        str(Path(tmp) / "blocks")], check=True, capture_output=True)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "samples_per_s": samples / wall}


def label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="1000,10000")
    ap.add_argument("--interfaces", type=int, default=48)
    ap.add_argument("--rw-devices", type=int, default=500)
    ap.add_argument("--rw-rounds", type=int, default=4)
    ap.add_argument("--shards", type=int, default=4, help="remote-write requests in flight")
    ap.add_argument("--skip-scrape", action="store_true", help="remote write only")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    args = ap.parse_args()
    sizes = [int(x) for x in args.devices.split(",")]
    names = [label(n) for n in sizes]
    if args.quick:
        sizes, args.interfaces, args.rw_devices, args.rw_rounds = [10, 20], 4, 10, 2
        names = ["1k", "10k"]   # the agreed keys, holding tiny figures
    result: dict[str, float | bool] = {"quick": args.quick, "interfaces": args.interfaces,
                                       "remote_write_shards": args.shards}
    print(f"metrics bench: scrape of NocMetrics, {args.interfaces} interfaces per device")
    for n, name in zip([] if args.skip_scrape else sizes, names, strict=False):
        s = scrape(n, args.interfaces)
        result |= {f"scrape_cpu_s_{name}_devices": round(s["cpu_s"], 3),
                   f"render_warm_cpu_s_{name}_devices": round(s["render_warm_cpu_s"], 3),
                   f"render_cold_cpu_s_{name}_devices": round(s["render_cold_cpu_s"], 3),
                   f"gzip1_cpu_s_{name}_devices": round(s["gzip1_cpu_s"], 3),
                   f"bytes_{name}_devices": s["bytes"], f"series_{name}_devices": s["series"]}
        print(f"  {n:>6} devices: {s['cpu_s']:.3f} CPU s per HTTP scrape (render "
              f"{s['render_warm_cpu_s']:.3f} s, first after start {s['render_cold_cpu_s']:.3f} s),"
              f" {s['bytes'] / 1e6:.1f} MB, {s['series']:,.0f} series; gzip -1 would add "
              f"{s['gzip1_cpu_s']:.3f} s")

    now = time.time()
    rounds = [poll_round(args.rw_devices, args.interfaces, now - 30 * (args.rw_rounds - k), k)
              for k in range(args.rw_rounds)]
    with Prometheus(free_port(), receiver=True) as prom:
        assert prom.proc is not None
        time.sleep(1.0)
        before = _proc_cpu_s(prom.proc.pid)
        rw = asyncio.run(remote_write(prom.write_url, rounds, batch_devices=10,
                                      shards=args.shards))
        receiver_cpu = _proc_cpu_s(prom.proc.pid) - before
    pt = promtool_ingest(openmetrics(rounds), rw["samples"])
    rw_rate = rw["samples"] / rw["wall_s"]
    result |= {"remote_write_samples": rw["samples"],
               "remote_write_samples_per_s": round(rw_rate),
               "remote_write_cpu_s_per_100k": round(rw["cpu_s"] / rw["samples"] * 1e5, 3),
               "remote_write_samples_per_sender_cpu_s": round(rw["samples"] / rw["cpu_s"]),
               "receiver_cpu_s_per_100k": round(receiver_cpu / rw["samples"] * 1e5, 3),
               "promtool_samples_per_s": round(pt["samples_per_s"]),
               "promtool_cpu_s_per_100k": round(pt["cpu_s"] / rw["samples"] * 1e5, 3),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(f"remote write: {rw['samples']:,.0f} samples ({args.rw_devices} devices x "
          f"{args.rw_rounds} polls, {args.shards} shards) to a real Prometheus: "
          f"{rw_rate:,.0f} samples/s, "
          f"{result['remote_write_cpu_s_per_100k']} CPU s per 100k (sender), "
          f"{result['receiver_cpu_s_per_100k']} CPU s per 100k (the Prometheus receiving)")
    print(f"  baseline promtool create-blocks-from openmetrics, same samples: "
          f"{pt['samples_per_s']:,.0f} samples/s, {result['promtool_cpu_s_per_100k']} CPU s "
          "per 100k")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
