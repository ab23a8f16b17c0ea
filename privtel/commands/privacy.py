"""Privacy commands: `scan-leaks`, `pseudonymise`, `reidentify` (its log: `audit verify --file`).

None of them ever prints a raw address except `reidentify`, whose whole point
is to show one to the privileged key holder, after writing who, when, what and
why to the hash-chained audit log (and refusing if it cannot).
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import getpass
import ipaddress
import os
import struct
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from agents.tenantkeys import rotate_tenant_key_file
from pipelines import auditchain
from pipelines.config import ConfigError, require_private
from pipelines.pseudonym import PrivacyPolicy, PseudonymError, Pseudonymiser
from pipelines.pseudonym.core import canonical, non_identifying
from pipelines.pseudonym.leakguard import normalise
from pipelines.pseudonym.reverse import Reidentifier
from pipelines.pseudonym.scan import find, parse_mac
from plumbing.keyfiles import read_tenant_key

CHUNK = 8 << 20
OVERLAP = 128
MIN_REASON = 10


def register(sub: Any) -> None:
    s = sub.add_parser("scan-leaks", help="count raw addresses in stores, JSON/NDJSON, "
                       "logs and capture files; exit 1 if any",
                       description="Counts raw addresses (never prints them). Without "
                       "--addresses every identifying address counts, which suits data that "
                       "should hold none; with it, only the listed ones (e.g. what the "
                       "devices really hold) count, so pseudonyms do not.")
    s.add_argument("paths", nargs="+", metavar="PATH",
                   help="file, directory, or postgresql:// URL of a store")
    s.add_argument("--addresses", metavar="FILE",
                   help="file of raw addresses to look for, one per line (# comments)")
    s.add_argument("--json", action="store_true", help="one JSON report on stdout")
    s.add_argument("--pg-schema", default="public", metavar="NAME",
                   help="for a postgresql:// PATH: the schema whose tables are read")
    s.add_argument("--headers", action="store_true",
                   help="in captures, also count the link and IP header addresses (the "
                   "capture's own endpoints); by default only payloads are checked")
    s.set_defaults(func=cmd_scan_leaks)

    p = sub.add_parser("pseudonymise", help="pseudonymise every address in stdin to stdout",
                       description="For sharing a log with a vendor: every IPv4, IPv6 and MAC "
                       "address in the text is replaced with the tenant's pseudonym.")
    p.add_argument("--key-file", required=True, help="64 hex characters, mode 0600")
    p.add_argument("--mode", choices=("prefix", "token"), default="prefix")
    p.add_argument("--epoch", type=int, default=1)
    p.add_argument("--preserve-prefix-v4", type=int, default=32, metavar="BITS")
    p.add_argument("--preserve-prefix-v6", type=int, default=128, metavar="BITS")
    p.set_defaults(func=cmd_pseudonymise)

    r = sub.add_parser("reidentify", help="reverse pseudonyms with the tenant key "
                       "(privileged, audited)",
                       description="Reverses address or MAC pseudonyms, or matches a token "
                       "against candidates. Every use is appended to the audit log first: "
                       "with --store, to the store's audit chain, as an API user with a "
                       "role that may re-identify and a TOTP code; with --audit-log, to a "
                       "hash-chained file (for use away from any store).")
    r.add_argument("pseudonyms", nargs="+", metavar="PSEUDONYM")
    r.add_argument("--key-file", required=True)
    r.add_argument("--epoch", type=int, default=1)
    r.add_argument("--reason", required=True,
                   help=f"why (at least {MIN_REASON} characters, e.g. a ticket reference)")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", metavar="URL",
                       help="append to this store's audit chain (needs --tenant, an API "
                       "token and --totp)")
    where.add_argument("--audit-log", metavar="FILE")
    r.add_argument("--tenant", help="with --store: the tenant whose key this is")
    r.add_argument("--token-file", type=Path, metavar="FILE",
                   help="with --store: the API token, mode 0600 (default: $PRIVTEL_TOKEN)")
    r.add_argument("--totp", metavar="CODE", help="with --store: the current TOTP code")
    r.add_argument("--audit-key", type=Path, metavar="FILE",
                   help="with --store: the audit chain's HMAC key (mode 0600), as the API's")
    r.add_argument("--who", default=None, help="with --audit-log: operator (default: the "
                   "login name); with --store the token says who")
    r.add_argument("--mode", default="prefix",
                   choices=("prefix", "ipcrypt", "ipcrypt-pfx", "ipcrypt-ndx", "mac", "token"))
    r.add_argument("--candidates", metavar="FILE", help="for --mode token: values to test")
    r.add_argument("--preserve-prefix-v4", type=int, default=32, metavar="BITS")
    r.add_argument("--preserve-prefix-v6", type=int, default=128, metavar="BITS")
    r.set_defaults(func=cmd_reidentify)

    k = sub.add_parser("tenant-key", help="show or rotate a tenant pseudonymisation key",
                       description="Shows the key id (never the secret), or rotates on "
                       "demand: the current key is kept as FILE.epochN for re-identification "
                       "and a fresh key takes its place for epoch N+1.")
    ksub = k.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, func, what in (("show", cmd_key_show, "print key id and epoch"),
                             ("rotate", cmd_key_rotate, "archive the key, write the next")):
        a = ksub.add_parser(name, help=what)
        a.add_argument("--key-file", required=True)
        a.add_argument("--epoch", type=int, default=1, help="the key's current epoch")
        a.set_defaults(func=func)



def _policy(args: argparse.Namespace, **modes: str) -> PrivacyPolicy:
    try:
        return PrivacyPolicy(modes=dict(modes), preserve_prefix_v4=args.preserve_prefix_v4,
                             preserve_prefix_v6=args.preserve_prefix_v6)
    except PseudonymError as e:
        raise ValueError(str(e)) from None


def cmd_pseudonymise(args: argparse.Namespace) -> int:
    key = read_tenant_key(Path(args.key_file), args.epoch)
    p = Pseudonymiser(key, _policy(args, text_ip=args.mode, mac=args.mode))
    out = sys.stdout.buffer
    for raw in sys.stdin.buffer:
        # bytes that are not UTF-8 pass through as they are; addresses are ASCII
        line = raw.decode("utf-8", "surrogateescape")
        out.write(p.text(line).encode("utf-8", "surrogateescape"))
    out.flush()
    return 0


# --- scan-leaks -------------------------------------------------------------

def _load_addresses(path: str) -> set[str]:
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


def cmd_scan_leaks(args: argparse.Namespace) -> int:
    wanted = _load_addresses(args.addresses) if args.addresses else None
    reports = scan_paths(args.paths, wanted, args.headers, args.pg_schema)
    total = sum(r["raw_addresses"] for r in reports)
    if args.json:
        sys.stdout.write(orjson.dumps({"files": reports, "raw_addresses": total,
                                       "listed": len(wanted) if wanted is not None else None}
                                      ).decode() + "\n")
    else:
        for r in reports:
            print(f"{r['path']}: {r['raw_addresses']} raw address occurrence(s), "
                  f"{r['distinct']} distinct ({r['kind']})")
        print(f"total: {total} raw address occurrence(s)"
              + (f" of {len(wanted)} listed" if wanted is not None else ""))
    return 1 if total else 0


# --- reidentify and its audit log ------------------------------------------

def _append_audit(path: Path, entry: dict[str, Any]) -> None:
    """Verify the chain, then append one linked entry durably; any failure stops the
    re-identification before a single raw value is shown."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        st = os.fstat(fd)
        require_private(str(path), st.st_mode)
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
        try:
            prev = auditchain.verify(auditchain.parse_lines(data))
        except auditchain.AuditChainError as e:
            raise ConfigError(str(path), "", f"audit log is damaged ({e}); "
                              "refusing to re-identify") from None
        line = orjson.dumps(auditchain.link(prev, entry)) + b"\n"
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_store_audit(args: argparse.Namespace, entry: dict[str, Any]) -> None:
    """Authenticate the caller as an API user, check role, tenant scope and TOTP (the
    matrix in `collector.auth`), and append to the store's audit chain with the chain's
    key; a refusal is appended too, and nothing is shown."""
    from collector.audit import AuditLog, read_key
    from collector.auth import Action, AuthError, Users, authorize
    from collector.store import open_db

    if not args.tenant:
        raise ValueError("--store needs --tenant (the tenant whose key this is)")
    if args.who:
        raise ValueError("--who goes with --audit-log; with --store the API token says who")
    if args.token_file is not None:
        require_private(str(args.token_file), args.token_file.stat().st_mode)
        token = args.token_file.read_text("ascii", errors="replace").strip()
    else:
        token = os.environ.get("PRIVTEL_TOKEN", "")
    if not token:
        raise ValueError("--store needs an API token: --token-file FILE or $PRIVTEL_TOKEN")
    key = read_key(args.audit_key)
    db = open_db(args.store)
    try:
        audit, users = AuditLog(db, key), Users(db)
        detail = {k: entry[k] for k in ("reason", "key_id", "epoch", "mode", "pseudonyms")}
        rid = os.urandom(8).hex()
        try:
            who = users.authenticate(f"Bearer {token}")
        except AuthError as e:
            raise ValueError(f"refused: {e.reason}") from None
        try:
            authorize(who, Action.REIDENTIFY, (args.tenant,))
            users.check_totp(who, args.totp)
        except AuthError as e:
            audit.append(actor=who.name, role=who.role, action="reidentify",
                         tenants=(args.tenant,), request_id=rid, outcome=f"denied:{e.code}",
                         detail={"reason": detail["reason"]})
            raise ValueError(f"refused: {e.reason}") from None
        audit.append(actor=who.name, role=who.role, action="reidentify", tenants=(args.tenant,),
                     request_id=rid, outcome="ok", count=len(detail["pseudonyms"]),
                     detail=detail)
    finally:
        db.close()


