"""`privtel collector run`."""

from __future__ import annotations

import argparse
from pathlib import Path

from privtel import logs
from privtel.runner import run_until_signal


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("collector", help="run the central collector")
    sub = p.add_subparsers(dest="collector_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="ingest, store and expose metrics until SIGTERM")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--log-level", default="info")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from collector import config
    from collector.runtime import Collector

    logs.setup(args.log_level)
    cfg = config.load(args.config)
    run_until_signal(Collector(cfg).run)
    return 0
