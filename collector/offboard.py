"""Offboarding at contract end: everything of a tenant goes, except what the law
keeps, and a signed report says what went and what stayed.

What stays: records under a legal hold (`records.held`, see `collector.holds`)
and records whose legal basis is a legal obligation (a class such as
"billing records, legal obligation (NDPA s.25(1)(c))": the basis is stamped on
each record at ingest, so this needs no policy file). Everything else of the
tenant is deleted with its derived rows (address index, annotations, batch
rows no kept record refers to). Once the tenant is in `offboarded_tenants`,
the purge treats its `contract_end` records (no fixed expiry) as expired, so a
record kept by a hold goes at the first purge after the hold is released.

The tenant's pseudonymisation keys on the collector side are destroyed
(crypto-shredding): what a legal obligation keeps can then no longer be tied
back to an address. While a hold is in force the keys stay, because a dispute
may need the subject found; offboarding again after the release destroys them.

Broker access (ACL entries, certificates) is the command's part
(`privtel tenant offboard`), which knows the files `privtel certs` writes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from collector import holds
from collector.store import Cursor, Db
from pipelines.keys import signing_key_id
from plumbing.files import open_private

REPORT_FORMAT = "privtel-offboard-report/1"
LEGAL_OBLIGATION = "%legal obligation%"
_DERIVED = ("record_addresses", "annotations", "indexed_records")


class OffboardError(ValueError):
    """Offboarding cannot go ahead; the message says what to fix."""


@dataclass
class Plan:
    """What offboarding does (a dry run stops here) or did."""

    tenant: str
    erase: dict[str, int]  # retention class -> records to delete
    legal_obligation: dict[str, int]  # class -> records kept by a legal-obligation basis
    held: int  # records kept by a legal hold
    holds: list[str]  # ids of the holds in force
    key_files: list[str]
    keys_kept_reason: str | None = None
    export: dict[str, Any] | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def erase_total(self) -> int:
        return sum(self.erase.values())


def _kept(cur: Cursor) -> str:
    t = cur.dialect.true
    return f"(held = {t} OR LOWER(legal_basis) LIKE ?)"


def _by_class(cur: Cursor, tenant: str, where: str, args: list[Any]) -> dict[str, int]:
    rows = cur.execute(f"SELECT retention_class, COUNT(*) FROM records WHERE tenant = ? AND "
                       f"{where} GROUP BY retention_class", [tenant, *args]).fetchall()
    return {str(c): int(n) for c, n in rows}


def key_files(key_dir: Path | None, tenant: str) -> list[Path]:
    """The tenant's key and the epoch archives rotation left beside it."""
    if key_dir is None or not key_dir.is_dir():
        return []
    pat = re.compile(rf"^tenant-{re.escape(tenant)}\.key(\.epoch\d+)?$")
    return sorted(p for p in key_dir.iterdir() if pat.match(p.name))


