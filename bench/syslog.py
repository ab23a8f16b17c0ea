"""Syslog into the agent's spool, pseudonymised, against rsyslog writing to a file.

The agent is `privtel agent run` in its own process (real config, real
pseudonymiser and leak guard, SQLite spool, sealing and MQTT shipping to the
local Mosquitto), with a `[syslog]` UDP and TCP listener. The mix is the one of
bench/pseudonymise.py (firewall drops, sshd logins, BGP, DHCP leases, web
logs; two to four addresses and MACs per line, login names) as RFC 3164 and
RFC 5424 messages. Figures, all read off the agent's own /metrics and /proc:

- TCP: N messages sent as fast as the agent reads them (octet counting);
  messages/s until all are in the spool; agent CPU s per 10k messages.
- UDP: N datagrams as fast as possible: messages/s into the spool (loss is
  allowed here, and reported), then a fixed offered rate (10k/s by default)
  for --udp-seconds: the loss ratio (the issue asks zero at 10k/s for 60 s).
- Baseline: a private rsyslogd (imtcp -> omfile) fed the same TCP stream:
  messages/s until all are in its file.
- Peak RSS of the agent process (VmHWM).

Run: python bench/syslog.py [--messages 200000] [--udp-seconds 60] [--udp-rate 10000]
The last line is JSON.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# measure the tree this file is in, not whichever checkout the venv has installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pseudonymise import address_pool, log_lines

from privtel.demo.run import free_port, write_configs

USERS = ("alice.martin", "bob", "carol", "root", "svc-backup")


def messages(n: int, seed: int = 14) -> list[bytes]:
    rng = random.Random(seed)
    pool = address_pool(rng, 2000)
    out = []
    for i, line in enumerate(log_lines(rng, pool, n)):
        user = rng.choice(USERS)
        if i % 3 == 0:  # RFC 5424
            _, _, host, rest = line.split(" ", 3)
            head = f"<{rng.choice((38, 86, 134, 189))}>1 2026-11-25T{host}Z"
            out.append(f"{head} {rest.split(' ', 1)[0]} - - - - user={user} {rest}".encode())
        else:
            out.append(f"<{rng.choice((38, 86, 134, 189))}>{line} user={user}".encode())
    return out


def octet_stream(msgs: list[bytes]) -> bytes:
    return b"".join(b"%d %s" % (len(m), m) for m in msgs)


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def submitted(port: int) -> float:
    return scrape(port).get("privtel_agent_records_submitted_total", 0.0)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_until(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} not reached within {timeout:.0f}s")
        time.sleep(0.05)


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def tcp_send(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)


class AgentProc:
    def __init__(self, work: Path, broker: str) -> None:
        self.udp, self.tcp, self.metrics = free_port(socket.SOCK_DGRAM), free_port(), free_port()
        syslog = (f'\n[syslog]\nqueue = 50000\nreceive_buffer = 16777216\n'
                  f'[[syslog.listeners]]\nprotocol = "udp"\naddress = "127.0.0.1"\n'
                  f'port = {self.udp}\n[[syslog.listeners]]\nprotocol = "tcp"\n'
                  f'address = "127.0.0.1"\nport = {self.tcp}\n')
        agent_path, _ = write_configs(
            work, broker_url=broker, protocol="5", devices=[], interval_s=3600, metrics_port=0,
            tenant=f"bench{os.getpid()}", agent_id="bench-agent", extra_toml=syslog)
        text = agent_path.read_text().replace(
            "[agent]\n", f'[agent]\nmetrics_listen = "127.0.0.1:{self.metrics}"\n', 1)
        text = text.replace("batch_max_records = 500", "batch_max_records = 2000")
        agent_path.write_text(text)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "privtel", "agent", "run", "--config", str(agent_path),
             "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: connectable(self.tcp) and connectable(self.metrics), 30,
                   "agent listening")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bench_tcp(agent: AgentProc, msgs: list[bytes]) -> tuple[float, float]:
    data = octet_stream(msgs)
    base, cpu0 = submitted(agent.metrics), cpu_s(agent.proc.pid)
    t0 = time.monotonic()
    tcp_send(agent.tcp, data)
    wait_until(lambda: submitted(agent.metrics) >= base + len(msgs), 600, "TCP spooled")
    dt = time.monotonic() - t0
    return len(msgs) / dt, (cpu_s(agent.proc.pid) - cpu0) / len(msgs) * 10_000


def bench_udp_burst(agent: AgentProc, msgs: list[bytes]) -> tuple[float, int]:
    base = submitted(agent.metrics)
    t0 = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for m in msgs:
            s.sendto(m, ("127.0.0.1", agent.udp))
    got = settled(agent) - base
    return got / (time.monotonic() - t0 - 0.5), int(len(msgs) - got)


def settled(agent: AgentProc) -> float:
    """The spooled count once it stopped moving for 0.5 s (UDP has no end marker)."""
    last, still = -1.0, 0
    while still < 10:
        time.sleep(0.05)
        n = submitted(agent.metrics)
        still = still + 1 if n == last else 0
        last = n
    return last


def bench_udp_rate(agent: AgentProc, msgs: list[bytes], rate: int, seconds: float) -> float:
    base = submitted(agent.metrics)
    sent, t0 = 0, time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        while (elapsed := time.monotonic() - t0) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                s.sendto(msgs[sent % len(msgs)], ("127.0.0.1", agent.udp))
                sent += 1
            time.sleep(0.001)
    got = settled(agent) - base
    return max(0.0, 1 - got / sent) if sent else 0.0


def bench_rsyslog(work: Path, msgs: list[bytes]) -> float:
    port = free_port()
    out = work / "rsyslog.out"
    (work / "rs-work").mkdir()
    conf = work / "rsyslog.conf"
    conf.write_text(f"""
