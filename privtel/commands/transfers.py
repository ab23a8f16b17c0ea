"""`privtel transfers`: every cross-border flow the configuration allows, with its
safeguard, for the DPO's register of international transfers (NDPA s.41-43,
POPIA s.72, GDPR ch. V).

A flow is (tenant, from region, to region) where the regions differ:
- from an agent's site (`[residency] region`) to each region its
  `[[mqtt.routes]]` may send to (every allowed route counts, not only the one
  in use: a failover is a transfer too);
- from a tenant's home region to a collector that processes it (collector
  config `[collector] region`, and `[tenants.<tenant>] home` with the
  `regions` the contract allows: the same keys the collector enforces).
Each is matched with `[[safeguards]]` of the collector config (`from`, `to`,
`basis` such as "adequacy decision ..." or "contract clause ..."). A flow with
no safeguard is listed as such and the command exits 1: the register is
incomplete until someone fixes the configuration or the contract.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from agents import config as agent_config
from collector import config as collector_config


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("transfers", help="list the cross-border flows the "
                              "configuration allows, with their safeguards (DPO register)")
    p.add_argument("--collector-config", type=Path, required=True, metavar="FILE")
    p.add_argument("--agent-config", type=Path, action="append", default=[], metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_transfers)


def _collector(path: Path) -> tuple[str | None, dict[str, dict[str, Any]],
                                    Mapping[tuple[str, str], str]]:
    """Region, tenants and safeguards as the collector itself reads them."""
    cfg = collector_config.load(path)
    tenants = {t.name: {"home": t.home, "regions": sorted(t.regions or ())}
               for t in cfg.tenants.values()}
    return cfg.region, tenants, cfg.safeguards


def flows(collector: Path, agents: list[Path]) -> list[dict[str, Any]]:
    region, tenants, safeguards = _collector(collector)
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}

    def add(tenant: str, src: str | None, dst: str | None, via: str) -> None:
        if not src or not dst or src == dst:
            return
        key = (tenant, src, dst)
        if key not in seen:
            seen[key] = {"tenant": tenant, "from": src, "to": dst, "via": [],
                         "safeguard": safeguards.get((src, dst))}
        seen[key]["via"].append(via)

    for tenant, t in sorted(tenants.items()):
        if region is not None and region in t.get("regions", []):
            add(tenant, t.get("home"), region, f"collector {collector.name}")
    for path in agents:
        cfg = agent_config.load(path)
        r = cfg.residency
        for route in r.routes:
            if route.region in r.allowed_regions:
                add(cfg.tenant, r.region, route.region, f"agent {cfg.agent_id} route "
                    f"{route.url}" + (" (in use)" if route == r.route else " (failover)"))
    return sorted(seen.values(), key=lambda f: (f["tenant"], f["from"], f["to"]))


def cmd_transfers(args: argparse.Namespace) -> int:
    out = flows(args.collector_config, args.agent_config)
    missing = [f for f in out if f["safeguard"] is None]
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"{'tenant':<16} {'from':<8} {'to':<8} safeguard")
        for f in out:
            print(f"{f['tenant']:<16} {f['from']:<8} {f['to']:<8} "
                  f"{f['safeguard'] or 'NONE: no safeguard configured'}")
            for v in f["via"]:
                print(f"{'':<34}via {v}")
        if not out:
            print("no cross-border flow: every tenant is processed in its own region")
    if missing:
        print(f"privtel: error: {len(missing)} flow(s) without a safeguard; add "
              "[[residency.safeguards]] (from, to, basis) or change the routes", file=sys.stderr)
        return 1
    return 0
