"""Privacy commands: `scan-leaks` (engine: collector/leakscan.py), `pseudonymise`,
`reidentify` (its log: `audit verify --file`).

None of them ever prints a raw address except `reidentify`, whose whole point
is to show one to the privileged key holder, after writing who, when, what and
why to the hash-chained audit log (and refusing if it cannot).
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import getpass
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from agents.tenantkeys import rotate_tenant_key_file
from collector import leakscan
from pipelines import auditchain
from pipelines.config import ConfigError, require_private
from pipelines.pseudonym import PrivacyPolicy, PseudonymError, Pseudonymiser
from pipelines.pseudonym.classes import ALL as CLASSES
from pipelines.pseudonym.classes import parse_classes
from pipelines.pseudonym.reverse import Reidentifier
from plumbing.keyfiles import read_tenant_key
from privtel.commands.query import read_token

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

    p = sub.add_parser("pseudonymise", help="pseudonymise every identifier in stdin to stdout",
                       description="For sharing a log with a vendor: every identifier in the "
                       "text (addresses, MACs, login names, e-mails, phone numbers, host "
                       "names) is replaced with the tenant's pseudonym or token.")
    p.add_argument("--classes", default="all", metavar="LIST",
                   help=f"identifier classes to replace, comma-separated (default all: "
                   f"{','.join(CLASSES)})")
    p.add_argument("--public-names", metavar="FILE",
                   help="names kept in clear (one a line, *.domain for a suffix), as the "
                   "privacy policy's public_names")
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



def _policy(args: argparse.Namespace, classes: frozenset[str] | None = None,
            public_names: tuple[str, ...] = (), **modes: str) -> PrivacyPolicy:
    extra: dict[str, Any] = {}
    if classes is not None:
        extra["classes"] = classes
    try:
        return PrivacyPolicy(modes=dict(modes), preserve_prefix_v4=args.preserve_prefix_v4,
                             preserve_prefix_v6=args.preserve_prefix_v6,
                             public_names=public_names, **extra)
    except PseudonymError as e:
        raise ValueError(str(e)) from None


def cmd_pseudonymise(args: argparse.Namespace) -> int:
    key = read_tenant_key(Path(args.key_file), args.epoch)
    public: tuple[str, ...] = ()
    if args.public_names:
        lines = (n.split("#", 1)[0].strip()
                 for n in Path(args.public_names).read_text().splitlines())
        public = tuple(n for n in lines if n)
    p = Pseudonymiser(key, _policy(args, classes=parse_classes(args.classes),
                                   public_names=public, text_ip=args.mode, mac=args.mode))
    out = sys.stdout.buffer
    for raw in sys.stdin.buffer:
        # bytes that are not UTF-8 pass through as they are; addresses are ASCII
        line = raw.decode("utf-8", "surrogateescape")
        out.write(p.text(line).encode("utf-8", "surrogateescape"))
    out.flush()
    return 0


def cmd_scan_leaks(args: argparse.Namespace) -> int:
    wanted = leakscan.load_addresses(args.addresses) if args.addresses else None
    reports = leakscan.scan_paths(args.paths, wanted, args.headers, args.pg_schema)
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
    token = read_token(args.token_file)
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
