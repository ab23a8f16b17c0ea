"""`privtel audit verify`: check a hash chain, in the store (the API's audit log) or in a
file (the `reidentify` log). `privtel audit anchor`: append the current head to an anchor
file kept apart from the log, so a later `verify --anchors` catches entries cut off the end."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from collector.audit import AuditChainError, AuditLog, read_key
from collector.store import open_db
from pipelines import auditchain
from pipelines.config import ConfigError
from privtel.commands.users import store_arg


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("audit", help="hash-chained audit logs (API store, reidentify file)")
    sub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = sub.add_parser("verify", help="verify the chain; prints entry count and head hash, "
                       "exit 1 at the first broken entry")
    store_arg(v)
    v.add_argument("--file", type=Path, metavar="PATH",
                   help="verify a JSON-lines audit log file instead (e.g. the reidentify log)")
    v.add_argument("--anchors", type=Path, metavar="FILE",
                   help="anchor file written by `privtel audit anchor`: every head in it must "
                   "still be in the chain (catches entries cut off the end)")
    v.add_argument("--audit-key", type=Path, metavar="FILE",
                   help="HMAC key file the API was started with (mode 0600)")
    v.set_defaults(func=cmd_verify)
    a = sub.add_parser("anchor", help="verify, then append the head (entry count and hash) "
                       "to an anchor file; keep that file on another host or WORM storage")
    store_arg(a)
    a.add_argument("--file", type=Path, metavar="PATH",
                   help="anchor a JSON-lines audit log file instead (e.g. the reidentify log)")
    a.add_argument("--to", type=Path, required=True, metavar="FILE",
                   help="anchor file to append to (created if missing)")
    a.add_argument("--audit-key", type=Path, metavar="FILE",
                   help="HMAC key file the API was started with (mode 0600)")
    a.set_defaults(func=cmd_anchor)


read_audit_key = read_key


def _anchors(path: Path | None) -> dict[int, str] | None:
    if path is None:
        return None
    try:
        return auditchain.parse_anchors(path.read_bytes())
    except ValueError as e:
        raise ConfigError(str(path), "", str(e)) from None


def _check(args: argparse.Namespace, anchors: dict[int, str] | None) -> tuple[str, int, str]:
    """(what was checked, entry count, head); AuditChainError at the first break."""
    if args.file is not None:
        entries = auditchain.parse_lines(args.file.read_bytes())
        return str(args.file), len(entries), auditchain.verify(entries, anchors=anchors)
    if not args.store:
        raise ConfigError("--store", "", "a store URL is required (or set PRIVTEL_STORE)")
    key = read_audit_key(args.audit_key)
    db = open_db(args.store)
    try:
        v = AuditLog(db, key).verify(anchors)
    finally:
        db.close()
    return "audit log", v.entries, v.head


def cmd_verify(args: argparse.Namespace) -> int:
    anchors = _anchors(args.anchors)
    try:
        what, n, head = _check(args, anchors)
    except AuditChainError as e:
        where = "" if args.file is not None else f" (seq {e.index + 1})"
        print(f"{args.file or 'audit log'}: BROKEN: {e}{where}", file=sys.stderr)
        return 1
    held = f", {len(anchors)} anchors held" if anchors else ""
    print(f"{what} OK: {n} entries, chain intact{held}, head {head}")
    return 0


def cmd_anchor(args: argparse.Namespace) -> int:
    anchors = _anchors(args.to) if args.to.exists() else None
    try:
        what, n, head = _check(args, anchors)
    except AuditChainError as e:
        print(f"{args.file or 'audit log'}: BROKEN, not anchored: {e}", file=sys.stderr)
        return 1
    fd = os.open(args.to, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, auditchain.anchor_line(n, head, time.time()))
        os.fsync(fd)
    finally:
        os.close(fd)
    print(f"{what}: anchored {n} entries, head {head}, in {args.to}")
    return 0
