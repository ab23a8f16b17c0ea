"""SSH poll cost: SshPoller on N simulated Cisco IOS devices beside a plain netmiko script.

The devices are privtel's asyncssh simulator (privtel/sim/ssh.py, recorded IOS
output) on 127.0.0.1, all served from --sim-procs separate processes, so the
simulator's CPU is never counted as the client's. Every measurement runs in a
fresh process of its own (the client), which first polls one device to warm up
(imports, TextFSM templates), then polls every device once; its CPU is
`time.process_time()` (all of its threads: netmiko runs in a pool) and its peak
RSS is `ru_maxrss`, so neither is inflated by the other measurements.

  privtel: SshPoller(max_concurrent=C) for each C in --concurrency, strict
           known_hosts, credentials from an encrypted CredentialStore, the
           cisco_ios profile parsed into records.
  baseline: what a naive script does: netmiko ConnectHandler + send_command of
           the same five commands, one device after another, raw text only
           (no parsing, no records, no host key check), no privtel code loaded.

    python bench/ssh_poll.py [--devices 50] [--concurrency 1,8,32] [--sim-procs 1]

Progress goes to stderr; figures, then one JSON line, to stdout. In the JSON,
`devices_per_s`, `records_per_s` and `cpu_s_per_device` are the fastest setting's,
`peak_rss_mb` the largest of all settings, `devices_up` the fewest devices any
setting saw answer with up=1, and `speedup` the fastest setting over the baseline
(`speedup_c1`: max_concurrent=1 over it, the per-session overhead alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import resource
import secrets
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# measure the tree this file is in, not whichever checkout the venv has installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VENDOR = "cisco_ios"
USER = "bench"
CRED_NAME = "bench"


def progress(msg: str) -> None:
    print(f"[ssh_poll] {msg}", file=sys.stderr, flush=True)


def sim_main(conn: Connection, hostnames: list[str], password: str) -> None:
    """A simulator process: serves one device per hostname until told to stop and
    answers "cpu" with its own CPU seconds, so the report can show its share."""
    from privtel.sim import SshDeviceSim

    async def serve() -> None:
        sims = [SshDeviceSim(VENDOR, 0, {USER: password}, hostname=h) for h in hostnames]
        await asyncio.gather(*(s.start() for s in sims))
        conn.send([(s.port, s.public_host_key) for s in sims])
        loop = asyncio.get_running_loop()
        try:
            while (msg := await loop.run_in_executor(None, conn.recv)) != "stop":
                if msg == "cpu":
                    conn.send(time.process_time())
        finally:
            await asyncio.gather(*(s.stop() for s in sims))

    asyncio.run(serve())


class SimFleet:
    """N devices spread over a few simulator processes."""

    def __init__(self, n: int, procs: int, password: str) -> None:
        ctx = mp.get_context("spawn")
        self._procs: list[tuple[Any, Connection]] = []
        self.ports: list[int] = []
        self.host_keys: list[str] = []
        procs = max(1, min(procs, n))
        names = [f"bench-ios-{i:04d}" for i in range(n)]
        for p in range(procs):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=sim_main, args=(theirs, names[p::procs], password),
                               name=f"ssh-sim-{p}", daemon=True)
            proc.start()
            self._procs.append((proc, ours))
        served: list[list[tuple[int, str]]] = []
        for proc, conn in self._procs:
            if not conn.poll(120):
                raise SystemExit(f"simulator process {proc.name} did not start")
            served.append(conn.recv())
        for i in range(n):  # back into device order: device i is served by process i % procs
            port, key = served[i % procs][i // procs]
            self.ports.append(port)
            self.host_keys.append(key)

    def cpu_s(self) -> float:
        total = 0.0
        for _, conn in self._procs:
            conn.send("cpu")
            total += conn.recv()
        return total

    def close(self) -> None:
        for proc, conn in self._procs:
            with contextlib.suppress(OSError):  # it may already be gone
                conn.send("stop")
            proc.join(timeout=20)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


def _finish(wall: float, cpu: float, extra: dict[str, Any]) -> dict[str, Any]:
    return {"wall_s": wall, "cpu_s": cpu,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}


def privtel_worker(conn: Connection, ports: list[int], known_hosts: str, creds_file: str,
                   creds_key: bytes, concurrency: int) -> None:
    """One client process: SshPoller at one concurrency over every device."""
    from agents.credentials import CredentialStore
    from agents.pollers import Device
    from agents.ssh.poller import SshOptions, SshPoller

    store = CredentialStore(creds_file, creds_key)
    opts = SshOptions(device_type=VENDOR, credential=CRED_NAME, known_hosts=Path(known_hosts),
                      connect_timeout_s=30, command_timeout_s=30, poll_timeout_s=300)
    devices = [Device(name=f"dev{i:04d}", address="127.0.0.1", port=p, protocol="ssh",
                      interval_s=300, tenant="bench", site="lab", options=opts)
               for i, p in enumerate(ports)]

    async def run() -> dict[str, Any]:
        warm = SshPoller(credentials=store, max_concurrent=1)
        await warm.poll(devices[0])
        await warm.close()
        poller = SshPoller(credentials=store, max_concurrent=concurrency)
        gc.collect()
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(poller.poll(d) for d in devices))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        await poller.close()
        up = 0
        reasons: dict[str, int] = {}
        for recs in results:
            health = [r for r in recs if r.name == "device.health"]
            if len(health) == 1 and health[0].fields["up"] == 1:
                up += 1
            else:
                reason = str(health[0].fields["reason"]) if health else "no_health_record"
                reasons[reason] = reasons.get(reason, 0) + 1
        return _finish(wall, cpu, {"records": sum(len(r) for r in results), "devices_up": up,
                                   "failures": reasons})

    conn.send(asyncio.run(run()))


def baseline_worker(conn: Connection, ports: list[int], password: str,
                    commands: list[str]) -> None:
    """One client process: a plain netmiko script, sequential; nothing of ours imported."""
    from netmiko import ConnectHandler

    def poll(port: int) -> int:
        with ConnectHandler(device_type=VENDOR, host="127.0.0.1", port=port, username=USER,
                            password=password) as c:
            return sum(len(c.send_command(cmd)) for cmd in commands)

    poll(ports[0])
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    chars = sum(poll(p) for p in ports)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    conn.send(_finish(wall, cpu, {"chars": chars}))


def in_child(target: Any, *args: Any, timeout: float = 900) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=target, args=(theirs, *args), name="ssh-bench-client")
    proc.start()
    try:
        if not ours.poll(timeout):
            raise SystemExit(f"{target.__name__} gave no result within {timeout:.0f}s")
        result: dict[str, Any] = ours.recv()
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
    if proc.exitcode != 0:
        raise SystemExit(f"{target.__name__} exited with {proc.exitcode}")
    return result


def concurrency_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("every concurrency must be at least 1")
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--concurrency", type=concurrency_list, default=[1, 8, 32],
                    help="comma-separated SshPoller max_concurrent settings (default 1,8,32)")
    ap.add_argument("--sim-procs", type=int, default=1,
                    help="simulator processes (default 1; more only helps with spare cores)")
    ap.add_argument("--skip-baseline", action="store_true")
    a = ap.parse_args()
    if a.devices < 1:
        ap.error("--devices must be at least 1")

    from agents.credentials import Credential, CredentialStore
    from agents.ssh.profiles import builtin_profiles

    commands = [c.render({}) for c in builtin_profiles()[VENDOR].commands]
    password = secrets.token_urlsafe(18)
    out: dict[str, Any] = {"devices": a.devices, "commands_per_device": len(commands),
                           "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="privtel-ssh-bench-") as tmp:
        creds_key = os.urandom(32)
        store = CredentialStore(Path(tmp) / "credentials.enc", creds_key)
        store.set(CRED_NAME, Credential(username=USER, password=password))
        progress(f"starting {a.devices} simulated {VENDOR} devices in {a.sim_procs} process(es)")
        fleet = SimFleet(a.devices, a.sim_procs, password)
        try:
            known_hosts = Path(tmp) / "known_hosts"
            known_hosts.write_text("".join(f"[127.0.0.1]:{p} {k}\n"
                                           for p, k in zip(fleet.ports, fleet.host_keys,
                                                           strict=True)))
            known_hosts.chmod(0o600)
            settings: dict[int, dict[str, Any]] = {}
            for c in a.concurrency:
                progress(f"privtel SshPoller max_concurrent={c}: polling {a.devices} devices")
                sim0 = fleet.cpu_s()
                r = in_child(privtel_worker, fleet.ports, str(known_hosts),
                             str(store.path), creds_key, c)
                r["sim_cpu_s"] = fleet.cpu_s() - sim0  # includes the one warm-up device
                settings[c] = r
                n = a.devices
                print(f"privtel c={c}: {r['devices_up']}/{n} up, {r['records']} records, "
                      f"wall {r['wall_s']:.2f}s, {n / r['wall_s']:.2f} devices/s, "
                      f"{r['records'] / r['wall_s']:.0f} records/s, client cpu "
                      f"{r['cpu_s'] / n:.4f} s/device, peak RSS {r['peak_rss_mb']:.0f} MB "
                      f"(simulator cpu {r['sim_cpu_s'] / (n + 1):.4f} s/device)"
                      + (f", failures {r['failures']}" if r["failures"] else ""), flush=True)
                out.update({f"c{c}_devices_per_s": round(n / r["wall_s"], 3),
                            f"c{c}_records_per_s": round(r["records"] / r["wall_s"], 1),
                            f"c{c}_cpu_s_per_device": round(r["cpu_s"] / n, 5),
                            f"c{c}_peak_rss_mb": round(r["peak_rss_mb"], 1),
                            f"c{c}_devices_up": r["devices_up"]})
            best_c = max(settings, key=lambda c: a.devices / settings[c]["wall_s"])
            best = settings[best_c]
            out.update(best_concurrency=best_c,
                       devices_per_s=round(a.devices / best["wall_s"], 3),
                       records_per_s=round(best["records"] / best["wall_s"], 1),
                       records_per_device=round(best["records"] / a.devices, 1),
                       cpu_s_per_device=round(best["cpu_s"] / a.devices, 5),
                       peak_rss_mb=round(max(s["peak_rss_mb"] for s in settings.values()), 1),
                       devices_up=min(s["devices_up"] for s in settings.values()))
            if not a.skip_baseline:
                progress(f"baseline: plain netmiko, sequential, {a.devices} devices")
                b = in_child(baseline_worker, fleet.ports, password, commands)
                bdps = a.devices / b["wall_s"]
                print(f"baseline netmiko sequential: wall {b['wall_s']:.2f}s, {bdps:.2f} "
                      f"devices/s, client cpu {b['cpu_s'] / a.devices:.4f} s/device, "
                      f"peak RSS {b['peak_rss_mb']:.0f} MB (raw text, {b['chars']} chars)",
                      flush=True)
                out.update(baseline_devices_per_s=round(bdps, 3),
                           baseline_cpu_s_per_device=round(b["cpu_s"] / a.devices, 5),
                           baseline_peak_rss_mb=round(b["peak_rss_mb"], 1),
                           speedup=round(out["devices_per_s"] / bdps, 2))
                if 1 in settings:
                    out["speedup_c1"] = round(out["c1_devices_per_s"] / bdps, 2)
                print(f"speed-up over the baseline: {out['speedup']:.2f}x at "
                      f"max_concurrent={best_c}"
                      + (f", {out['speedup_c1']:.2f}x at max_concurrent=1"
                         if "speedup_c1" in out else ""), flush=True)
        finally:
            fleet.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
