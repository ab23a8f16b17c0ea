"""Shared builders for transport tests: keys, records and headers with unique names."""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import sqlite3
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import zstandard
from cryptography.hazmat.primitives.asymmetric import ed25519
from factories import write_private as write_private
from peers.procs import stop
from prometheus_client import CollectorRegistry

from agents.config import AgentConfig
from agents.config import load as config_load
from pipelines import keys
from pipelines.envelope import Header
from pipelines.record import Kind, Record, encode_one


def uid() -> str:
    return os.urandom(4).hex()


def records(tenant: str, n: int = 3, start: int = 0) -> list[Record]:
    return [Record(kind=Kind.METRIC, tenant=tenant, site="s1", device=f"dev{i % 7}",
                   name="if", fields={"if_index": i, "in_octets": 1000 + i, "if_descr": "eth"})
            for i in range(start, start + n)]


def header(tenant: str, agent: str, seq: int = 1, created: float | None = None) -> Header:
    return Header(tenant=tenant, agent_id=agent, batch_id=os.urandom(16).hex(), seq=seq,
                  created=time.time() if created is None else created)


class Keys:
    """One collector key and one agent key, with the maps the collector side wants."""

    def __init__(self, agent: str, suite: str = "x25519") -> None:
        self.agent = agent
        self.collector = keys.generate_collector_key(suite)
        self.signing = ed25519.Ed25519PrivateKey.generate()
        self.agent_keys = {agent: self.signing.public_key()}
        self.collector_keys = {self.collector.key_id: self.collector}


def agent_config(tmp: Path, k: Keys, tenant: str, url: str, *, batch_max_records: int = 50,
                 batch_max_age_s: float = 0.2, spool: str = "", mqtt: str = "",
                 protocol: str = "5", receipt_key: ed25519.Ed25519PublicKey | None = None
                 ) -> AgentConfig:
    """A real agent config file (parsed by agents.config) with key files beside it."""
    tmp.mkdir(parents=True, exist_ok=True)
    write_private(tmp / "agent.key", keys.signing_key_pem(k.signing))
    write_private(tmp / "collector.pub", k.collector.public.pem)
    write_private(tmp / "tenant.key", keys.generate_tenant_key().encode())
    receipts = ""
    if receipt_key is not None:
        write_private(tmp / "receipt.pub", keys.verify_key_pem(receipt_key))
        receipts = 'collector_receipt_key = "receipt.pub"'
    text = f"""
[agent]
id = "{k.agent}"
tenant = "{tenant}"
site = "s1"
state_dir = "state"
batch_max_records = {batch_max_records}
batch_max_age_s = {batch_max_age_s}
suite = "{k.collector.suite}"

[keys]
signing_key = "agent.key"
collector_public_key = "collector.pub"
tenant_key = "tenant.key"
{receipts}

[mqtt]
url = "{url}"
protocol = "{protocol}"
timeout_s = 2.0
{mqtt}

[spool]
{spool}
"""
    cfg_file = write_private(tmp / "agent.toml", text.encode())
    return config_load(cfg_file)


