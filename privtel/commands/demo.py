"""`privtel demo`: see `privtel.demo.run`."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from privtel import logs


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo", help="run broker, simulated devices, agent and collector on 127.0.0.1 and show "
        "records flowing end to end")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="keep store, keys and configs here (default: a temporary directory)")
    p.add_argument("--broker", default=None,
                   help="use this broker (mqtt://host:port, MQTT 5) instead of the embedded one")
    p.add_argument("--interval", type=float, default=5.0, help="poll interval in seconds")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="collector /metrics port on 127.0.0.1 (default: a free one)")
    p.add_argument("--prometheus", action="store_true",
                   help="also start a real Prometheus (if installed) scraping the demo's collector "
                   "and agent with the shipped alert rules, and print its URL")
    p.add_argument("--prometheus-port", type=int, default=0,
                   help="its port on 127.0.0.1 (default: a free one)")
    p.add_argument("--away-after", type=float, default=180.0,
                   help="seconds one simulated device answers before it goes away")
    p.add_argument("--away-for", type=float, default=420.0,
                   help="seconds it stays away (long enough for PrivtelDeviceDown to fire)")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from privtel.demo.run import DemoOptions, run_demo

    logs.setup(args.log_level)
    logging.getLogger("privtel.demo").setLevel(logging.INFO)
    if args.duration is not None and args.duration <= 0:
        raise ValueError("--duration must be positive")
    if args.away_after <= 0 or args.away_for <= 0:
        raise ValueError("--away-after and --away-for must be positive")
    options = DemoOptions(away_after_s=args.away_after, away_for_s=args.away_for,
                          prometheus=args.prometheus, prometheus_port=args.prometheus_port)
    try:
        summary = asyncio.run(run_demo(
            duration=args.duration, data_dir=args.data_dir, broker=args.broker,
            interval_s=args.interval, metrics_port=args.metrics_port, options=options))
    except KeyboardInterrupt:
        return 130
    print("--- privtel demo summary ---")
    for line in summary.lines():
        print(line)
    return 0 if summary.records_stored > 0 else 1