global(workDirectory="{work / 'rs-work'}" maxMessageSize="8k")
module(load="imtcp")
module(load="builtin:omfile")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="file")
ruleset(name="file") {{ action(type="omfile" file="{out}" asyncWriting="on"
                              flushOnTXEnd="on" ioBufferSize="64k") }}
""")
    proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(work / "rs.pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: connectable(port), 30, "rsyslogd listening")
        time.sleep(0.2)
        base = out.stat().st_size if out.exists() else 0

        def lines() -> int:
            if not out.exists():
                return 0
            with open(out, "rb") as f:
                f.seek(base)
                return f.read().count(b"\n")
        t0 = time.monotonic()
        tcp_send(port, octet_stream(msgs))
        wait_until(lambda: lines() >= len(msgs), 600, "rsyslog file written")
        return len(msgs) / (time.monotonic() - t0)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--udp-rate", type=int, default=10_000, help="offered UDP messages/s")
    ap.add_argument("--udp-seconds", type=float, default=60.0)
    ap.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    args = ap.parse_args()
    if shutil.which("rsyslogd") is None:
        raise SystemExit("bench: rsyslogd is not installed (apt-get install rsyslog)")
    msgs = messages(args.messages)
    work = Path(tempfile.mkdtemp(prefix="privtel-bench-syslog-"))
    try:
        agent = AgentProc(work, args.broker)
        try:
            tcp_send(agent.tcp, octet_stream(msgs[:2000]))  # warm the caches
            wait_until(lambda: submitted(agent.metrics) >= 2000, 60, "warm-up spooled")
            tcp_rate, cpu10k = bench_tcp(agent, msgs)
            udp_rate, udp_lost = bench_udp_burst(agent, msgs[: max(1000, len(msgs) // 4)])
            loss = bench_udp_rate(agent, msgs, args.udp_rate, args.udp_seconds)
            rss = peak_rss_mb(agent.proc.pid)
            m = scrape(agent.metrics)
        finally:
            agent.stop()
        rs_rate = bench_rsyslog(work, msgs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kernel = m.get('privtel_agent_syslog_dropped_total{reason="kernel"}', 0.0)
    queue = m.get('privtel_agent_syslog_dropped_total{reason="queue_full"}', 0.0)
    result = {
        "messages": len(msgs),
        "syslog_tcp_msgs_per_s": round(tcp_rate),
        "syslog_udp_msgs_per_s": round(udp_rate),
        "udp_burst_lost": udp_lost,
        "rsyslog_msgs_per_s": round(rs_rate),
        "udp_offered_per_s": args.udp_rate,
        "udp_seconds": args.udp_seconds,
        "udp_loss_ratio_at_10k_per_s": round(loss, 5),
        "cpu_s_per_10k_msgs": round(cpu10k, 3),
        "peak_rss_mb": round(rss, 1),
        "udp_dropped_kernel": kernel,
        "udp_dropped_queue_full": queue,
        "tcp_vs_rsyslog": round(tcp_rate / rs_rate, 3) if rs_rate else None,
    }
    print(f"agent TCP -> spool (pseudonymised): {tcp_rate:>10,.0f} msgs/s "
          f"({cpu10k:.3f} agent CPU s per 10k)")
    print(f"agent UDP burst -> spool:           {udp_rate:>10,.0f} msgs/s "
          f"({udp_lost} of {max(1000, len(msgs) // 4)} lost)")
    print(f"agent UDP at {args.udp_rate}/s for {args.udp_seconds:.0f} s: loss ratio "
          f"{loss:.5f} (kernel drops {kernel:.0f}, queue drops {queue:.0f})")
    print(f"baseline rsyslogd TCP -> file:      {rs_rate:>10,.0f} msgs/s")
    print(f"agent peak RSS {rss:.1f} MiB")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
