"""Real SNMP agents for tests: net-snmp `snmpd` and `snmpsim`, on 127.0.0.1 only.

Both start as subprocesses on a free UDP port with a generated config and are
stopped (and their temp dirs removed) after. Nothing here mocks SNMP: the
point is that our poller meets the same BER, GETBULK and USM handling that a
real device's agent has.

Use as context managers (`with run_snmpd(...) as peer:`) or via the pytest
fixtures `snmpd` and `snmpsim` (import them into a conftest).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from peers.ports import free_udp_port
from peers.procs import stop as stop_process

from privtel.demo.snmpsim import command as snmpsim_command

HOST = "127.0.0.1"
PASS_SCRIPT = Path(__file__).with_name("iftable_pass.py")


@dataclass(frozen=True, slots=True)
class V3User:
    """A USM user; protocol names as net-snmp spells them (SHA-256, AES-256...)."""

    name: str
    auth: str | None = "SHA-256"
    auth_key: str = "authpass-0123"
    priv: str | None = "AES"
    priv_key: str = "privpass-0123"

    @property
    def level(self) -> str:
        if self.auth is None:
            return "noAuthNoPriv"
        return "authPriv" if self.priv else "authNoPriv"

    def cli_args(self) -> list[str]:
        """Arguments for net-snmp's command-line tools."""
        args = ["-v3", "-l", self.level, "-u", self.name]
        if self.auth:
            args += ["-a", self.auth, "-A", self.auth_key]
        if self.priv:
            args += ["-x", self.priv, "-X", self.priv_key]
        return args


@dataclass(slots=True)
class SnmpPeer:
    """A running SNMP agent: where it listens and what it serves."""

    host: str
    port: int
    community: str
    sys_name: str = ""
    users: tuple[V3User, ...] = ()
    interfaces: int = 0
    workdir: Path = field(default_factory=Path)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"udp:{self.host}:{self.port}"

    def cli(self, tool: str, *args: str, user: V3User | None = None,
            timeout_s: float = 20.0) -> str:
        """Run a net-snmp tool (snmpget, snmpbulkwalk...) against this peer, numeric output."""
        auth = user.cli_args() if user else ["-v2c", "-c", self.community]
        cmd = [tool, "-M", "/dev/null", "-On", "-Oe", "-t", "2", "-r", "1", *auth,
               self.target, *args]
        res = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{tool} failed ({res.returncode}): {res.stderr.decode()[-500:]}")
        return res.stdout.decode()

    def snmpget(self, *oids: str, user: V3User | None = None) -> dict[str, str]:
        """OID -> value as snmpget prints it after the type tag (numeric OIDs, no MIBs)."""
        return parse_cli(self.cli("snmpget", "-Oq", *oids, user=user))

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def parse_cli(text: str) -> dict[str, str]:
    """Parse `-On -Oq` output lines `.1.3.6... value` into {dotted-oid-without-dot: value}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        oid, _, value = line.partition(" ")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out[oid.lstrip(".")] = value
    return out


def _wait_ready(peer: SnmpPeer, deadline_s: float, log: Path) -> None:
    """Wait until the agent answers a v2c GET of sysName (snmpd binds before it is ready)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if peer.proc is not None and peer.proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"SNMP agent exited with {peer.proc.returncode}: {tail}")
        res = subprocess.run(
            ["snmpget", "-M", "/dev/null", "-On", "-t", "0.3", "-r", "0", "-v2c", "-c",
             peer.community, peer.target, "1.3.6.1.2.1.1.5.0"],
            capture_output=True, check=False, timeout=10)
        if res.returncode == 0:
            return
        time.sleep(0.1)
    peer.stop()
    raise RuntimeError(f"SNMP agent did not answer within {deadline_s}s")


