"""`privtel demo` stopped by SIGTERM or SIGINT leaves no child running (snmpsim, the
device that goes away, Prometheus), and still prints its summary."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(kids - found)
            found |= kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_child(sig: signal.Signals, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "privtel", "demo", "--interval", "2", "--data-dir",
            str(tmp_path / "demo"), "--away-after", "3", "--away-for", "600"]
    if shutil.which("prometheus"):
        args.append("--prometheus")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("polling"):
                break
        # the away device's snmpsim has started, stopped once (after 3 s), and is away
        time.sleep(5)
        children = descendants(proc.pid)
        names = {Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")[0] for c in children
                 if alive(c)}
        assert children and any(b"python" in n for n in names), "".join(lines)
        if "--prometheus" in args:
            assert any(n.endswith(b"prometheus") for n in names), names
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines) + out
    assert proc.returncode == 0, text[-2000:]
    assert "stopping" in text and "--- privtel demo summary ---" in text
    deadline = time.monotonic() + 10
    while any(alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [c for c in children if alive(c)]
    assert not left, f"children still running after {sig.name}: {left}"
    assert os.path.exists(tmp_path / "demo" / "privtel.db")
