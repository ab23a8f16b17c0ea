"""`privtel audit verify`: check a hash chain, in the store (the API's audit log) or in a
file (the `reidentify` log)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from collector.api.schema import open_api_db
from collector.audit import AuditChainError, AuditLog
from pipelines import auditchain
from pipelines.config import ConfigError, require_private
from privtel.commands.users import store_arg


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("audit", help="hash-chained audit logs (API store, reidentify file)")
    sub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = sub.add_parser("verify", help="verify the chain; prints entry count and head hash, "
                       "exit 1 at the first broken entry")
    store_arg(v)
    v.add_argument("--file", type=Path, metavar="PATH",
                   help="verify a JSON-lines audit log file instead (e.g. the reidentify log)")
    v.add_argument("--audit-key", type=Path, metavar="FILE",
                   help="HMAC key file the API was started with (mode 0600)")
    v.set_defaults(func=cmd_verify)


def read_audit_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    require_private(str(path), path.stat().st_mode)
    data = path.read_bytes().strip()
    if len(data) < 16:
        raise ConfigError(str(path), "", "audit key must be at least 16 bytes")
    return data


def verify_file(path: Path) -> int:
    try:
        entries = auditchain.parse_lines(path.read_bytes())
        last = auditchain.verify(entries)
    except auditchain.AuditChainError as e:
        print(f"{path}: BROKEN: {e}", file=sys.stderr)
        return 1
    print(f"{path}: {len(entries)} entries, chain intact, head {last[:16]}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.file is not None:
        return verify_file(args.file)
    if not args.store:
        print("privtel: error: --store URL is required (or set PRIVTEL_STORE)", file=sys.stderr)
        return 2
    key = read_audit_key(args.audit_key)
    db = open_api_db(args.store)
    try:
        v = AuditLog(db, key).verify()
    except AuditChainError as e:
        print(f"audit log BROKEN: {e} (seq {e.index + 1})", file=sys.stderr)
        return 1
    finally:
        db.close()
    print(f"audit log OK: {v.entries} entries, head {v.head}")
    return 0
