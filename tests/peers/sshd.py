"""A real OpenSSH server for tests: `/usr/sbin/sshd -D` on 127.0.0.1, throwaway keys.

sshd is strict about its surroundings, so this module provides them: an
absolute binary path, a generated host key, the privilege-separation
directory `/run/sshd`, and a real local account. Run as root (CI on a fresh
machine) it creates the account `privtel-ssh` once with `useradd`; run as an
ordinary user it logs in as that same user, which is all a non-root sshd can do.
Authorized keys live in the temp dir (`StrictModes no`), so nothing is written
to the account's home.

Use as a context manager (`with run_sshd() as peer:`) or through the `sshd`
fixture (import it into a conftest).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers.procs import stop as stop_process

HOST = "127.0.0.1"
SSHD = "/usr/sbin/sshd"
TEST_USER = "privtel-ssh"


@dataclass(slots=True)
class SshdPeer:
    host: str
    port: int
    user: str
    private_key: str
    host_public_key: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    files: list[Path] = field(default_factory=list)

    def known_hosts_line(self) -> str:
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{name} {self.host_public_key}"

    def write_file(self, name: str, text: str) -> Path:
        """A file the login user can read (for log collection tests)."""
        p = self.workdir / "shared" / name
        p.write_text(text)
        p.chmod(0o644)
        return p

    def log(self) -> str:
        p = self.workdir / "sshd.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _login_user() -> str:
    if os.geteuid() != 0:
        return getpass.getuser()
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        res = subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", TEST_USER],
            capture_output=True, check=False, timeout=30)
        if res.returncode not in (0, 9):  # 9: created meanwhile by a parallel run
            pytest.fail(f"useradd {TEST_USER} failed: {res.stderr.decode()[-300:]}")
    return TEST_USER


def _keypair() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def _wait_ready(peer: SshdPeer, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if peer.proc is not None and peer.proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {peer.proc.returncode}: {peer.log()[-2000:]}")
        try:
            with socket.create_connection((peer.host, peer.port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-2.0"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    peer.stop()
    raise RuntimeError(f"sshd did not answer within {deadline_s}s: {peer.log()[-2000:]}")


@contextlib.contextmanager
def run_sshd(*, extra_config: str = "") -> Iterator[SshdPeer]:
    if not os.access(SSHD, os.X_OK):
        pytest.fail(f"{SSHD} is missing; run: apt-get install openssh-server")
    user = _login_user()
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="privtel-sshd-"))
    workdir.chmod(0o755)
    (workdir / "shared").mkdir(mode=0o755)
    (workdir / "keys").mkdir(mode=0o755)
    host_private, host_public = _keypair()
    hk = workdir / "ssh_host_ed25519_key"
    fd = os.open(hk, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(host_private)
    client_private, client_public = _keypair()
    ak = workdir / "keys" / user
    ak.write_text(client_public + "\n")
    ak.chmod(0o644)
    port = _free_port()
    conf = workdir / "sshd_config"
    conf.write_text("\n".join([
        f"Port {port}",
        f"ListenAddress {HOST}",
        f"HostKey {hk}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {workdir / 'keys'}/%u",
        f"AllowUsers {user}",
        "StrictModes no",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin no",
        "PrintMotd no",
        "PrintLastLog no",
        "LogLevel VERBOSE",
        "MaxStartups 100:30:200",
        extra_config,
    ]) + "\n")
    conf.chmod(0o600)
    peer = SshdPeer(host=HOST, port=port, user=user, private_key=client_private,
                    host_public_key=host_public.strip(), workdir=workdir)
    peer.proc = subprocess.Popen(
        [SSHD, "-D", "-f", str(conf), "-E", str(workdir / "sshd.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(peer, 15.0)
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def sshd() -> Iterator[SshdPeer]:
    with run_sshd() as peer:
        yield peer
