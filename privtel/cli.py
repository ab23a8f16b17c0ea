"""`privtel` entry point: each command group lives in its own module under
`privtel/commands/` and registers itself, so adding a command touches one file."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from privtel import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privtel", description="privtel: managed-network telemetry collection with "
        "privacy-preserving ingestion (agent, collector, demo and operator tools).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from collector.store import StoreError
        from pipelines.config import ConfigError

        if isinstance(e, ConfigError | StoreError | FileNotFoundError | PermissionError
                      | ValueError):
            print(f"privtel: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
