"""`privtel tenant offboard|verify-report`: the end of a client's contract.

Offboarding runs on the operator's machine against the store, because it
touches what the API never holds: the tenant key files (`api serve
--tenant-keys`) and the broker's ACL and certificates (`privtel certs`). The
decision is still the matrix's: the API token's user must be an admin whose
scope covers the tenant, with the current TOTP code (the dry run too: it is the
same decision, and it shows what a tenant holds). Without `--execute` it is a
dry run that prints what would go and what would stay.

Broker side: the tenant's agents lose their ACL entries (Mosquitto denies
whatever no entry allows) and, where the CA key sits beside the ACL, their
certificates go on a CRL (`crl.pem`; the listener needs `crlfile` for it to
count). Mosquitto reads neither until it is told to: the command prints how.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from collector.audit import AuditLog
from collector.auth import Action, AuthError, Users, authorize
from collector.holds import valid_tenant
from collector.offboard import (
    OffboardError,
    Offboarding,
    report_digest,
    sign_report,
    verify_report,
)
from collector.store import open_db
from pipelines.config import require_private
from pipelines.keys import load_signing_key, load_verify_key
from plumbing.files import write_private
from privtel.commands.audit import read_audit_key
from privtel.commands.certs import _load_ca
from privtel.commands.keys import read_passphrase
from privtel.commands.query import read_token
from privtel.commands.users import read_totp_key, store_arg, totp_key_arg


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("tenant", help="tenant lifecycle: offboarding at contract end")
    sub = p.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    o = sub.add_parser("offboard", help="erase a tenant's data, keys and broker access "
                       "(admin; a dry run unless --execute)")
    o.add_argument("tenant")
    o.add_argument("--reason", required=True, help="contract reference, kept in the report")
    store_arg(o)
    o.add_argument("--token-file", type=Path, metavar="FILE",
                   help="file holding an admin's API token, mode 0600 (default: "
                   "$PRIVTEL_TOKEN)")
    o.add_argument("--totp", help="current TOTP code (prompted if omitted)")
    totp_key_arg(o)
    o.add_argument("--tenant-keys", type=Path, metavar="DIR",
                   help="the API's tenant key directory: the tenant's keys are destroyed")
    o.add_argument("--certs-dir", type=Path, metavar="DIR",
                   help="the directory `privtel certs` wrote (acl, ca.key, agent certs)")
    o.add_argument("--export", type=Path, metavar="DIR",
                   help="write the records as NDJSON here before they are erased")
    o.add_argument("--report", type=Path, metavar="FILE", help="signed completion report")
    o.add_argument("--report-key", type=Path, metavar="FILE",
                   help="Ed25519 private key (PEM, mode 0600) that signs the report")
    o.add_argument("--report-key-passphrase-file", type=Path, metavar="FILE")
    o.add_argument("--audit-key", type=Path, metavar="FILE",
                   help="the API's audit chain HMAC key, if it uses one")
    o.add_argument("--execute", action="store_true", help="act; without it, a dry run")
    o.set_defaults(func=cmd_offboard)
    v = sub.add_parser("verify-report", help="check an offboarding report's signature")
    v.add_argument("report", type=Path)
    v.add_argument("--public-key", type=Path, required=True, metavar="FILE",
                   help="the signing key's public half (PEM)")
    v.set_defaults(func=cmd_verify)


def revoke_acl(acl: Path, tenant: str) -> list[str]:
    """Drop the tenant's agents' blocks (`user <tenant>.<agent>` and its topic
    lines) from the ACL file; the users removed."""
    if not acl.exists():
        return []
    keep: list[str] = []
    gone: list[str] = []
    skipping = False
    for line in acl.read_text("utf-8").splitlines(keepends=True):
        if line.startswith("user "):
            skipping = line.startswith(f"user {tenant}.")
            if skipping:
                gone.append(line.strip().removeprefix("user "))
        elif not line.strip() and skipping:
            skipping = False  # the blank line that ends the block goes with it
            continue
        if not skipping:
            keep.append(line)
    if gone:
        tmp = acl.with_name(acl.name + ".tmp")
        tmp.write_text("".join(keep), "utf-8")
        os.chmod(tmp, acl.stat().st_mode & 0o777)
        os.replace(tmp, acl)
    return gone


def revoke_certs(d: Path, tenant: str) -> dict[str, Any]:
    """Put the tenant's agent certificates on the CA's CRL (`crl.pem`, kept across
    runs) and delete their key and certificate files."""
    certs = sorted(d.glob(f"agent-{tenant}.*.crt"))
    if not certs or not (d / "ca.key").exists():
        return {"revoked_serials": [], "crl": None}
    ca_key, ca_cert = _load_ca(d)
    now = dt.datetime.now(dt.UTC)
    crl_path = d / "crl.pem"
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
         .last_update(now).next_update(now + dt.timedelta(days=365)))
    if crl_path.exists():
        for old in x509.load_pem_x509_crl(crl_path.read_bytes()):
            b = b.add_revoked_certificate(old)
    serials = []
    for path in certs:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        serials.append(format(cert.serial_number, "x"))
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder()
                                      .serial_number(cert.serial_number)
                                      .revocation_date(now).build())
    crl = b.sign(ca_key, hashes.SHA256())
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    for path in certs:
        path.unlink()
        path.with_suffix(".key").unlink(missing_ok=True)
    return {"revoked_serials": serials, "crl": crl_path.name}


def cmd_offboard(args: argparse.Namespace) -> int:
    if not valid_tenant(args.tenant):
        raise ValueError("tenant must be a tenant name")
    if not args.store:
        raise ValueError("--store URL is required (or set PRIVTEL_STORE)")
    if args.execute and (args.report is None or args.report_key is None):
        raise ValueError("--execute needs --report FILE and --report-key FILE: the signed "
                         "report is the proof of what was done")
    key = None
    if args.report_key is not None:
        require_private(str(args.report_key), args.report_key.stat().st_mode)
        phrase = (None if args.report_key_passphrase_file is None
                  else read_passphrase(args.report_key_passphrase_file))
        key = load_signing_key(args.report_key.read_bytes(), phrase)
    db = open_db(args.store)
    try:
        users = Users(db, read_totp_key(args.totp_key_file))
        audit = AuditLog(db, read_audit_key(args.audit_key))
        try:
            p = users.authenticate(f"Bearer {read_token(args.token_file)}")
            authorize(p, Action.TENANT_OFFBOARD, (args.tenant,))
            code = args.totp if args.totp is not None else (
                getpass.getpass("TOTP code: ") if sys.stdin.isatty() else "")
            users.check_totp(p, code.strip())
        except AuthError as e:
            audit.append(actor="-", role="-", action="tenant.offboard",
                         tenants=(args.tenant,), request_id=os.urandom(8).hex(),
                         outcome="denied", detail={"reason": e.code})
            print(f"privtel: error: {e.reason}", file=sys.stderr)
            return 1
        rid = os.urandom(8).hex()
        off = Offboarding(db, key_dir=args.tenant_keys)
        if not args.execute:
            plan = off.plan(args.tenant)
            acl = args.certs_dir / "acl" if args.certs_dir else None
            users_acl = [] if acl is None or not acl.exists() else [
                ln.removeprefix("user ") for ln in acl.read_text().splitlines()
                if ln.startswith(f"user {args.tenant}.")]
            out = {"dry_run": True, "tenant": args.tenant, "erase": plan.erase,
                   "keep": {"legal_hold": plan.held, "legal_obligation": plan.legal_obligation},
                   "holds": plan.holds, "key_files": plan.key_files,
                   "keys_kept_because": plan.keys_kept_reason, "acl_users": users_acl}
            audit.append(actor=p.name, role=p.role, action="tenant.offboard",
                         tenants=(args.tenant,), request_id=rid, outcome="dry_run",
                         count=plan.erase_total, detail={"reason": args.reason})
            print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
            print("dry run: nothing changed; add --execute to offboard", file=sys.stderr)
            return 0
        plan = off.execute(args.tenant, actor=p.name, reason=args.reason,
                           export_dir=args.export)
        broker: dict[str, Any] = {"acl_users_removed": [], "revoked_serials": [], "crl": None}
        if args.certs_dir is not None:
            broker["acl_users_removed"] = revoke_acl(args.certs_dir / "acl", args.tenant)
            broker.update(revoke_certs(args.certs_dir, args.tenant))
        report = {**plan.report, "broker": broker, "request_id": rid}
        assert key is not None
        signed = sign_report(report, key)
        write_private(args.report, signed)
        digest = report_digest(signed)
        off.mark(args.tenant, actor=p.name, reason=args.reason, report_digest=digest)
        audit.append(actor=p.name, role=p.role, action="tenant.offboard",
                     tenants=(args.tenant,), request_id=rid, outcome="done",
                     count=plan.erase_total, detail={"reason": args.reason,
                                                     "report_sha256": digest,
                                                     "held": plan.held,
                                                     "keys_destroyed": len(
                                                         report["keys"]["destroyed"])})
    finally:
        db.close()
    print(f"tenant {args.tenant} offboarded: {plan.erase_total} record(s) erased, "
          f"{plan.held} kept by legal hold(s), {sum(plan.legal_obligation.values())} by a "
          f"legal obligation; report {args.report} (sha256 {digest})")
    if broker["acl_users_removed"] or broker["crl"]:
        print("broker: reload Mosquitto to apply the ACL and CRL (systemctl reload mosquitto, "
              "or kill -HUP its pid); the listener needs `crlfile "
              f"{args.certs_dir / 'crl.pem'}` for the revocation to count")
    print(f"collector: remove the [[agents]] entries of {args.tenant}'s agents from the "
          "collector config and reload it (SIGHUP), so no batch of theirs is accepted")
    if report["keys"]["destroyed"]:
        print("restart `privtel api serve`: it still holds the destroyed keys in memory")
    if plan.keys_kept_reason:
        print(f"tenant keys kept: {plan.keys_kept_reason}; offboard again once released")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    key = load_verify_key(args.public_key.read_bytes())
    try:
        report = verify_report(args.report.read_bytes(), key)
    except OffboardError as e:
        print(f"privtel: error: {e}", file=sys.stderr)
        return 1
    print(f"report verifies: tenant {report['tenant']} offboarded by {report['actor']}, "
          f"{report['erased_total']} record(s) erased")
    return 0
