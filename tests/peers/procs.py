"""Stopping a peer started by a test: SIGTERM, then SIGKILL if it will not go."""

from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