@contextlib.contextmanager
def run_snmpd(*, community: str = "public", sys_name: str = "privtel-test",
              users: Sequence[V3User] = (), interfaces: int = 0,
              extra_config: str = "", port: int | None = None,
              persist_dir: Path | None = None) -> Iterator[SnmpPeer]:
    """A real net-snmp snmpd on 127.0.0.1.

    `interfaces` > 0 replaces the host's own IF-MIB with a synthetic table of
    that many rows served through `pass_persist` (see iftable_pass.py), so
    tests and benches get a production-sized walk without touching the host's
    network configuration.

    `persist_dir` (the caller's, kept after) makes the engine survive a restart
    like a real device's: same engine id, snmpEngineBoots one higher. `-C` stops
    snmpd reading its persistent store, so the store is passed as a second `-c`.
    """
    if shutil.which("snmpd") is None:
        pytest.fail("net-snmp snmpd is not installed; run: apt-get install snmpd snmp")
    workdir = Path(tempfile.mkdtemp(prefix="privtel-snmpd-"))
    port = port or free_udp_port()
    lines = [
        f"rocommunity {community} {HOST}",
        f"sysName {sys_name}",
        "sysLocation privtel test rack",
        "sysContact noc@example.invalid",
        "dontLogTCPWrappersConnects yes",
        "disk / 10000",
        "load 12 10 5",
    ]
    for u in users:
        spec = f"createUser {u.name}"
        if u.auth:
            spec += f" {u.auth} {u.auth_key}"
            if u.priv:
                spec += f" {u.priv} {u.priv_key}"
        lines += [spec, f"rouser {u.name} {u.level.replace('NoAuthNoPriv', 'noauth')}"]
    excluded: list[str] = []
    if interfaces:
        py = sys.executable
        for root in (".1.3.6.1.2.1.2", ".1.3.6.1.2.1.31"):
            lines.append(f"pass_persist {root} {py} {PASS_SCRIPT} {interfaces}")
        excluded = ["-I", "-ifTable,ifXTable,interfaces,ifStackTable,ifRcvAddressTable"]
    if extra_config:
        lines.append(extra_config)
    conf = workdir / "snmpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o600)
    log = workdir / "snmpd.log"
    persist = persist_dir or workdir / "persist"
    confs = [str(conf)]
    if persist_dir is not None and (persist_dir / "snmpd.conf").exists():
        confs.append(str(persist_dir / "snmpd.conf"))
    env = dict(os.environ, SNMP_PERSISTENT_DIR=str(persist), MIBS="", MIBDIRS="/dev/null")
    cmd = ["snmpd", "-f", "-Lf", str(log), "-C", "-c", ",".join(confs), "-M", "/dev/null",
           "-p", str(workdir / "snmpd.pid"), *excluded, f"udp:{HOST}:{port}"]
    peer = SnmpPeer(host=HOST, port=port, community=community, sys_name=sys_name,
                    users=tuple(users), interfaces=interfaces, workdir=workdir)
    peer.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_ready(peer, 15.0, log)
        if interfaces:  # start the pass_persist helper now, not inside a test's timeout
            peer.cli("snmpgetnext", "-Oq", "1.3.6.1.2.1.2.2.1.2", timeout_s=60)
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def snmpsim_data_dir() -> Path:
    """The recordings directory that the snmpsim package ships."""
    import snmpsim

    candidates = [Path(snmpsim.__file__).parent / "data",
                  Path(sys.prefix) / "snmpsim" / "data",
                  Path(sys.prefix) / "share" / "snmpsim" / "data"]
    for c in candidates:
        if c.is_dir() and any(c.rglob("*.snmprec")):
            return c
    raise RuntimeError("snmpsim recordings not found; reinstall snmpsim>=1.2")


@contextlib.contextmanager
def run_snmpsim(*, recordings: Sequence[str] = ("public",),
                files: Mapping[str, Path] | None = None,
                port: int | None = None) -> Iterator[SnmpPeer]:
    """snmpsim serving shipped recordings; each recording's name is its v2c community.

    `recordings` are paths relative to the snmpsim data dir without the
    `.snmprec` suffix (e.g. "public", "recorded/linux-full-walk"); `files` adds
    a test's own `.snmprec` files under the given community names.
    """
    data = snmpsim_data_dir()
    workdir = Path(tempfile.mkdtemp(prefix="privtel-snmpsim-"))
    recdir = workdir / "data"
    recdir.mkdir()
    for rec in recordings:
        src = data / f"{rec}.snmprec"
        if not src.exists():
            raise RuntimeError(f"no snmpsim recording {rec!r} under the package data")
        dst = recdir / f"{rec}.snmprec"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    for community, path in (files or {}).items():
        shutil.copy(path, recdir / f"{community}.snmprec")
    port = port or free_udp_port()
    cmd, env = snmpsim_command(recdir, workdir / "cache", port,
                               f"--logging-method=file:{workdir / 'sim.log'}")
    first = recordings[0] if recordings else next(iter(files or {}))
    peer = SnmpPeer(host=HOST, port=port, community=first, workdir=workdir)
    peer.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_ready(peer, 30.0, workdir / "sim.log")
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)


DEFAULT_USERS = (
    V3User("u_sha256_aes", "SHA-256", "authpass-sha256", "AES", "privpass-aes128"),
    V3User("u_sha_aes256", "SHA", "authpass-sha1xx", "AES-256", "privpass-aes256"),
    V3User("u_md5_des", "MD5", "authpass-md5xxx", "DES", "privpass-desxxx"),
    V3User("u_sha512_auth", "SHA-512", "authpass-sha512", None, ""),
)


@pytest.fixture(scope="module")
def snmpd() -> Iterator[SnmpPeer]:
    """A module-scoped snmpd with v2c 'public', the DEFAULT_USERS and 24 synthetic interfaces."""
    with run_snmpd(users=DEFAULT_USERS, interfaces=24) as peer:
        yield peer


@pytest.fixture(scope="module")
def snmpsim() -> Iterator[SnmpPeer]:
    """A module-scoped snmpsim serving the shipped 'public' recording."""
    with run_snmpsim() as peer:
        yield peer