def shred(path: Path) -> None:
    """Overwrite, flush and unlink. On a copy-on-write or journalled file system
    the old blocks may survive the overwrite: the unlink is what counts there,
    and backups of the key directory must be rotated out (docs/dpo.md)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, os.urandom(max(size, 1)))
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()


def erase_rows(cur: Cursor, tenant: str, where: str, args: list[Any]) -> None:
    """Delete the tenant's records matching `where`, then every derived row and
    batch row that no longer has a record behind it."""
    cur.execute(f"DELETE FROM records WHERE tenant = ? AND {where}", [tenant, *args])
    for table in _DERIVED:
        cur.execute(f"DELETE FROM {table} WHERE tenant = ? AND record_id NOT IN "
                    "(SELECT id FROM records WHERE tenant = ?)", (tenant, tenant))
    cur.execute("DELETE FROM batches WHERE tenant = ? AND NOT EXISTS (SELECT 1 FROM records r "
                "WHERE r.tenant = batches.tenant AND r.agent_id = batches.agent_id AND "
                "r.batch_id = batches.batch_id)", (tenant,))


def purge_contract_ended(cur: Cursor, *, dry_run: bool = False) -> dict[str, int]:
    """Records of offboarded tenants with no fixed expiry (`contract_end`), not held:
    the contract has ended, so they are expired. Per class, what went (or would)."""
    tenants = [str(t) for (t,) in cur.execute("SELECT tenant FROM offboarded_tenants"
                                              ).fetchall()]
    out: dict[str, int] = {}
    where = f"expires_at IS NULL AND held = {cur.dialect.false}"
    for t in tenants:
        for k, n in _by_class(cur, t, where, []).items():
            out[k] = out.get(k, 0) + n
        if not dry_run:
            erase_rows(cur, t, where, [])
    return out


def export_records(cur: Cursor, tenant: str, where: str, args: list[Any], path: Path
                   ) -> dict[str, Any]:
    """The records about to go as NDJSON (mode 0600), for handing back to the client."""
    digest, n = hashlib.sha256(), 0
    fd = open_private(path, exclusive=True)
    with os.fdopen(fd, "wb") as f:
        for row in _rows(cur, tenant, where, args):
            line = orjson.dumps(row, option=orjson.OPT_SORT_KEYS) + b"\n"
            f.write(line)
            digest.update(line)
            n += 1
    return {"file": path.name, "records": n, "sha256": digest.hexdigest()}


def _rows(cur: Cursor, tenant: str, where: str, args: list[Any]) -> Iterator[dict[str, Any]]:
    rows = cur.execute("SELECT id, site, device, kind, name, ts, fields, retention_class "
                       f"FROM records WHERE tenant = ? AND {where} ORDER BY ts, id",
                       [tenant, *args]).fetchall()
    for r in rows:
        yield {"id": r[0], "tenant": tenant, "site": r[1], "device": r[2], "kind": r[3],
               "name": r[4], "ts": float(r[5]), "fields": cur.dialect.json(r[6]),
               "retention_class": r[7]}


class Offboarding:
    def __init__(self, db: Db, *, key_dir: Path | None = None) -> None:
        self.db, self.key_dir = db, key_dir

    def plan(self, tenant: str) -> Plan:
        with self.db.tx(write=True) as cur:
            holds.sweep(cur)
            standing = [h.id for h in holds.active_holds(cur, tenant)]
            kept = _kept(cur)
            erase = _by_class(cur, tenant, f"NOT {kept}", [LEGAL_OBLIGATION])
            legal = _by_class(cur, tenant, f"held = {cur.dialect.false} AND "
                              "LOWER(legal_basis) LIKE ?", [LEGAL_OBLIGATION])
            held = holds.held_counts(cur).get(tenant, 0)
        files = [p.name for p in key_files(self.key_dir, tenant)]
        why = f"{len(standing)} legal hold(s) in force" if standing else None
        return Plan(tenant, erase, legal, held, standing, files, why)

    def execute(self, tenant: str, *, actor: str, reason: str,
                export_dir: Path | None = None, now: float | None = None) -> Plan:
        """Erase (after exporting, with `export_dir`), mark the tenant offboarded,
        destroy its keys unless a hold keeps them. The report is left to sign."""
        started = time.time() if now is None else now
        plan = self.plan(tenant)
        with self.db.tx(write=True) as cur:
            kept = _kept(cur)
            where, args = f"NOT {kept}", [LEGAL_OBLIGATION]
            if export_dir is not None:
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
                plan.export = export_records(cur, tenant, where, args,
                                             export_dir / f"{tenant}-{stamp}.ndjson")
            erase_rows(cur, tenant, where, args)
            remaining = int(cur.execute("SELECT COUNT(*) FROM records WHERE tenant = ? AND NOT "
                                        f"{kept}", (tenant, LEGAL_OBLIGATION)).fetchone()[0])
        destroyed: list[str] = []
        if plan.keys_kept_reason is None:
            for p in key_files(self.key_dir, tenant):
                shred(p)
                destroyed.append(p.name)
        plan.report = {
            "format": REPORT_FORMAT, "tenant": tenant, "reason": reason, "actor": actor,
            "started_at": started, "finished_at": time.time() if now is None else now,
            "erased": plan.erase, "erased_total": plan.erase_total,
            "kept": {"legal_hold": plan.held, "legal_hold_ids": plan.holds,
                     "legal_obligation": plan.legal_obligation},
            "export": plan.export, "unexpected_remaining": remaining,
            "keys": {"destroyed": destroyed,
                     "kept": [] if destroyed else plan.key_files,
                     "kept_because": plan.keys_kept_reason},
        }
        return plan

    def mark(self, tenant: str, *, actor: str, reason: str, report_digest: str,
             now: float | None = None) -> None:
        """Record the tenant as offboarded: from now on `contract_end` means expired."""
        with self.db.tx(write=True) as cur:
            cur.execute("INSERT INTO offboarded_tenants (tenant, ts, actor, reason, "
                        "report_digest) VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant) DO UPDATE "
                        "SET ts = excluded.ts, actor = excluded.actor, reason = excluded.reason,"
                        " report_digest = excluded.report_digest",
                        (tenant, time.time() if now is None else now, actor, reason,
                         report_digest))


def _canonical(report: dict[str, Any]) -> bytes:
    return orjson.dumps(report, option=orjson.OPT_SORT_KEYS)


def sign_report(report: dict[str, Any], key: ed25519.Ed25519PrivateKey) -> bytes:
    """The report with an Ed25519 signature over its canonical JSON."""
    sig = key.sign(_canonical(report))
    return orjson.dumps({"report": report, "key_id": signing_key_id(key),
                         "signature": base64.b64encode(sig).decode("ascii")},
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def report_digest(signed: bytes) -> str:
    return hashlib.sha256(signed).hexdigest()


def verify_report(data: bytes, key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    """The report if the signature holds for `key`; OffboardError otherwise."""
    try:
        doc = orjson.loads(data)
        report, sig = doc["report"], base64.b64decode(doc["signature"], validate=True)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise OffboardError("not an offboarding report (JSON with report and signature)"
                            ) from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise OffboardError(f"report format must be {REPORT_FORMAT}")
    if doc.get("key_id") != signing_key_id(key):
        raise OffboardError("report was signed with another key")
    try:
        key.verify(sig, _canonical(report))
    except InvalidSignature:
        raise OffboardError("report signature does not verify: it was changed after "
                            "signing") from None
    return report
