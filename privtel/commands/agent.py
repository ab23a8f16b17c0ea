"""`privtel agent run|poll-once`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import orjson

from privtel import logs
from privtel.runner import run_until_signal


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("agent", help="run the edge agent")
    sub = p.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="poll, pseudonymise, seal, spool and ship until SIGTERM")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--log-level", default="info")
    run.set_defaults(func=_run)
    once = sub.add_parser("poll-once", help="poll every device once and print the records "
                          "that would be shipped (pseudonymised) as JSON lines; sends nothing")
    once.add_argument("--config", required=True, type=Path)
    once.add_argument("--log-level", default="warning")
    once.set_defaults(func=_poll_once)


def _run(args: argparse.Namespace) -> int:
    from agents import config
    from agents.runtime import Agent

    logs.setup(args.log_level)
    cfg = config.load(args.config)
    run_until_signal(Agent(cfg).run)
    return 0


def _poll_once(args: argparse.Namespace) -> int:
    from agents import config
    from agents.runtime import poll_once

    logs.setup(args.log_level)
    cfg = config.load(args.config)
    records = asyncio.run(poll_once(cfg))
    out = sys.stdout.buffer
    for r in records:
        out.write(orjson.dumps(r) + b"\n")
    out.flush()
    down = [r for r in records if r["name"] == "device.health" and not r["fields"].get("up")]
    return 1 if down else 0
