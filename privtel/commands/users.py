"""`privtel users add|list|revoke|mfa-enrol`: API users, straight on the store.

Run by an operator with database access (the same access that could read
every record), so these commands need no token themselves. A token or a TOTP
secret is printed once, when it is made, and stored only as a hash (token) or
for checking codes (TOTP: sealed with the server's key file when one is given,
`--totp-key-file`).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

from collector.auth import ROLES, Users, parse_totp_key
from collector.store import open_db
from plumbing.files import read_private, write_private


def store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="URL", default=os.environ.get("PRIVTEL_STORE"),
                   help="sqlite:///PATH or postgresql://... (default: $PRIVTEL_STORE)")


def totp_key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--totp-key-file", type=Path, metavar="FILE",
                   default=os.environ.get("PRIVTEL_TOTP_KEY_FILE"),
                   help="key sealing TOTP secrets in the database (64 hex, mode 0600; "
                   "default: $PRIVTEL_TOTP_KEY_FILE); `privtel users totp-key-init` makes one")


def read_totp_key(path: Path | str | None) -> bytes | None:
    if path is None:
        return None
    return parse_totp_key(read_private(Path(path)))


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("users", help="API users: tokens, roles, tenant scope, MFA")
    sub = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="create a user and print its API token (shown once)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--tenant", required=True, metavar="T[,T...]|*",
                     help="tenant scope: comma-separated tenants, or '*' for all")
    add.add_argument("--expires-days", type=float, metavar="DAYS",
                     help="token lifetime (default: until revoked)")
    store_arg(add)
    add.set_defaults(func=cmd_add)
    ls = sub.add_parser("list", help="list users (never tokens or secrets)")
    ls.add_argument("--json", action="store_true")
    store_arg(ls)
    ls.set_defaults(func=cmd_list)
    rv = sub.add_parser("revoke", help="revoke a user's token now")
    rv.add_argument("name")
    store_arg(rv)
    rv.set_defaults(func=cmd_revoke)
    mfa = sub.add_parser("mfa-enrol", help="give a user a TOTP second factor; prints the "
                         "otpauth:// URI to load into an authenticator app (shown once)")
    mfa.add_argument("name")
    store_arg(mfa)
    totp_key_arg(mfa)
    mfa.set_defaults(func=cmd_mfa)
    tk = sub.add_parser("totp-key-init", help="write a new key that seals TOTP secrets in the "
                        "database (give it to `api serve --totp-key-file`)")
    tk.add_argument("file", type=Path)
    tk.set_defaults(func=cmd_totp_key)


def _run(args: argparse.Namespace, fn: object) -> int:
    if not args.store:
        print("privtel: error: --store URL is required (or set PRIVTEL_STORE)", file=sys.stderr)
        return 2
    key = read_totp_key(getattr(args, "totp_key_file", None))
    db = open_db(args.store)  # store and user errors: one sentence from `privtel.cli`
    try:
        return int(fn(Users(db, key)))  # type: ignore[operator]
    finally:
        db.close()


def cmd_add(args: argparse.Namespace) -> int:
    def go(users: Users) -> int:
        exp = None if args.expires_days is None else args.expires_days * 86400
        token = users.add(args.name, args.role, args.tenant, expires_in_s=exp)
        print(token)
        print(f"user {args.name} ({args.role}, tenants {args.tenant}) created; the token above "
              "is shown once: store it now", file=sys.stderr)
        if args.role in ("dpo", "admin"):
            print(f"{args.role} export/erase needs a second factor: privtel users mfa-enrol "
                  f"{args.name}", file=sys.stderr)
        return 0
    return _run(args, go)


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%MZ")


def cmd_list(args: argparse.Namespace) -> int:
    def go(users: Users) -> int:
        rows = users.list()
        if args.json:
            for u in rows:
                print(orjson.dumps({"name": u.name, "role": u.role, "tenants": list(u.tenants),
                                    "token_id": u.token_id, "mfa": u.mfa,
                                    "created_at": u.created_at, "expires_at": u.expires_at,
                                    "revoked_at": u.revoked_at}).decode())
            return 0
        print(f"{'name':<20} {'role':<9} {'tenants':<20} {'token id':<17} {'mfa':<4} "
              f"{'expires':<17} revoked")
        for u in rows:
            print(f"{u.name:<20} {u.role:<9} {','.join(u.tenants):<20} {u.token_id:<17} "
                  f"{'yes' if u.mfa else 'no':<4} {_when(u.expires_at):<17} "
                  f"{_when(u.revoked_at)}")
        return 0
    return _run(args, go)


def cmd_revoke(args: argparse.Namespace) -> int:
    def go(users: Users) -> int:
        users.revoke(args.name)
        print(f"user {args.name} revoked")
        return 0
    return _run(args, go)


def cmd_mfa(args: argparse.Namespace) -> int:
    def go(users: Users) -> int:
        print(users.enrol_totp(args.name))
        print("load the URI above into an authenticator app (or make a QR code of it); "
              "it is shown once", file=sys.stderr)
        return 0
    return _run(args, go)


def cmd_totp_key(args: argparse.Namespace) -> int:
    write_private(args.file, os.urandom(32).hex().encode() + b"\n", exclusive=True)
    print(f"TOTP key written to {args.file} (mode 0600); start the API with --totp-key-file "
          f"{args.file}: secrets stored in clear are sealed at its first start")
    return 0
