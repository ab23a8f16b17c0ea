"""`privtel audit verify`: check the API audit log's hash chain in the store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from collector.api.schema import open_api_db
from collector.audit import AuditChainError, AuditLog
from collector.store import StoreError
from pipelines.config import ConfigError, require_private
from privtel.commands.users import store_arg


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("audit", help="the API's hash-chained audit log")
    sub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = sub.add_parser("verify", help="verify the chain; prints entry count and head hash, "
                       "exit 1 at the first broken entry")
    store_arg(v)
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


def cmd_verify(args: argparse.Namespace) -> int:
    if not args.store:
        print("privtel: error: --store URL is required (or set PRIVTEL_STORE)", file=sys.stderr)
        return 2
    key = read_audit_key(args.audit_key)
    try:
        db = open_api_db(args.store)
    except StoreError as e:
        print(f"privtel: error: {e}", file=sys.stderr)
        return 2
    try:
        v = AuditLog(db, key).verify()
    except AuditChainError as e:
        print(f"audit log BROKEN: {e} (seq {e.index + 1})", file=sys.stderr)
        return 1
    except StoreError as e:
        print(f"privtel: error: {e}", file=sys.stderr)
        return 2
    finally:
        db.close()
    print(f"audit log OK: {v.entries} entries, head {v.head}")
    return 0
