"""Stopping a child process the demo (or a test) started: SIGTERM, then SIGKILL if it
will not go, so no child outlives its parent's shutdown."""

from __future__ import annotations

import subprocess
from typing import Any


def stop(proc: subprocess.Popen[Any] | None, timeout_s: float = 5.0) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
