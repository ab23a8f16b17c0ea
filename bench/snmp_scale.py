"""The 1,000-device scale cycle of bench/snmp_poll.py, in a process of its own.

Run by snmp_poll.py against the snmpds it started, so the CPU and peak RSS it
reports are those of an agent's polling alone: none of the bench's own imports
(pytest's peers, pysnmp walks, the comparison clients) are in this process.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry

from agents.pollers import Device
from agents.scheduler import Scheduler
from agents.snmp.options import SnmpOptions
from agents.snmp.poller import SnmpPoller
from pipelines.record import Record

PROFILES = ("system", "if-mib")  # the walk being compared; other profiles add other tables
INTERVAL_S = 60.0


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _sink(records: list[Record]) -> None:
    return None


async def cycle(peers: list[tuple[str, int]], n_devices: int, reps: int) -> dict[str, float]:
    rss0 = rss_now_mb()
    devices = [Device(f"dev{i:05d}", *peers[i % len(peers)], "snmp", INTERVAL_S, "bench", "lab",
                      SnmpOptions(max_repetitions=reps, timeout_s=10, retries=2,
                                  profiles=PROFILES))
               for i in range(n_devices)]
    poller = SnmpPoller()
    sched = Scheduler(devices, _sink, registry=CollectorRegistry(), max_concurrent=64,
                      pollers={"snmp": poller})
    await sched.poll_once()  # the first cycle builds per-device state
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    recs = await sched.poll_once()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    await sched.close()
    await poller.close()
    ups = sum(1 for r in recs if r.name == "device.health" and r.fields["up"] == 1)
    n_if = sum(1 for r in recs if r.name == "if")
    return {"devices_up": ups, "varbinds": n_if * 41 + 4 * ups, "cpu_s": cpu, "wall_s": wall,
            "rss_at_start_mb": rss0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", action="append", required=True, help="host:port of an snmpd")
    ap.add_argument("--devices", type=int, required=True)
    ap.add_argument("--max-repetitions", type=int, required=True)
    a = ap.parse_args()
    peers = [(h, int(p)) for h, _, p in (x.rpartition(":") for x in a.peer)]
    print(json.dumps(asyncio.run(cycle(peers, a.devices, a.max_repetitions))))


if __name__ == "__main__":
    main()
