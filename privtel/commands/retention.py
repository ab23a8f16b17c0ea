"""`privtel retention purge|check`: run the retention purge now, or validate a policy."""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import orjson

from collector.audit import AuditLog, read_key
from collector.parking import ParkingLot
from collector.retention import AuditSink, JsonlAuditLog, RetentionService
from collector.store import StoreError, StoreRetryableError, open_db, open_store
from pipelines.config import ConfigError
from pipelines.retention import OPERATIONAL, Policy, default_policy, parse_policy

EX_TEMPFAIL = 75


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("retention", help="retention policy and purge")
    sub = p.add_subparsers(dest="retention_command", required=True, metavar="ACTION")
    purge = sub.add_parser("purge", help="delete expired records now (or count them with "
                           "--dry-run); restricted records are kept")
    src = purge.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", metavar="URL", help="sqlite:///PATH or postgresql://... "
                     "(or set PRIVTEL_STORE and pass --store env)")
    src.add_argument("--config", type=Path, metavar="FILE",
                     help="collector config; its store, policy and audit log are used")
    purge.add_argument("--policy", type=Path, metavar="FILE",
                       help="retention policy TOML (default: the built-in policy)")
    purge.add_argument("--dry-run", action="store_true", help="count per class, delete nothing")
    purge.add_argument("--audit", type=Path, metavar="FILE",
                       help="append the audit entry to this JSON-lines file instead of the store's "
                       "hash-chained audit log")
    purge.add_argument("--audit-key", type=Path, metavar="FILE",
                       help="HMAC key of the store's audit chain (mode 0600), the one the API "
                       "and the collector use; with --config, the config's audit_key")
    purge.add_argument("--json", action="store_true", help="print the result as one JSON line")
    purge.set_defaults(func=purge_cmd)
    check = sub.add_parser("check", help="validate a retention policy, list its gaps and the "
                           "jurisdictions tenants name that it does not cover (exit 1 then)")
    check.add_argument("--policy", type=Path, metavar="FILE", required=True)
    check.add_argument("--tenants", type=Path, metavar="FILE", action="append", default=[],
                       help="a tenant config (TOML with [tenants.NAME] or [[tenants]] tables "
                       "naming a jurisdiction, e.g. a collector config); repeatable. The "
                       "policy's own [tenants] table is always checked")
    check.set_defaults(func=check_cmd)


def _policy(path: Path | None) -> Policy:
    if path is None:
        return default_policy()
    return parse_policy(path.read_text("utf-8"), str(path))


def _period(policy: Policy, klass: str) -> str:
    c = policy.classes.get(klass)
    if c is None:
        return "(not in policy)"
    return "contract end" if c.days is None else f"{c.days:g} days"


def purge_cmd(args: argparse.Namespace) -> int:
    url, policy_path, key_file = args.store, args.policy, args.audit_key
    jurisdictions: dict[str, str] = {}
    if args.config is not None:
        from collector import config as collector_config

        cfg = collector_config.load(args.config)
        url = cfg.store_url
        policy_path = policy_path or cfg.retention_policy
        key_file = key_file or cfg.audit_key_file
        jurisdictions = cfg.jurisdictions()
    elif url == "env":
        url = os.environ.get("PRIVTEL_STORE")
        if not url:
            print("privtel: error: --store env given but PRIVTEL_STORE is not set",
                  file=sys.stderr)
            return 2
    policy = _policy(policy_path)
    key = read_key(key_file)
    audit_db = None
    try:
        store = open_store(url)
        try:
            store.migrate()
            audit_db = open_db(url)
            audit: AuditSink = (JsonlAuditLog(args.audit) if args.audit
                                # the store's chain, keyed as the API and collector key it
                                else AuditLog(audit_db, key))
            service = RetentionService(store, policy_path=policy_path, audit=audit,
                                       jurisdictions=jurisdictions,
                                       parking=ParkingLot(audit_db))
            result = service.purge(dry_run=args.dry_run, trigger="on_demand")
        finally:
            store.close()
            if audit_db is not None:
                audit_db.close()
    except StoreError as e:
        print(f"privtel: error: {e}", file=sys.stderr)
        return EX_TEMPFAIL if isinstance(e, StoreRetryableError) else 2
    if args.json:
        print(orjson.dumps({"dry_run": result.dry_run, "now": result.now,
                            "deleted": result.deleted, "total": result.total,
                            "parked_batches": result.parked}).decode())
        return 0
    when = datetime.fromtimestamp(result.now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"retention purge{' (dry run)' if result.dry_run else ''} at {when}, "
          f"store {store.backend}")
    print(f"  {'class':<20} {'period':<16} {'records':>10}")
    for klass in sorted(set(policy.classes) | set(result.deleted)):
        print(f"  {klass:<20} {_period(policy, klass):<16} {result.deleted.get(klass, 0):>10}")
    verb = "would be deleted" if result.dry_run else "deleted"
    print(f"  {'total':<37} {result.total:>10} {verb}")
    print(f"  {'parked batches':<37} {result.parked:>10} {verb}")
    return 0


def tenant_jurisdictions(path: Path) -> dict[str, str]:
    """tenant -> jurisdiction from a config file's `[tenants.NAME]` or `[[tenants]]`
    (name/tenant and jurisdiction) tables; other tables are not this command's to judge."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(path), "", f"cannot read: {e}") from None
    raw = data.get("tenants", {})
    items = (raw.items() if isinstance(raw, dict) else
             ((t.get("name", t.get("tenant")), t) for t in raw if isinstance(t, dict))
             if isinstance(raw, list) else ())
    out = {}
    for name, t in items:
        if isinstance(name, str) and isinstance(t, dict) and isinstance(
                t.get("jurisdiction"), str):
            out[name] = t["jurisdiction"]
    return out


def uncovered(policy: Policy, tenants: dict[str, str]) -> dict[str, list[str]]:
    """Jurisdictions tenants name that no rule of `policy` names, with those tenants:
    their records would fall to catch-all rules or the default class."""
    known = policy.jurisdictions()
    out: dict[str, list[str]] = {}
    for tenant, jur in sorted(tenants.items()):
        if jur not in known:
            out.setdefault(jur, []).append(tenant)
    return out


def check_cmd(args: argparse.Namespace) -> int:
    try:
        policy = _policy(args.policy)
        tenants = dict(policy.tenants)
        for path in args.tenants:
            tenants.update(tenant_jurisdictions(path))
    except ConfigError as e:
        print(f"privtel: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.policy}: valid; {len(policy.classes)} classes, {len(policy.rules)} rule "
          f"patterns, default class {policy.default.name!r}")
    for c in policy.classes.values():
        print(f"  {c.name:<20} {_period(policy, c.name):<16} {c.legal_basis}")
    for name in OPERATIONAL:
        o = policy.operational.get(name)
        print(f"  {name:<20} {'not set' if o is None else f'{o.days:g} days':<16} "
              f"{'' if o is None else o.legal_basis}")
    for gap in policy.gaps:
        print(f"  gap: {gap}")
    missing = uncovered(policy, tenants)
    for jur, names in missing.items():
        print(f"  uncovered jurisdiction {jur!r}: no rule names it; named by tenant(s) "
              f"{', '.join(names)}")
    return 1 if missing else 0