class SqliteSink:
    """A store stand-in with the real store's contract: one transaction per batch,
    duplicate (agent, batch id) reported, not stored twice."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS batches (agent TEXT, batch TEXT, seq INTEGER,
                                                PRIMARY KEY (agent, batch));
            CREATE TABLE IF NOT EXISTS records (id TEXT, batch TEXT, body TEXT);
            CREATE TABLE IF NOT EXISTS quarantine (reason TEXT, topic TEXT, size INTEGER);
        """)

    async def sink(self, h: Header, recs: list[Record]) -> bool:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.execute("INSERT OR IGNORE INTO batches VALUES (?, ?, ?)",
                                  (h.agent_id, h.batch_id, h.seq))
            if cur.rowcount == 0:
                self.db.execute("ROLLBACK")
                return False
            self.db.executemany("INSERT INTO records VALUES (?, ?, ?)",
                                [(r.id, h.batch_id, orjson.dumps(r.to_dict()).decode())
                                 for r in recs])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return True

    async def quarantine(self, reason: str, topic: str, h: Header | None, payload: bytes) -> None:
        self.db.execute("INSERT INTO quarantine VALUES (?, ?, ?)", (reason, topic, len(payload)))

    def count(self, sql: str, *args: object) -> int:
        return int(self.db.execute(sql, args).fetchone()[0])

    def record_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM records")]

    def reasons(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT reason FROM quarantine")]


async def wait_for(pred: Callable[[], bool], timeout: float = 20.0, step: float = 0.05) -> bool:
    """Poll `pred` until true or timeout (a test budget, never a timing assertion)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


def settled(reg: CollectorRegistry) -> float:
    """Batches judged (accepted or rejected for any reason). Tests wait on this,
    not on `received`, which counts a message when it is checked ahead of the
    commit before it."""
    return sum(s.value for fam in reg.collect() for s in fam.samples
               if s.name in ("privtel_batches_accepted_total", "privtel_batches_rejected_total"))


class Broker:
    """A Mosquitto started by a test on a free loopback port, stoppable and restartable."""

    def __init__(self, workdir: Path, conf: str, port: int) -> None:
        self.workdir, self.port = workdir, port
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def plain(cls, workdir: Path, port: int) -> Broker:
        return cls(workdir, f"""
per_listener_settings false
allow_anonymous true
persistence true
persistence_location {workdir}/
listener {port} 127.0.0.1
user {getpass.getuser()}
""", port)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], cwd=self.workdir,
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "log", "ab"))  # noqa: SIM115
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.workdir / 'log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        stop(self.proc, 10)
        self.proc = None


def raw_seal(hdr: dict[str, object], body: bytes, k: Keys) -> bytes:
    """An encoder written from docs/wire-format.md, free to put anything in the body."""
    hjson = orjson.dumps(hdr, option=orjson.OPT_SORT_KEYS)
    frame = zstandard.ZstdCompressor().compress(body)
    ct = keys.suite(str(hdr["suite"])).encrypt(frame, k.collector.public.key,
                                               info=b"privtel/v1 batch\x00" + hjson)
    signed = b"PTB1" + struct.pack(">H", len(hjson)) + hjson + struct.pack(">I", len(ct)) + ct
    return signed + k.signing.sign(b"privtel/v1 batch signature\x00" + signed)


def raw_header(k: Keys, tenant: str, n: int, **over: object) -> dict[str, object]:
    h: dict[str, object] = {
        "v": 1, "tenant": tenant, "agent": k.agent, "batch": os.urandom(16).hex(), "seq": 1,
        "created": time.time(), "suite": k.collector.suite, "ckid": k.collector.key_id,
        "skid": keys.signing_key_id(k.signing), "pkids": [], "n": n, "comp": "zstd"}
    h.update(over)
    return h


def previous_version_spool(path: Path, recs: list[Record], next_seq: int | None = None) -> None:
    """A spool as the version before grouped rows left it: one record's JSON per
    `pending` row, no `pkids` or `n` columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript("""
        PRAGMA journal_mode=WAL;
        CREATE TABLE pending (id INTEGER PRIMARY KEY AUTOINCREMENT, added REAL NOT NULL,
                              record BLOB NOT NULL);
        CREATE TABLE batches (seq INTEGER PRIMARY KEY, batch_id TEXT NOT NULL UNIQUE,
                              created REAL NOT NULL, records INTEGER NOT NULL,
                              size INTEGER NOT NULL, data BLOB NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    """)
    if next_seq is not None:
        old.execute("INSERT INTO meta VALUES ('next_seq', ?)", (next_seq,))
    old.executemany("INSERT INTO pending (added, record) VALUES (?, ?)",
                    [(time.time(), encode_one(r)) for r in recs])
    old.close()
