"""`privtel demo` as a newcomer runs it: a subprocess that must end with records stored,
and a store that `privtel scan-leaks` finds free of every address the simulated devices hold."""

from __future__ import annotations

import ipaddress
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from pipelines.pseudonym.scan import find
from privtel.demo.snmpsim import RECORDINGS, recordings_dir

SSH_RECORDINGS = Path(__file__).parents[2] / "privtel" / "sim" / "recordings"
_V4_INDEX = re.compile(r"^1\.3\.6\.1\.2\.1\.4\.(?:20\.1\.1|34\.1\.3\.1\.4)\.(\d+\.\d+\.\d+\.\d+)\|")
_V6_INDEX = re.compile(r"^1\.3\.6\.1\.2\.1\.4\.34\.1\.3\.2\.16\.((?:\d+\.){15}\d+)\|")


def device_addresses() -> set[str]:
    """Every IP address the simulated devices really hold: SNMP address tables and
    whatever addresses the SSH recordings print."""
    found: set[str] = set()
    for name in RECORDINGS:
        for line in (recordings_dir() / f"{name}.snmprec").read_text().splitlines():
            if m := _V4_INDEX.match(line):
                found.add(m.group(1))
            elif m := _V6_INDEX.match(line):
                found.add(str(ipaddress.IPv6Address(bytes(int(b) for b in m.group(1).split(".")))))
    for path in SSH_RECORDINGS.rglob("*.txt"):
        found |= {str(f.value) for f in find(path.read_text()) if f.kind in ("v4", "v6")}
    return found


def scan(paths: list[Path], addresses: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privtel", "scan-leaks", "--addresses", str(addresses),
         *map(str, paths)], capture_output=True, text=True, timeout=120, check=False)


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "privtel", "demo", "--duration", "20", "--interval", "3",
         "--data-dir", str(data)],
        capture_output=True, text=True, timeout=240, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    m = re.search(r"^records stored: (\d+)$", res.stdout, re.MULTILINE)
    assert m and int(m.group(1)) > 0, res.stdout
    assert re.search(r"^rejected batches: 0$", res.stdout, re.MULTILINE)
    assert re.search(r"^devices polled: 6 \(6 answering\)$", res.stdout, re.MULTILINE)
    assert "http://127.0.0.1:" in res.stdout
    with sqlite3.connect(data / "privtel.db") as db:
        stored = db.execute("select count(*) from records").fetchone()[0]
        names = {n for (n,) in db.execute("select distinct name from records")}
    assert stored == int(m.group(1))
    assert {"device.health", "snmp.system", "if", "ip.address", "ssh.inventory"} <= names
    for key in (data / "keys").iterdir():
        assert key.stat().st_mode & 0o077 == 0, key

    addresses = device_addresses()
    assert {"195.218.254.105", "127.0.0.1"} <= addresses
    listed = tmp_path / "addresses.txt"
    listed.write_text("\n".join(sorted(addresses)) + "\n")
    clean = scan([data / "privtel.db"], listed)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    control = scan([recordings_dir() / f"{RECORDINGS[0]}.snmprec"], listed)
    assert control.returncode == 1, "scan-leaks must find the raw addresses in the recording"
    out = res.stdout + res.stderr
    assert not any(a in out for a in addresses if a != "127.0.0.1")
