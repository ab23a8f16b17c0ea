"""SNMP poll cost: our poller's client CPU per 10,000 varbinds beside net-snmp's snmpbulkwalk.

Sets up a real net-snmp snmpd on 127.0.0.1 serving a large synthetic IF-MIB
(tests/peers/iftable_pass.py), walks ifTable+ifXTable with `snmpbulkwalk`
(client CPU from the child's rusage), with Prometheus' snmp_exporter (Debian's
`prometheus-snmp-exporter`: a generated module with the same walk OIDs and
max-repetitions, the daemon's CPU read from /proc; skipped with a message when
the binary is absent) and with our poller (fast path, and the pysnmp
reference), then a scale run: N simulated devices x ~500 varbinds each,
spread round-robin over --scale-agents snmpd instances (one snmpd and its
Python pass_persist helper answer one request at a time, at some 10-20k
varbinds/s here and far fewer on a loaded box, so with a single one the
cycle's wall time measures the peer more than the client), polled once through
the scheduler. It reports the client's CPU share of one core at a 60 s interval,
whether the cycle's wall time fits inside that interval, the snmpds' own CPU
(they share this box's cores with the client) and the peak RSS.

    python bench/snmp_poll.py [--interfaces 2000] [--devices 1000] [--scale-agents 2]
                              [--max-repetitions 100] [--exporter-scrapes 3] [--repeats 3]
                              [--snmp-exporter prometheus-snmp-exporter]

Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# measure the tree this file is in, not whichever checkout the venv has installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peers.ports import free_port
from peers.procs import stop as stop_process
from peers.snmpd import SnmpPeer, V3User, run_snmpd
from snmp_scale import INTERVAL_S, PROFILES

from agents.pollers import Device
from agents.snmp.options import SnmpOptions
from agents.snmp.poller import SnmpPoller

IF_ROOTS = ("1.3.6.1.2.1.2.2", "1.3.6.1.2.1.31.1.1")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds used so far by the given live processes and all their descendants.

    RUSAGE_CHILDREN only counts children that have exited and been waited for;
    the snmpds and their pass_persist helpers are still running, so their CPU
    is read from /proc instead. Returns 0.0 where /proc is not there.
    """
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        f = raw[raw.rindex(")") + 2:].split()  # comm may hold spaces; fields resume after it
        stats[int(entry.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / CLK_TCK)
    tree, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        kids = [pid for pid, (ppid, _) in stats.items() if ppid == parent and pid not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return sum(stats[pid][1] for pid in tree if pid in stats)


def bulkwalk(peer, reps: int) -> tuple[int, float, float]:
    n, cpu0, t0 = 0, child_cpu(), time.perf_counter()
    for root in IF_ROOTS:
        out = subprocess.run(["snmpbulkwalk", "-M", "/dev/null", "-On", "-Oq", "-v2c", "-c",
                              peer.community, f"-Cr{reps}", "-t", "5", peer.target, root],
                             capture_output=True, check=True, timeout=600)
        n += out.stdout.count(b"\n")
    return n, child_cpu() - cpu0, time.perf_counter() - t0


EXPORTER = "prometheus-snmp-exporter"
# (column, snmp_exporter type) of the walked tables, as iftable_pass.py serves them;
# ifSpecific (an OID) is walked but, like the generator does, not exported
_IF_TYPES = {2: "DisplayString", 6: "PhysAddress48", 10: "counter", 11: "counter",
             12: "counter", 13: "counter", 14: "counter", 15: "counter", 16: "counter",
             17: "counter", 18: "counter", 19: "counter", 20: "counter"}
_IFX_TYPES = {1: "DisplayString", 18: "DisplayString", **{c: "counter" for c in range(2, 14)}}


def exporter_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                         check=False)
    m = re.search(r"version (\d+)\.(\d+)", out.stdout + out.stderr)
    if m is None:
        raise RuntimeError(f"cannot read the version of {binary}")
    return int(m.group(1)), int(m.group(2))


def exporter_config(version: tuple[int, ...], community: str, reps: int) -> tuple[str, str]:
    """(snmp.yml text, extra scrape query) for the walk our bench does. Written as
    JSON, which YAML parsers read as it is.

    0.23 moved credentials out of the modules into a top-level `auths` section
    picked by an `auth=` parameter; older releases (Debian 12 ships 0.21) keep
    `auth` and `version` inside each module and have no `modules:` level.
    """
    metrics = [{"name": f"{label}_col{col}", "oid": f"{root}.1.{col}",
                "type": types.get(col, "gauge"),
                "indexes": [{"labelname": "ifIndex", "type": "gauge"}]}
               for root, types, label, cols in ((IF_ROOTS[0], _IF_TYPES, "if", 21),
                                                (IF_ROOTS[1], _IFX_TYPES, "ifx", 19))
               for col in range(1, cols + 1)]
    module: dict[str, object] = {"walk": list(IF_ROOTS), "max_repetitions": reps,
                                 "retries": 1, "timeout": "10s", "metrics": metrics}
    if version >= (0, 23):
        doc = {"auths": {"bench": {"community": community, "version": 2}},
               "modules": {"bench": module}}
        return json.dumps(doc, indent=1), "&auth=bench"
    module.update(version=2, auth={"community": community})
    return json.dumps({"bench": module}, indent=1), ""


def proc_cpu(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    f = raw[raw.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def snmp_exporter(peer, reps: int, scrapes: int,
                  exporter: str = EXPORTER) -> tuple[int, float, float] | str:
    """(varbinds, daemon cpu s, wall s) over `scrapes` scrapes after one warm-up,
    or why it was not measured."""
    binary = shutil.which(exporter)
    if binary is None:
        return f"{exporter} is not installed (apt-get install {EXPORTER})"
    work = Path(tempfile.mkdtemp(prefix="privtel-snmp-exporter-"))
    try:
        text, auth = exporter_config(exporter_version(binary), peer.community, reps)
        cfg = work / "snmp.yml"
        cfg.write_text(text)
        check = subprocess.run([binary, f"--config.file={cfg}", "--dry-run"],
                               capture_output=True, text=True, timeout=30, check=False)
        if check.returncode != 0:
            return f"{EXPORTER} refused the generated snmp.yml: {check.stderr[-300:]}"
        port = free_port()
        log = (work / "exporter.log").open("wb")
        proc = subprocess.Popen([binary, f"--config.file={cfg}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            url = (f"http://127.0.0.1:{port}/snmp?module=bench{auth}"
                   f"&target={peer.host}:{peer.port}")
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                    break
                except OSError:
                    if proc.poll() is not None:
                        return f"{EXPORTER} exited with {proc.returncode}"
                    time.sleep(0.1)
            n, body = 0, b""
            cpu0, t0 = 0.0, 0.0
            for i in range(scrapes + 1):
                if i == 1:  # the first scrape warms up; count the rest
                    cpu0, t0 = proc_cpu(proc.pid), time.perf_counter()
                body = urllib.request.urlopen(url, timeout=600).read()
                m = re.search(rb"^snmp_scrape_pdus_returned (\d+)", body, re.M)
                if m is None or int(m.group(1)) == 0:
                    return f"{EXPORTER} scrape returned no varbinds: {body[-300:]!r}"
                if i:
                    n += int(m.group(1))
            return n, proc_cpu(proc.pid) - cpu0, time.perf_counter() - t0
        finally:
            stop_process(proc)
            log.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


V2C_TARGET = 0.05  # client CPU s per 10k varbinds (issue 16)
V3_RATIO_TARGET = 1.2  # v3 authPriv over our v2c


def _spread(xs: list[float]) -> str:
    return f"(median of {len(xs)}, {min(xs):.4f}-{max(xs):.4f})" if len(xs) > 1 else ""


V3_USER = V3User("bench", "SHA-256", "bench-auth-pass", "AES", "bench-priv-pass")


async def our_walk(peer, engine: str, reps: int, v3: bool = False) -> tuple[int, float, float]:
    poller = SnmpPoller()
    if v3:
        opts = SnmpOptions(version="3", community="", user=V3_USER.name, auth_protocol="sha256",
                           auth_key=V3_USER.auth_key, priv_protocol="aes",
                           priv_key=V3_USER.priv_key, engine=engine, max_repetitions=reps,
                           timeout_s=5, retries=1, profiles=PROFILES)
    else:
        opts = SnmpOptions(engine=engine, max_repetitions=reps, timeout_s=5, retries=1,
                           profiles=PROFILES)
    d = Device("bench", peer.host, peer.port, "snmp", 60, "bench", "lab", opts)
    await poller.poll(d)  # warm-up: socket, caches
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    recs = await poller.poll(d)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    await poller.close()
    health = recs[-1].fields
    if health["up"] != 1 or health["reason"] is not None:
        raise SystemExit(f"bench poll failed: {health}")
    n_if = sum(1 for r in recs if r.name == "if")
    # varbinds that came back: 22 ifTable + 19 ifXTable columns per row, plus the GET of 4
    return n_if * 41 + 4, cpu, wall


def scale(peers: list[SnmpPeer], n_devices: int, reps: int) -> dict[str, float]:
    """One cycle over `n_devices` in a process of its own (bench/snmp_scale.py), with
    the snmpds' CPU over the same time."""
    agent_pids = [p.proc.pid for p in peers if p.proc is not None]
    agents0 = tree_cpu(agent_pids)
    cmd = [sys.executable, str(Path(__file__).with_name("snmp_scale.py")),
           "--devices", str(n_devices), "--max-repetitions", str(reps)]
    for p in peers:
        cmd += ["--peer", f"{p.host}:{p.port}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"bench: the scale run failed: {done.stderr.strip()[-2000:]}")
    s: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    s["agents_cpu_s"] = (tree_cpu(agent_pids) - agents0) / 2  # the child ran two cycles
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interfaces", type=int, default=2000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--scale-interfaces", type=int, default=12, help="~41 varbinds each")
    ap.add_argument("--scale-agents", type=int, default=2,
                    help="snmpd instances the scale run's devices are spread over")
    # net-snmp's snmpd answers at most 100 repetitions (maxGetbulkRepeats); all three
    # clients (snmpbulkwalk -Cr, snmp_exporter's max_repetitions, ours) ask for the same
    ap.add_argument("--max-repetitions", type=int, default=100)
    ap.add_argument("--skip-pysnmp", action="store_true")
    ap.add_argument("--snmp-exporter", default=EXPORTER,
                    help="the snmp_exporter binary (name on PATH or a path)")
    ap.add_argument("--exporter-scrapes", type=int, default=3,
                    help="snmp_exporter scrapes measured (after one warm-up)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternated snmpbulkwalk / v2c / v3 walks; medians are reported")
    a = ap.parse_args()
    if a.scale_agents < 1:
        ap.error("--scale-agents must be at least 1")
    reps = a.max_repetitions
    load = os.getloadavg()[0]  # before any of our own processes start: the box's other load
    out: dict[str, object] = {}
    with run_snmpd(interfaces=a.interfaces, users=[V3_USER]) as peer:
        # snmpbulkwalk, our v2c and our v3 walks in turn, `--repeats` times: on a shared
        # box one walk's CPU figure moves by a third, the median of alternated runs less
        runs: dict[str, list[tuple[int, float, float]]] = {"c": [], "v2c": [], "v3": []}
        for _ in range(max(1, a.repeats)):
            runs["c"].append(bulkwalk(peer, reps))
            runs["v2c"].append(asyncio.run(our_walk(peer, "fast", reps)))
            runs["v3"].append(asyncio.run(our_walk(peer, "fast", reps, v3=True)))
        per10k = {k: [cpu / n * 1e4 for n, cpu, _ in v] for k, v in runs.items()}
        med = {k: statistics.median(v) for k, v in per10k.items()}
        n_c = runs["c"][0][0]
        wall_c = statistics.median(w for _, _, w in runs["c"])
        print(f"snmpbulkwalk: {n_c} varbinds, wall {wall_c:.2f}s, "
              f"{med['c']:.4f} cpu-s/10k {_spread(per10k['c'])}")
        ex = snmp_exporter(peer, reps, max(1, a.exporter_scrapes), a.snmp_exporter)
        if isinstance(ex, str):
            print(f"snmp_exporter: not measured: {ex}")
            out.update(snmp_exporter_client_cpu_s_per_10k=None, snmp_exporter_varbinds_per_s=None)
        else:
            n_e, cpu_e, wall_e = ex
            print(f"snmp_exporter: {n_e} varbinds over {max(1, a.exporter_scrapes)} scrapes, "
                  f"daemon cpu {cpu_e:.3f}s, {cpu_e / n_e * 1e4:.4f} cpu-s/10k, "
                  f"{n_e / wall_e:.0f} varbinds/s")
            out.update(snmp_exporter_client_cpu_s_per_10k=round(cpu_e / n_e * 1e4, 4),
                       snmp_exporter_varbinds_per_s=round(n_e / wall_e))
        n = runs["v2c"][0][0]
        vps = statistics.median(nv / w for nv, _, w in runs["v2c"])
        print(f"privtel fast: {n} varbinds, {med['v2c']:.4f} cpu-s/10k {_spread(per10k['v2c'])}, "
              f"{vps:.0f} varbinds/s; {med['v2c'] / med['c']:.2f}x snmpbulkwalk "
              f"(target <= {V2C_TARGET} cpu-s/10k: "
              f"{'met' if med['v2c'] <= V2C_TARGET else 'NOT met'})")
        out.update(varbinds=n, client_cpu_s_per_10k=round(med["v2c"], 4),
                   client_cpu_s_per_10k_runs=[round(x, 4) for x in per10k["v2c"]],
                   varbinds_per_s=round(vps), snmpbulkwalk_varbinds=n_c,
                   snmpbulkwalk_client_cpu_s_per_10k=round(med["c"], 4),
                   snmpbulkwalk_client_cpu_s_per_10k_runs=[round(x, 4) for x in per10k["c"]],
                   repeats=max(1, a.repeats))
        ratio3 = med["v3"] / med["v2c"]
        met3 = "met" if ratio3 <= V3_RATIO_TARGET else "NOT met"
        print(f"privtel fast v3 authPriv (SHA-256/AES): {runs['v3'][0][0]} varbinds, "
              f"{med['v3']:.4f} cpu-s/10k {_spread(per10k['v3'])}, {ratio3:.2f}x our v2c "
              f"(target <= {V3_RATIO_TARGET}x: {met3})")
        out.update(v3_client_cpu_s_per_10k=round(med["v3"], 4),
                   v3_client_cpu_s_per_10k_runs=[round(x, 4) for x in per10k["v3"]],
                   v3_to_v2c=round(ratio3, 3))
        if not a.skip_pysnmp:
            n_p, cpu_p, _ = asyncio.run(our_walk(peer, "pysnmp", reps))
            print(f"privtel via pysnmp: {n_p} varbinds, client cpu {cpu_p:.3f}s, "
                  f"{cpu_p / n_p * 1e4:.4f} cpu-s/10k")
            out["pysnmp_client_cpu_s_per_10k"] = round(cpu_p / n_p * 1e4, 4)
    with contextlib.ExitStack() as stack:
        peers = [stack.enter_context(run_snmpd(interfaces=a.scale_interfaces,
                                               sys_name=f"privtel-scale-{k}"))
                 for k in range(a.scale_agents)]
        s = scale(peers, a.devices, reps)
    cores = s["cpu_s"] / INTERVAL_S
    ratio = s["wall_s"] / INTERVAL_S
    within = s["devices_up"] == a.devices and s["wall_s"] <= INTERVAL_S
    print(f"scale: {a.devices} devices x ~{a.scale_interfaces * 41 + 4} varbinds over "
          f"{a.scale_agents} snmpd, {s['devices_up']} up, {s['varbinds']} varbinds, "
          f"peak RSS {s['peak_rss_mb']:.0f} MB in a process of its own ({s['rss_at_start_mb']:.0f} "
          f"MB of it the agent's imports)")
    print(f"  client (the scale process only) cpu {s['cpu_s']:.2f}s per cycle -> {cores:.3f} cores "
          f"at a {INTERVAL_S:.0f} s interval")
    print(f"  cycle wall {s['wall_s']:.1f}s vs {INTERVAL_S:.0f} s interval ({ratio:.2f}x) -> "
          f"{'within' if within else 'NOT within'} the interval")
    print(f"  snmpds + helpers cpu {s['agents_cpu_s']:.2f}s over the cycle "
          f"({s['agents_cpu_s'] / max(s['wall_s'], 1e-9):.2f} cores while it ran), on the same "
          f"{os.cpu_count()} cores as the client; load average (1 min) before this bench "
          f"{load:.2f}")
    out.update(scale_devices=a.devices, scale_devices_up=s["devices_up"],
               scale_varbinds=s["varbinds"], scale_cpu_s_per_cycle=round(s["cpu_s"], 3),
               scale_cpu_s_per_10k=round(s["cpu_s"] / max(s["varbinds"], 1) * 1e4, 4),
               scale_cpu_cores=round(cores, 4), scale_cycle_wall_s=round(s["wall_s"], 2),
               scale_interval_s=INTERVAL_S, scale_wall_to_interval=round(ratio, 3),
               scale_within_interval=within, scale_agents=a.scale_agents,
               scale_snmpd_cpu_s_per_cycle=round(s["agents_cpu_s"], 2),
               loadavg_1m_at_start=round(load, 2),
               scale_peak_rss_mb=round(s["peak_rss_mb"], 1),
               scale_rss_at_start_mb=round(s["rss_at_start_mb"], 1), max_repetitions=reps)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
