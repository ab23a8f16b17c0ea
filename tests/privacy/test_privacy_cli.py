"""The privacy commands end to end: real files, real SQLite, hand-built captures."""

from __future__ import annotations

import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.record import Kind, Record, encode
from privtel.cli import main

HEX = "3c" * 16 + "c3" * 16
RAW = ["192.0.2.10", "198.51.100.77", "2001:db8::42", "00:1a:2b:3c:4d:5e"]
LOG = ("Nov 25 12:00:01 fw1 sshd[42]: Accepted from 192.0.2.10 port 5022\n"
       "Nov 25 12:00:02 fw1 kernel: DROP src=198.51.100.77 dst=[2001:db8::42]:443 "
       "mac=00:1a:2b:3c:4d:5e\n")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    p = tmp_path / "tenant.key"
    p.write_text(HEX + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture
def addresses(tmp_path: Path) -> Path:
    p = tmp_path / "addresses.txt"
    p.write_text("# what the devices hold\n" + "\n".join(RAW) + "\n")
    return p


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "privtel", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def test_pseudonymise_replaces_every_address(key_file: Path, tmp_path: Path,
                                             addresses: Path) -> None:
    r = run("pseudonymise", "--key-file", str(key_file), stdin=LOG)
    assert r.returncode == 0, r.stderr
    assert all(a not in r.stdout for a in RAW)
    assert r.stdout.count("\n") == 2 and "Accepted from " in r.stdout and " port 5022" in r.stdout
    out = tmp_path / "shared.log"
    out.write_text(r.stdout)
    assert main(["scan-leaks", "--addresses", str(addresses), str(out)]) == 0
    t = run("pseudonymise", "--key-file", str(key_file), "--mode", "token",
            "--classes", "ip,mac", stdin=LOG)
    assert t.returncode == 0 and t.stdout.count("tk-") == 4  # the 4 addresses, no host
    a = run("pseudonymise", "--key-file", str(key_file), "--mode", "token", stdin=LOG)
    assert a.returncode == 0 and a.stdout.count("tk-") == 6  # and both syslog header hosts


def test_pseudonymise_refuses_a_readable_or_bad_key(key_file: Path) -> None:
    key_file.chmod(0o644)
    r = run("pseudonymise", "--key-file", str(key_file), stdin="x")
    assert r.returncode == 2 and "chmod 600" in r.stderr
    key_file.write_text("not hex at all but long enough to look like a key".ljust(64, "z"))
    key_file.chmod(0o600)
    r = run("pseudonymise", "--key-file", str(key_file), stdin="x")
    assert r.returncode == 2 and "64 hexadecimal" in r.stderr and "long enough" not in r.stderr


def test_scan_leaks_on_ndjson_counts_without_printing(tmp_path: Path, addresses: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "records.ndjson"
    f.write_text(orjson.dumps({"msg": LOG}).decode() + "\n")
    assert main(["scan-leaks", "--json", str(f)]) == 1
    report = orjson.loads(capsys.readouterr().out)
    assert report["raw_addresses"] == 4 and report["files"][0]["distinct"] == 4
    assert main(["scan-leaks", "--addresses", str(addresses), str(f)]) == 1
    out = capsys.readouterr().out
    assert "4 raw address" in out and all(a not in out for a in RAW)


def test_scan_leaks_on_sqlite_store(tmp_path: Path, addresses: Path, key_file: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    p = Pseudonymiser(TenantKey.from_hex(HEX))
    recs = [Record(kind=Kind.LOG, tenant="acme", site="hq", device="fw1", name="syslog",
                   fields={"message": line, "src_addr": "192.0.2.10"})
            for line in LOG.splitlines()]
    for name, rows in (("clean.db", [p.record(r) for r in recs]), ("dirty.db", recs)):
        db = sqlite3.connect(tmp_path / name)
        db.execute("create table records (id text primary key, body blob)")
        db.executemany("insert into records values (?, ?)",
                       [(r.id, encode([r])) for r in rows])
        db.commit()
        db.close()
    assert main(["scan-leaks", "--addresses", str(addresses), str(tmp_path / "clean.db")]) == 0
    assert main(["scan-leaks", "--addresses", str(addresses), str(tmp_path / "dirty.db")]) == 1
    assert "dirty.db: 6 raw" in capsys.readouterr().out


def _eth_udp(src: bytes, dst: bytes, payload: bytes) -> bytes:
    ip = bytes([0x45, 0, 0, 20 + 8 + len(payload), 0, 0, 0, 0, 64, 17, 0, 0]) + src + dst
    udp = struct.pack(">HHHH", 161, 40000, 8 + len(payload), 0)
    return bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00" + ip + udp + payload


def _pcap(frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for f in frames:
        out += struct.pack("<IIII", 0, 0, len(f), len(f)) + f
    return out


def _pcapng(frames: list[bytes]) -> bytes:
    out = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    out += struct.pack("<IIHHI", 1, 20, 1, 0, 65535) + struct.pack("<I", 20)
    for frame in frames:
        padded = frame + bytes((-len(frame)) % 4)
        n = 32 + len(padded)
        out += struct.pack("<IIIIIII", 6, n, 0, 0, 0, len(frame), len(frame)) + padded
        out += struct.pack("<I", n)
    return out


@pytest.mark.parametrize("fmt", [_pcap, _pcapng])
def test_scan_leaks_on_captures(fmt: object, tmp_path: Path, addresses: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    build = fmt  # type: ignore[assignment]
    endpoints = (bytes([192, 0, 2, 10]), bytes([203, 0, 113, 5]))
    clean = build([_eth_udp(*endpoints, b"sealed batch, no address inside")])  # type: ignore[operator]
    text = build([_eth_udp(*endpoints, b"log: peer 198.51.100.77 down")])  # type: ignore[operator]
    binary = build([_eth_udp(*endpoints, b"\x40\x04" + bytes([198, 51, 100, 77]))])  # type: ignore[operator]
    for name, data in (("clean", clean), ("text", text), ("binary", binary)):
        (tmp_path / name).write_bytes(data)
    a = str(addresses)
    assert main(["scan-leaks", "--addresses", a, str(tmp_path / "clean")]) == 0
    assert main(["scan-leaks", "--addresses", a, "--headers", str(tmp_path / "clean")]) == 1
    assert main(["scan-leaks", "--addresses", a, str(tmp_path / "text")]) == 1
    assert main(["scan-leaks", "--addresses", a, str(tmp_path / "binary")]) == 1
    assert main(["scan-leaks", str(tmp_path / "binary")]) == 0  # binary needs the list
    out = capsys.readouterr().out
    assert "(capture)" in out and "198.51.100.77" not in out and "192.0.2.10" not in out


def test_reidentify_reverses_and_audits(key_file: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    p = Pseudonymiser(TenantKey.from_hex(HEX))
    pv4, pv6, pmac = p.ip("192.0.2.10"), p.ip("2001:db8::42"), p.mac("00:1a:2b:3c:4d:5e")
    log = tmp_path / "audit.ndjson"
    base = ["reidentify", "--key-file", str(key_file), "--audit-log", str(log),
            "--who", "alice", "--reason", "INC-4711 abuse report"]
    assert main([*base, pv4, pv6]) == 0
    out = capsys.readouterr().out
    assert f"{pv4}\t192.0.2.10" in out and f"{pv6}\t2001:db8::42" in out
    assert main([*base, "--mode", "mac", pmac]) == 0
    assert "00:1a:2b:3c:4d:5e" in capsys.readouterr().out
    cands = tmp_path / "inventory.txt"
    cands.write_text("edge-1\ncore-rtr-1\n")
    assert main([*base, "--mode", "token", "--candidates", str(cands),
                 p.token("core-rtr-1")]) == 0
    assert "core-rtr-1" in capsys.readouterr().out
    text = log.read_text()
    entries = [orjson.loads(line) for line in text.splitlines()]
    assert len(entries) == 3 and entries[0]["who"] == "alice"
    assert entries[0]["reason"] == "INC-4711 abuse report"
    assert entries[0]["pseudonyms"] == [pv4, pv6]
    assert "192.0.2.10" not in text and "2001:db8::42" not in text and HEX not in text
    assert os.stat(log).st_mode & 0o077 == 0
    assert main(["audit", "verify", "--file", str(log)]) == 0


def test_reidentify_refuses_without_reason_or_with_damaged_log(
        key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.ndjson"
    base = ["reidentify", "--key-file", str(key_file), "--audit-log", str(log), "--who", "bob"]
    assert main([*base, "--reason", "because", "192.0.2.1"]) == 2
    assert main([*base, "--reason", "ticket INC-1 check", "192.0.2.1"]) == 0
    assert main([*base, "--reason", "ticket INC-2 check", "192.0.2.2"]) == 0
    capsys.readouterr()
    lines = log.read_text().splitlines()
    lines[0] = lines[0].replace("INC-1", "INC-9")
    log.write_text("\n".join(lines) + "\n")
    assert main(["audit", "verify", "--file", str(log)]) == 1
    assert main([*base, "--reason", "ticket INC-3 check", "192.0.2.3"]) == 2
    assert "damaged" in capsys.readouterr().err
    assert "INC-3" not in log.read_text()


def test_scan_leaks_walks_directories_and_reports_missing_paths(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "spool"
    (d / "sub").mkdir(parents=True)
    (d / "a.ndjson").write_text('{"x": "pseudonyms only: tk-abcdef-0123"}\n')
    (d / "sub" / "b.log").write_text("peer 203.0.113.7 up\n")
    assert main(["scan-leaks", str(d)]) == 1
    out = capsys.readouterr().out
    assert "b.log: 1 raw" in out and "a.ndjson: 0 raw" in out and "203.0.113.7" not in out
    assert main(["scan-leaks", str(tmp_path / "missing.db")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_pseudonymise_passes_non_utf8_bytes_through(key_file: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "privtel", "pseudonymise", "--key-file",
                        str(key_file)], input=b"\xff\xfe from 192.0.2.10 \xc3(\n",
                       capture_output=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"\xff\xfe from ") and r.stdout.endswith(b" \xc3(\n")
    assert b"192.0.2.10" not in r.stdout


def test_scan_leaks_on_postgresql(pg_dsn: str, addresses: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import psycopg

    schema = f"privtel_scan_{os.getpid()}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.records (id text, body jsonb)")
        conn.execute(f"INSERT INTO {schema}.records VALUES ('a', %s)",
                     (orjson.dumps({"msg": "pseudonym 100.15.198.226 only"}).decode(),))
        try:
            args = ["scan-leaks", "--addresses", str(addresses), "--pg-schema", schema, pg_dsn]
            assert main(args) == 0
            conn.execute(f"INSERT INTO {schema}.records VALUES ('b', %s)",
                         (orjson.dumps({"msg": "peer 2001:db8::42 down"}).decode(),))
            assert main(args) == 1
            out = capsys.readouterr().out
            assert "(postgresql)" in out and "2001:db8::42" not in out
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_tenant_key_show_and_rotate(key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = TenantKey.from_hex(HEX, epoch=1)
    assert main(["tenant-key", "show", "--key-file", str(key_file)]) == 0
    assert capsys.readouterr().out.strip() == f"key id {old.key_id}, epoch 1"
    assert main(["tenant-key", "rotate", "--key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    archive = key_file.with_name(key_file.name + ".epoch1")
    assert archive.read_text().strip() == HEX and key_file.read_text().strip() != HEX
    new = TenantKey.from_hex(key_file.read_text(), epoch=2)
    assert old.key_id in out and new.key_id in out and "tenant_key_epoch = 2" in out
    assert HEX not in out and new.to_hex() not in out
    for f in (key_file, archive):
        assert os.stat(f).st_mode & 0o077 == 0
    assert main(["tenant-key", "rotate", "--key-file", str(key_file)]) == 2  # epoch1 exists
    assert main(["tenant-key", "rotate", "--key-file", str(key_file), "--epoch", "2"]) == 0
