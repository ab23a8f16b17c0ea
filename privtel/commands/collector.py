"""`privtel collector run`, and `privtel collector parked list|replay|purge`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from privtel import logs
from privtel.runner import run_until_signal

EX_TEMPFAIL = 75


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("collector", help="run the central collector")
    sub = p.add_subparsers(dest="collector_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="ingest, store and expose metrics until SIGTERM")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--log-level", default="info")
    run.set_defaults(func=_run)

    parked = sub.add_parser("parked", help="batches parked for a fixable cause (wrong key, "
                            "unknown agent, residency...): list, replay after the fix, purge")
    psub = parked.add_subparsers(dest="parked_command", required=True, metavar="ACTION")
    ls = psub.add_parser("list", help="parked batches, oldest first (never their content)")
    ls.add_argument("--config", required=True, type=Path)
    ls.add_argument("--reason", help="only this reason")
    ls.add_argument("--tenant", help="only this tenant")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=_list)
    rp = psub.add_parser("replay", help="run parked batches through the same checks again; "
                         "each is stored at most once")
    rp.add_argument("--config", required=True, type=Path)
    which = rp.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", dest="ids", metavar="ID")
    which.add_argument("--reason", help="every batch parked for this reason")
    which.add_argument("--all", action="store_true", help="every parked batch")
    rp.add_argument("--log-level", default="warning")
    rp.set_defaults(func=_replay)
    pg = psub.add_parser("purge", help="delete parked batches by id or by age")
    pg.add_argument("--config", required=True, type=Path)
    which = pg.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", dest="ids", metavar="ID")
    which.add_argument("--older-than", type=float, metavar="DAYS",
                       help="parked more than DAYS days ago")
    pg.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    pg.set_defaults(func=_purge)


def _run(args: argparse.Namespace) -> int:
    from collector import config
    from collector.runtime import Collector

    logs.setup(args.log_level)
    cfg = config.load(args.config)
    run_until_signal(Collector(cfg).run)
    return 0


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _list(args: argparse.Namespace) -> int:
    from collector import config
    from collector.parking import ParkingLot
    from collector.store import open_db

    cfg = config.load(args.config)
    db = open_db(cfg.store_url)
    try:
        rows = ParkingLot(db).find(reason=args.reason, tenant=args.tenant)
    finally:
        db.close()
    for r in rows:
        if args.json:
            print(orjson.dumps({k: getattr(r, k) for k in r.__slots__}).decode())
        else:
            print(f"{r.id}  {_when(r.parked_at)}  {r.reason:<14} {r.tenant or '-'}/"
                  f"{r.agent_id or '-'}  batch {r.batch_id or '-'}  {r.size} bytes  "
                  f"x{r.attempts}  {r.detail}")
    if not args.json:
        print(f"{len(rows)} parked batch(es)", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from collector import config
    from collector.ingest import SinkFailed
    from collector.replay import Replayer

    logs.setup(args.log_level)
    cfg = config.load(args.config)
    with Replayer(cfg) as r:
        ids = args.ids or [p.id for p in r.parking.find(reason=args.reason)]
        try:
            done = asyncio.run(r.replay(ids))
        except SinkFailed as e:
            print(f"privtel: error: the store failed ({e}); the rest stays parked, retry "
                  "later", file=sys.stderr)
            return EX_TEMPFAIL
        counts: dict[str, int] = {}
        for d in done:
            counts[d.outcome] = counts.get(d.outcome, 0) + 1
            print(f"{d.id}  {d.outcome}{'  (still parked)' if d.parked else ''}")
        r.audit.record("collector.parked.replay", result="ok", total=len(done),
                       outcomes=counts)
    print(f"replayed {len(done)}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
          file=sys.stderr)
    return 0


def _purge(args: argparse.Namespace) -> int:
    from collector import config
    from collector.audit import AuditLog, read_key
    from collector.parking import ParkingLot
    from collector.store import open_db

    cfg = config.load(args.config)
    db = open_db(cfg.store_url)
    try:
        before = None if args.older_than is None else time.time() - args.older_than * 86400
        n = ParkingLot(db).purge(ids=args.ids or (), parked_before=before, dry_run=args.dry_run)
        AuditLog(db, read_key(cfg.audit_key_file)).record(
            "collector.parked.purge", result="ok", total=n, dry_run=args.dry_run,
            ids=len(args.ids or ()), older_than_days=args.older_than)
    finally:
        db.close()
    print(f"{n} parked batch(es) {'would be ' if args.dry_run else ''}deleted")
    return 0
