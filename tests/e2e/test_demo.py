"""`privtel demo` as a newcomer runs it: a subprocess that must end with records stored."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path


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
    assert re.search(r"^devices polled: 5 \(5 answering\)$", res.stdout, re.MULTILINE)
    assert "http://127.0.0.1:" in res.stdout
    with sqlite3.connect(data / "privtel.db") as db:
        stored = db.execute("select count(*) from records").fetchone()[0]
        names = {n for (n,) in db.execute("select distinct name from records")}
    assert stored == int(m.group(1))
    assert {"device.health", "snmp.system", "if"} <= names
    for key in (data / "keys").iterdir():
        assert key.stat().st_mode & 0o077 == 0, key
    assert "127.0.0.1" not in (data / "privtel.db").read_bytes().decode("latin-1")
