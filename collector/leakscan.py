"""The scan-leaks engine: counts raw addresses in stores, captures, JSON and logs.

It lives in the product rather than the command line because an operator's
audit of what landed (SQLite and PostgreSQL stores, spools, pcap/pcapng
captures of the agent's own traffic) is a collector-side job; `privtel
scan-leaks` is only its front door. It never returns an address, only counts.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError
from pipelines.pseudonym.core import canonical, non_identifying
from pipelines.pseudonym.leakguard import normalise
from pipelines.pseudonym.scan import find, parse_mac

CHUNK = 8 << 20
OVERLAP = 128


def load_addresses(path: str) -> set[str]:
    wanted: set[str] = set()
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        c = normalise(s)
        if c is None:
            raise ConfigError(path, f"line {i}", "is not an IPv4, IPv6 or MAC address")
        wanted.add(c)
    return wanted


def _canon(f: Any) -> str:
    if f.kind != "mac":
        a = f.value.ipv4_mapped if f.value.version == 6 and f.value.ipv4_mapped else f.value
        if non_identifying(a):
            return ""
    return canonical(f)


def _text_chunks(path: Path) -> Iterator[str]:
    """The file as latin-1 text (byte for byte), in overlapping chunks; an address
    cut at a chunk edge is seen whole in the overlap and counted once."""
    with path.open("rb") as fh:
        tail = b""
        while True:
            data = fh.read(CHUNK)
            if not data:
                if tail:
                    yield tail.decode("latin-1")
                return
            buf = tail + data
            cut = len(buf) - OVERLAP if len(data) == CHUNK else len(buf)
            while cut > 0 and cut < len(buf) and buf[cut - 1:cut] not in b" \t\r\n,;\"'<>()[]{}":
                cut -= 1
            if cut <= 0:
                cut = len(buf) - OVERLAP
            yield buf[:cut].decode("latin-1")
            tail = buf[cut:]


def _scan_text_file(path: Path, counts: Counter[str]) -> None:
    for chunk in _text_chunks(path):
        for f in find(chunk):
            c = _canon(f)
            if c:
                counts[c] += 1


_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
               b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}


def _dissect(frame: bytes, linktype: int) -> tuple[list[str], bytes]:
    """(link and IP header addresses, transport payload) of one captured frame.
    Unknown link types give no header addresses and the whole frame as payload."""
    heads: list[str] = []
    if linktype == 1:  # Ethernet
        if len(frame) < 14:
            return heads, frame
        for mac in (frame[0:6], frame[6:12]):
            if int.from_bytes(mac, "big") not in (0, (1 << 48) - 1):
                heads.append(":".join(f"{b:02x}" for b in mac))
        off, etype = 14, int.from_bytes(frame[12:14], "big")
        while etype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            etype = int.from_bytes(frame[off + 2:off + 4], "big")
            off += 4
    elif linktype in (101, 228, 229, 12) and frame:  # raw IP
        off, etype = 0, 0x0800 if frame[0] >> 4 == 4 else 0x86DD
    else:
        return heads, frame
    pkt = frame[off:]
    if etype == 0x0800 and len(pkt) >= 20:
        heads += [str(ipaddress.IPv4Address(pkt[12:16])), str(ipaddress.IPv4Address(pkt[16:20]))]
        proto, l4 = pkt[9], pkt[(pkt[0] & 0x0F) * 4:]
    elif etype == 0x86DD and len(pkt) >= 40:
        heads += [str(ipaddress.IPv6Address(pkt[8:24])), str(ipaddress.IPv6Address(pkt[24:40]))]
        proto, l4 = pkt[6], pkt[40:]
    else:
        return heads, pkt
    if proto == 6 and len(l4) >= 20:
        return heads, l4[(l4[12] >> 4) * 4:]
    if proto == 17 and len(l4) >= 8:
        return heads, l4[8:]
    return heads, l4


def _pcap_frames(path: Path) -> Iterator[tuple[int, bytes]]:
    data = path.read_bytes()
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        yield from _pcapng_frames(data)
        return
    order = _PCAP_MAGIC[data[:4]]
    linktype = struct.unpack(order + "I", data[20:24])[0] & 0x0FFFFFFF
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(order + "I", data[off + 8:off + 12])[0]
        off += 16
        yield linktype, data[off:off + incl]
        off += incl


def _pcapng_frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    off, order = 0, "<"
    links: list[int] = []
    while off + 12 <= len(data):
        btype = int.from_bytes(data[off:off + 4], "little" if order == "<" else "big")
        if btype == 0x0A0D0D0A:
            order = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            links.clear()
        blen = struct.unpack(order + "I", data[off + 4:off + 8])[0]
        if blen < 12:
            return
        body = data[off + 8:off + blen - 4]
        if btype == 1:
            links.append(struct.unpack(order + "H", body[0:2])[0])
        elif btype == 6 and len(body) >= 20:
            iface, _, _, cap = struct.unpack(order + "IIII", body[0:16])
            if iface < len(links):
                yield links[iface], body[20:20 + cap]
        elif btype == 3 and len(body) >= 4 and links:
            yield links[0], body[4:]
        off += blen


def _is_capture(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4)
    return head in _PCAP_MAGIC or head == b"\x0a\x0d\x0d\x0a"


def _scan_capture(path: Path, counts: Counter[str], wanted: set[str] | None,
                  headers: bool) -> None:
    """Payloads always: textual addresses, and with a list of wanted addresses
    also their binary form (4 or 16 bytes, as SNMP or raw protocols carry them).
    Header addresses (the capture's own endpoints) only with `headers`."""
    binary = {}
    for c in wanted or ():
        if parse_mac(c) is not None:
            continue  # MACs in payloads are looked for as text only
        addr = ipaddress.ip_address(c.removeprefix("::ffff:") if "." in c else c)
        binary[addr.packed] = c
    for linktype, frame in _pcap_frames(path):
        heads, payload = _dissect(frame, linktype)
        if headers:
            for a in heads:
                h = normalise(a)
                if h and _canon_keep(h):
                    counts[h] += 1
        for f in find(payload.decode("latin-1")):
            t = _canon(f)
            if t:
                counts[t] += 1
        for packed, c in binary.items():
            n = payload.count(packed)
            if n:
                counts[c] += n


def _canon_keep(c: str) -> bool:
    try:
        a = ipaddress.ip_address(c.removeprefix("::ffff:") if "." in c else c)
    except ValueError:
        return True  # a MAC
    return not non_identifying(a)


def _safe_url(url: str) -> str:
    """The URL without credentials or parameters, fit for a report line."""
    rest = url.split("://", 1)[-1].split("?", 1)[0]
    return "postgresql://" + rest.rsplit("@", 1)[-1]


def _scan_postgres(url: str, schema: str, counts: Counter[str]) -> None:
    """Every table of one schema (partitions included), streamed as COPY text."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(url, connect_timeout=10) as conn, conn.cursor() as cur:
            cur.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' "
                        "ORDER BY 1", (schema,))
            tables = [r[0] for r in cur.fetchall()]
            for t in tables:
                q = sql.SQL("COPY {}.{} TO STDOUT").format(sql.Identifier(schema),
                                                           sql.Identifier(t))
                with cur.copy(q) as copy:
                    for block in copy:
                        for f in find(bytes(block).decode("utf-8", "replace")):
                            c = _canon(f)
                            if c:
                                counts[c] += 1
    except psycopg.Error as e:
        raise ConfigError(_safe_url(url), "", f"cannot read the store: "
                          f"{type(e).__name__}") from None


def _expand(names: Iterable[str]) -> Iterator[Path]:
    """Files as given; a directory stands for every file below it (a spool, a store dir)."""
    for name in names:
        if name.startswith(("postgresql://", "postgres://")):
            continue
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file()
                              and not p.name.endswith(("-wal", "-journal", "-shm")))
        elif not path.exists():
            raise FileNotFoundError(f"{name}: no such file or directory")
        else:
            yield path


def scan_paths(paths: Iterable[str], wanted: set[str] | None, headers: bool = False,
               pg_schema: str = "public") -> list[dict[str, Any]]:
    reports = []
    paths = list(paths)
    for url in (p for p in paths if p.startswith(("postgresql://", "postgres://"))):
        counts: Counter[str] = Counter()
        _scan_postgres(url, pg_schema, counts)
        if wanted is not None:
            counts = Counter({k: v for k, v in counts.items() if k in wanted})
        reports.append({"path": _safe_url(url),
                        "kind": "postgresql", "raw_addresses": sum(counts.values()),
                        "distinct": len(counts)})
    for path in _expand(paths):
        files = [path]
        for extra in ("-wal", "-journal"):
            side = Path(str(path) + extra)
            if side.exists():
                files.append(side)
        counts = Counter()
        kind = "capture" if _is_capture(path) else "file"
        for f in files:
            if kind == "capture":
                _scan_capture(f, counts, wanted, headers)
            else:
                _scan_text_file(f, counts)
        if wanted is not None:
            counts = Counter({k: v for k, v in counts.items() if k in wanted})
        reports.append({"path": str(path), "kind": kind, "raw_addresses": sum(counts.values()),
                        "distinct": len(counts)})
    return reports
