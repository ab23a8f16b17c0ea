"""Running a Grafana dashboard's queries on a real Prometheus, as Grafana would.

Variables are resolved in order from their own `label_values` queries (All is
`.*`, as the dashboards' allValue says); `$__rate_interval` becomes a window a
few scrape intervals long. Imported by basename (tests have no packages).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privtel.demo.prometheus import Prometheus

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "grafana" /
                     "dashboards").glob("*.json"))

# Series the dashboards use that other items of issue 13 expose; a panel whose every
# empty query uses one of these may be empty on today's demo.
TO_COME = {
    "privtel_agent_up": "agent heartbeats (issue 13 item 1)",
    "privtel_agent_last_seen_timestamp_seconds": "agent heartbeats (issue 13 item 1)",
    "privtel_interface_in_packets_total": "packet counters (issue 13 item 5)",
    "privtel_interface_out_packets_total": "packet counters (issue 13 item 5)",
}

# (dashboard uid, panel title[, query refId]): why the demo leaves it empty.
DEMO_EMPTY: dict[tuple[str, ...], str] = {
    ("privtel-agent", "Records: polled, stored, dropped", "B"):
        "the demo's agent drops no record",
    ("privtel-collector", "Rejected batches by reason"):
        "the demo's agent is known and its batches are valid: nothing is rejected",
    ("privtel-collector", "Quarantined by reason"): "nothing is quarantined in the demo",
    ("privtel-collector", "Remote write samples"): "the demo configures no remote write",
    ("privtel-collector", "Records held by retention class"):
        "read from the store every 60 s; the first read, at start, found it empty",
    ("privtel-collector", "Retention purges"): "the demo's first purge is an hour away",
    ("privtel-collector", "Records without a retention rule"):
        "the demo runs without a retention policy, so nothing is unmatched",
    ("privtel-device", "Protocol, profile and failure reason", "B"):
        "the device shown answers its polls: it has no failure reason",
    ("privtel-device", "Memory"):
        "memory comes from the SSH profiles; the device shown (most interfaces) is SNMP",
    ("privtel-agent", "Syslog and trap records stored"):
        "the demo runs without a retention policy, so no record is classed logs or "
        "security_events; and it has no trap source",
}
RATE_INTERVAL = "30s"


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    expr: str
    instant: bool


def allowed_empty(q: Query) -> bool:
    return (q.dashboard, q.panel) in DEMO_EMPTY or (q.dashboard, q.panel, q.ref) in DEMO_EMPTY


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def substitute(expr: str, values: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    return re.sub(r"\$(\w+)", lambda mm: values[mm.group(1)], expr)


def label_values(prom: Prometheus, query: str, values: dict[str, str]) -> list[str]:
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", substitute(query, values))
    assert m, f"not a label_values query: {query}"
    series = prom.api("series", **{"match[]": m.group(1), "start": time.time() - 600})
    return sorted({s[m.group(2)] for s in series if m.group(2) in s})


def resolve(prom: Prometheus, d: dict[str, Any], pick: dict[str, str]) -> dict[str, str]:
    """Every variable of `d`, in order: All (`.*`) where allowed, else the value `pick`
    ranks first (a PromQL `count by (<name>)` query), else the first value."""
    values: dict[str, str] = {}
    for v in d["templating"]["list"]:
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        found = label_values(prom, q, values)
        assert found, f"{d['uid']}: variable ${v['name']} ({q}) has no value on the demo"
        if v.get("includeAll"):
            values[v["name"]] = v.get("allValue") or ".*"
        elif v["name"] in pick:
            ranked = sorted(prom.query(substitute(pick[v["name"]], values)),
                            key=lambda r: -float(r["value"][1]))
            best = [r["metric"][v["name"]] for r in ranked if r["metric"].get(v["name"]) in found]
            values[v["name"]] = best[0] if best else found[0]
        else:
            values[v["name"]] = found[0]
    return values


def queries(d: dict[str, Any], values: dict[str, str]) -> list[Query]:
    out = []
    for p in d["panels"]:
        for t in p["targets"]:
            out.append(Query(d["uid"], p["title"], t["refId"], substitute(t["expr"], values),
                             bool(t.get("instant"))))
    return out


def run(prom: Prometheus, q: Query, window_s: float = 300.0) -> list[dict[str, Any]]:
    """What the panel would draw: an instant vector, or a range over the last minutes."""
    if q.instant:
        return prom.query(q.expr)
    now = time.time()
    return list(prom.api("query_range", query=q.expr, start=now - window_s, end=now,
                         step="5s")["result"])
