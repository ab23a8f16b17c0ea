"""NOC metrics cost: one scrape of the exposition, and remote write to a real receiver.

Scrape: `NocMetrics` holding 1,000 and 10,000 devices x 48 interfaces (a
health record and 48 interface records per device per poll round); after each
poll round one scrape (`generate_latest`, what /metrics serves) is timed in
CPU seconds of this process, with its size in bytes and series. Baseline in the
same run: the same samples formatted as exposition lines by one f-string each
(the floor of any Python exposition).

Remote write: the same kind of poll rounds through `RemoteWriteOutput` into a
real Prometheus (`--web.enable-remote-write-receiver`), timed from the first
delivered batch until the receiver acknowledged every sample. Baseline in the
same run: `promtool tsdb create-blocks-from openmetrics` ingesting the same
samples written as OpenMetrics text (raw TSDB ingestion, no network, no
protobuf).

    python bench/metrics.py [--devices 1000,10000] [--interfaces 48]
                            [--rw-devices 500] [--rw-rounds 4] [--quick]

`--quick` runs tiny sizes (tests/test_benches.py); the JSON keys then hold the
tiny figures. Last line JSON: scrape_cpu_s_<n>_devices, bytes_<n>_devices,
series_<n>_devices (n as 1k, 10k), baseline_format_cpu_s_<n>_devices,
remote_write_samples_per_s, remote_write_cpu_s_per_100k, promtool_samples_per_s,
peak_rss_mb.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from collector.metrics.noc import NocMetrics
from collector.outputs.base import Committed
from collector.outputs.remote_write import (
    RemoteWriteConfig,
    RemoteWriteOutput,
    samples_of,
)
from pipelines.envelope import Header
from pipelines.record import Kind, Record
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


def scrape(devices: int, interfaces: int) -> dict[str, float]:
    reg = CollectorRegistry()
    noc = NocMetrics(reg, max_devices=devices, max_interfaces=interfaces)
    now = time.time()
    cpu, text = [], b""
    for k in range(2):
        for recs in poll_round(devices, interfaces, now - 60 + 30 * k, k):
            noc.observe(recs)
        t = time.process_time()
        text = generate_latest(reg)
        cpu.append(time.process_time() - t)
    size, series = len(text), text.count(b"\n") - text.count(b"\n#") - text.startswith(b"#")
    del text
    samples = [(s.name, s.labels, s.value) for m in noc.collect() for s in m.samples]
    t = time.process_time()
    floor = "".join([
        f"{name}{{{','.join(f'{k}={v!r}' for k, v in labels.items())}}} {value}\n"
        for name, labels, value in samples])
    baseline = time.process_time() - t
    assert floor.count("\n") == series, (floor.count("\n"), series)
    return {"cpu_s": sum(cpu) / len(cpu), "bytes": float(size), "series": float(series),
            "baseline_cpu_s": baseline}


def header() -> Header:
    return Header(tenant=TENANT, agent_id="bench", batch_id=os.urandom(16).hex(), seq=1,
                  created=time.time())


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
                   f"bytes_{name}_devices": s["bytes"], f"series_{name}_devices": s["series"],
                   f"baseline_format_cpu_s_{name}_devices": round(s["baseline_cpu_s"], 3)}
        print(f"  {n:>6} devices: {s['cpu_s']:.3f} CPU s per scrape, {s['bytes'] / 1e6:.1f} MB, "
              f"{s['series']:,.0f} series; baseline f-string lines {s['baseline_cpu_s']:.3f} s")

    now = time.time()
    rounds = [poll_round(args.rw_devices, args.interfaces, now - 30 * (args.rw_rounds - k), k)
              for k in range(args.rw_rounds)]
    with Prometheus(free_port(), receiver=True) as prom:
        rw = asyncio.run(remote_write(prom.write_url, rounds, batch_devices=10,
                                      shards=args.shards))
    pt = promtool_ingest(openmetrics(rounds), rw["samples"])
    rw_rate = rw["samples"] / rw["wall_s"]
    result |= {"remote_write_samples": rw["samples"],
               "remote_write_samples_per_s": round(rw_rate),
               "remote_write_cpu_s_per_100k": round(rw["cpu_s"] / rw["samples"] * 1e5, 3),
               "promtool_samples_per_s": round(pt["samples_per_s"]),
               "promtool_cpu_s_per_100k": round(pt["cpu_s"] / rw["samples"] * 1e5, 3),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(f"remote write: {rw['samples']:,.0f} samples ({args.rw_devices} devices x "
          f"{args.rw_rounds} polls, {args.shards} shards) to a real Prometheus: "
          f"{rw_rate:,.0f} samples/s, "
          f"{result['remote_write_cpu_s_per_100k']} CPU s per 100k (sender)")
    print(f"  baseline promtool create-blocks-from openmetrics, same samples: "
          f"{pt['samples_per_s']:,.0f} samples/s, {result['promtool_cpu_s_per_100k']} CPU s "
          "per 100k")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