def cmd_reidentify(args: argparse.Namespace) -> int:
    reason = args.reason.strip()
    if len(reason) < MIN_REASON:
        raise ValueError(f"--reason must say why in at least {MIN_REASON} characters")
    key = read_tenant_key(Path(args.key_file), args.epoch)
    candidates: list[str] = []
    if args.mode == "token":
        if not args.candidates:
            raise ValueError("--mode token needs --candidates FILE (tokens are one-way)")
        candidates = [s.strip() for s in Path(args.candidates).read_text().splitlines()
                      if s.strip()]
    pol = _policy(args)
    rev = Reidentifier(key, pol)
    who = args.who or getpass.getuser()
    entry = {
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "who": who, "uid": os.getuid(), "action": "reidentify", "reason": reason,
        "key_id": key.key_id, "epoch": key.epoch, "mode": args.mode,
        "pseudonyms": list(args.pseudonyms),
    }
    results = []
    for ps in args.pseudonyms:
        try:
            if args.mode == "token":
                results.append(rev.token(ps, candidates))
            else:
                results.append(rev.address(ps, args.mode))
        except PseudonymError as e:
            raise ValueError(f"{ps}: {e}") from None
    if args.store:
        _append_store_audit(args, entry)
    else:
        _append_audit(Path(args.audit_log), entry)
    status = 0
    for ps, raw in zip(args.pseudonyms, results, strict=True):
        if raw is None:
            print(f"{ps}\t(no candidate matches)")
            status = 1
        else:
            print(f"{ps}\t{raw}")
    return status


def cmd_key_show(args: argparse.Namespace) -> int:
    key = read_tenant_key(Path(args.key_file), args.epoch)
    print(f"key id {key.key_id}, epoch {key.epoch}")
    return 0


def cmd_key_rotate(args: argparse.Namespace) -> int:
    old, new, archive = rotate_tenant_key_file(Path(args.key_file), args.epoch)
    path = Path(args.key_file)
    print(f"old key id {old.key_id} (epoch {old.epoch}) kept in {archive}")
    print(f"new key id {new.key_id} (epoch {new.epoch}) in {path}")
    print(f"set [keys] tenant_key_epoch = {new.epoch} in the agent config and restart it "
          "(an agent finds the epoch from the archives too)")
    return 0
