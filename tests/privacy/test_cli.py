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
    t = run("pseudonymise", "--key-file", str(key_file), "--mode", "token", stdin=LOG)
    assert t.returncode == 0 and t.stdout.count("tk-") == 4


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


def _eth_ipv4(src: bytes, dst: bytes) -> bytes:
    ip = bytes([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0]) + src + dst
    return bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00" + ip


def test_scan_leaks_on_pcap_and_pcapng(tmp_path: Path, addresses: Path) -> None:
    frame = _eth_ipv4(bytes([192, 0, 2, 10]), bytes([203, 0, 113, 5]))
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    pcap += struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame
    (tmp_path / "a.pcap").write_bytes(pcap)
    shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    idb = struct.pack("<IIHHI", 1, 20, 1, 0, 65535) + struct.pack("<I", 20)
    padded = frame + bytes((-len(frame)) % 4)
    epb_len = 32 + len(padded)
    epb = struct.pack("<IIIIIII", 6, epb_len, 0, 0, 0, len(frame), len(frame)) + padded
    epb += struct.pack("<I", epb_len)
    (tmp_path / "a.pcapng").write_bytes(shb + idb + epb)
    for name in ("a.pcap", "a.pcapng"):
        assert main(["scan-leaks", "--addresses", str(addresses), str(tmp_path / name)]) == 1
    other = tmp_path / "other.txt"
    other.write_text("203.0.113.99\n")
    assert main(["scan-leaks", "--addresses", str(other), str(tmp_path / "a.pcap")]) == 0


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
    assert main(["audit-verify", str(log)]) == 0


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
    assert main(["audit-verify", str(log)]) == 1
    assert main([*base, "--reason", "ticket INC-3 check", "192.0.2.3"]) == 2
    assert "damaged" in capsys.readouterr().err
    assert "INC-3" not in log.read_text()
