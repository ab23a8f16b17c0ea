"""Simulated SNMP devices: snmpsim serving the real-device recordings it ships.

snmpsim refuses to run as root unless told to drop to another user; after
dropping, it can no longer read a Python installed under a root-only home and
dies on its first lazy import. It binds only a high loopback port here, so as
root it is told to stay (`SNMPSIM_ALLOW_ROOT`) rather than to drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

import snmpsim

from agents.pollers import HEALTH_NAME, Device
from agents.snmp.options import SnmpOptions
from agents.snmp.poller import SnmpPoller
from privtel.demo import children
from privtel.demo.moving import moving

RECORDINGS = ("linux-full-walk", "winxp-full-walk", "eaton-9PX-partial-walk", "linksys-system",
              "solaris-system")
_LAUNCH = ("import sys; from snmpsim.commands.responder import main; "
           "sys.argv[0] = 'snmpsim-command-responder'; sys.exit(main())")


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the demo dies, even by SIGKILL (Linux;
    strictly, when the thread that started it ends: start children from the loop thread)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def recordings_dir() -> Path:
    return Path(snmpsim.__file__).parent / "data" / "recorded"


def command(data: Path, cache: Path, port: int,
            *extra: str) -> tuple[list[str], dict[str, str]]:
    """Command line and environment for snmpsim serving `data` on 127.0.0.1:port."""
    args = [sys.executable, "-c", _LAUNCH, f"--data-dir={data}", f"--cache-dir={cache}",
            f"--agent-udpv4-endpoint=127.0.0.1:{port}", *extra]
    return args, dict(os.environ, SNMPSIM_ALLOW_ROOT="true")


class SnmpSim:
    """One snmpsim process on 127.0.0.1:port; each recording is a community name."""

    def __init__(self, port: int, recordings: tuple[str, ...] = RECORDINGS, *,
                 moving: bool = False) -> None:
        self.port, self.recordings, self.moving = port, recordings, moving
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: str | None = None

    async def __aenter__(self) -> SnmpSim:
        self._tmp = tempfile.mkdtemp(prefix="privtel-snmpsim-")
        data, cache = Path(self._tmp, "data"), Path(self._tmp, "cache")
        data.mkdir()
        cache.mkdir()
        for name in self.recordings:
            src = recordings_dir() / f"{name}.snmprec"
            if self.moving:
                (data / src.name).write_text(moving(src.read_text()))
            else:
                shutil.copy(src, data)
        args, env = command(data, cache, self.port, "--log-level=error")
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, cwd=self._tmp, env=env,
                                      preexec_fn=die_with_parent)
        await self._wait_ready()
        return self

    async def _wait_ready(self, timeout: float = 60.0) -> None:
        """Ready when a GET for sysObjectID answers: indexing big recordings takes a moment."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"snmpsim exited with {self._proc.returncode}: {err[-500:]}")
            if await _answers(self.port, self.recordings[0]):
                return
        raise TimeoutError(f"snmpsim did not answer on 127.0.0.1:{self.port} in {timeout:.0f}s")

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        children.stop(self._proc)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


async def _answers(port: int, community: str) -> bool:
    """One poll of the system group with the agent's own SNMP poller."""
    poller = SnmpPoller()
    device = Device(name="snmpsim-probe", address="127.0.0.1", port=port, protocol="snmp",
                    interval_s=60, tenant="demo", site="demo",
                    options=SnmpOptions(community=community, timeout_s=0.5, retries=0,
                                        profiles=("system",)))
    try:
        records = await poller.poll(device)
    finally:
        await poller.close()
    return any(r.name == HEALTH_NAME and r.fields.get("up") == 1 for r in records)
