"""Writes deploy/grafana/dashboards/*.json: the dashboards are data, built here once.

Run `python deploy/grafana/build_dashboards.py` after editing; a test checks the
committed JSON is what this writes. Every series is read `max without
(instance)`, so two collector workers exposing one device show it once, and
every rate uses `$__rate_interval` so a panel follows the scrape interval.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards"
DS = {"type": "prometheus", "uid": "privtel-prometheus"}
RI = "$__rate_interval"
F = 'tenant=~"$tenant",site=~"$site"'                       # fleet filter
D = f'{F},device="$device"'                                  # one device
DI = f'{D},ifname=~"$ifname"'                                # its chosen interfaces
A = 'tenant=~"$tenant",site=~"$site",agent=~"$agent"'        # agents (scrape target labels)
W = 'instance=~"$instance"'                                  # collector workers
DEVICE_LINK = ("/d/privtel-device/privtel-device?var-tenant=${__data.fields.tenant}"
               "&var-site=${__data.fields.site}&var-device=${__data.fields.device}")
OPER = {"1": ("up", "green"), "2": ("down", "red"), "3": ("testing", "blue"),
        "4": ("unknown", "purple"), "5": ("dormant", "yellow"),
        "6": ("notPresent", "orange"), "7": ("lowerLayerDown", "dark-red")}
UP_MAP = {"0": ("DOWN", "red"), "1": ("UP", "green")}


def m(s: str) -> str:
    """`max without (instance) (s)`: one series per device however many workers."""
    return f"max without (instance) ({s})"


def var(name: str, label: str, query: str, *, all_: bool = True) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
            "refresh": 2, "includeAll": all_, "multi": all_,
            "allValue": ".*" if all_ else None, "current": {}, "sort": 1}


def mappings(values: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"type": "value", "options": {k: {"text": t, "color": c}
                                          for k, (t, c) in values.items()}}]


class Board:
    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = self.row_h = 0

    def add(self, kind: str, title: str, w: int, h: int, *targets: str | tuple[str, str],
            unit: str | None = None, table: bool = False, desc: str = "",
            maps: dict[str, tuple[str, str]] | None = None, link: bool = False,
            legend: str = "", extra: dict[str, Any] | None = None) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        tg = []
        for n, t in enumerate(targets):
            expr, leg = (t, legend) if isinstance(t, str) else t
            tg.append({"datasource": DS, "expr": expr, "legendFormat": leg,
                       "refId": chr(65 + n), "instant": table or kind == "stat",
                       "range": not (table or kind == "stat"),
                       **({"format": "table"} if table else {})})
        defaults: dict[str, Any] = {}
        if unit:
            defaults["unit"] = unit
        if maps:
            defaults["mappings"] = mappings(maps)
        if link:
            defaults["links"] = [{"title": "Device", "url": DEVICE_LINK}]
        p: dict[str, Any] = {
            "id": len(self.panels) + 1, "type": kind, "title": title, "description": desc,
            "datasource": DS, "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "targets": tg, "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {}}
        if table and len(tg) > 1:
            p["transformations"] = [{"id": "merge", "options": {}}]
        if table:
            p["transformations"] = [*p.get("transformations", []), {
                "id": "organize", "options": {"excludeByName": {"Time": True}}}]
        p.update(extra or {})
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)


def dashboard(uid: str, title: str, desc: str, variables: list[dict[str, Any]],
              board: Board, links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"uid": uid, "title": title, "description": desc, "tags": ["privtel"],
            "timezone": "utc", "schemaVersion": 39, "version": 1, "editable": True,
            "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": variables}, "annotations": {"list": []},
            "links": links or [], "panels": board.panels}


def rate(counter: str, sel: str) -> str:
    return f"rate(privtel_interface_{counter}_total{{{sel}}}[{RI}])"


def utilisation(direction: str, sel: str) -> str:
    return (f"rate(privtel_interface_{direction}_octets_total{{{sel}}}[{RI}]) * 8 "
            f"/ (privtel_interface_speed_bits_per_second{{{sel}}} > 0)")


def ratio(what: str, direction: str, sel: str) -> str:
    """Errors or discards over packets (all casts)."""
    return (f"rate(privtel_interface_{direction}_{what}_total{{{sel}}}[{RI}]) / ignoring (cast) "
            f"(sum without (cast) (rate(privtel_interface_{direction}_packets_total{{{sel}}}"
            f"[{RI}])) > 0)")


def fleet() -> dict[str, Any]:
    b = Board()
    b.add("stat", "Devices up", 4, 4, f"count({m(f'privtel_device_up{{{F}}}')} == 1) or vector(0)")
    b.add("stat", "Devices down", 4, 4,
          f"count({m(f'privtel_device_up{{{F}}}')} == 0) or vector(0)",
          extra={"fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": [
              {"color": "green", "value": None}, {"color": "red", "value": 1}]}},
              "overrides": []}})
    b.add("stat", "Agents up", 4, 4,
          f"sum({m(f'privtel_agent_up{{{F}}}')}) or vector(0)",
          desc="Agents whose batches or heartbeats arrive within their allowed silence.")
    b.add("stat", "Polls older than 5 min", 4, 4,
          f"count(time() - {m(f'privtel_device_last_poll_timestamp_seconds{{{F}}}')} > 300) "
          "or vector(0)")
    b.add("stat", "Interfaces down (admin up)", 4, 4,
          f"count(({m(f'privtel_interface_oper_status{{{F}}}')} != 1) and on (tenant, site, "
          f"device, ifname) ({m(f'privtel_interface_admin_status{{{F}}}')} == 1)) or vector(0)")
    b.add("stat", "Devices reporting", 4, 4, f"count({m(f'privtel_device_info{{{F}}}')})")
    b.add("table", "Devices down", 12, 8,
          (f"{m(f'privtel_device_poll_failures{{{F}}}')} == 1", ""),
          (f"time() - {m(f'privtel_device_last_poll_timestamp_seconds{{{F}}}')} and on "
           f"(tenant, site, device) ({m(f'privtel_device_up{{{F}}}')} == 0)", ""),
          table=True, link=True, unit="s",
          desc="Every device the agents list that does not answer, with the reason of its "
               "last failed poll and the seconds since it last answered. Click a row for "
               "the device.")
    b.add("table", "Top 10 interfaces by inbound utilisation", 6, 8,
          f"topk(10, {m(utilisation('in', F))})", table=True, link=True, unit="percentunit")
    b.add("table", "Top 10 interfaces by outbound utilisation", 6, 8,
          f"topk(10, {m(utilisation('out', F))})", table=True, link=True, unit="percentunit")
    b.add("timeseries", "Top 10 interfaces by inbound traffic", 12, 8,
          f"topk(10, {m(f'rate(privtel_interface_in_octets_total{{{F}}}[{RI}]) * 8')})",
          unit="bps", legend="{{device}} {{ifname}}", link=True)
    b.add("timeseries", "Top 10 interfaces by outbound traffic", 12, 8,
          f"topk(10, {m(f'rate(privtel_interface_out_octets_total{{{F}}}[{RI}]) * 8')})",
          unit="bps", legend="{{device}} {{ifname}}", link=True)
    b.add("timeseries", "Least used interfaces (inbound, up)", 12, 8,
          f"bottomk(10, {m(utilisation('in', F))} and on (tenant, site, device, ifname) "
          f"({m(f'privtel_interface_oper_status{{{F}}}')} == 1))",
          unit="percentunit", legend="{{device}} {{ifname}}",
          desc="Candidates for reclaiming: interfaces that are up and carry least.")
    b.add("timeseries", "Interface errors per packet by site", 12, 8,
          *((f"sum by (tenant, site) ({m(rate(f'{d}_errors', F))}) / "
             f"sum by (tenant, site) ({m(rate(f'{d}_packets', F))})", f"{{{{site}}}} {d}")
            for d in ("in", "out")), unit="percentunit")
    b.add("timeseries", "Last poll age (worst per site)", 12, 8,
          f"max by (tenant, site) (time() - privtel_device_last_poll_timestamp_seconds{{{F}}})",
          unit="s", legend="{{site}}")
    b.add("timeseries", "Top 10 CPU", 6, 8,
          f"topk(10, {m(f'privtel_device_cpu_utilization_percent{{{F}}}')})",
          unit="percent", legend="{{device}}")
    b.add("timeseries", "Top 10 memory use", 6, 8,
          f"topk(10, {m(f'privtel_device_memory_used_bytes{{{F}}}')} / "
          f"{m(f'privtel_device_memory_total_bytes{{{F}}}')})",
          unit="percentunit", legend="{{device}}")
    b.add("timeseries", "Poll duration (worst per site)", 24, 7,
          f"max by (tenant, site) (privtel_device_poll_duration_seconds{{{F}}})", unit="s",
          legend="{{site}}")
    return dashboard(
        "privtel-fleet", "privtel / Fleet overview",
        "Every device and interface of the chosen tenants and sites; devices by pseudonymous id.",
        [var("tenant", "Tenant", "label_values(privtel_device_up, tenant)"),
         var("site", "Site", 'label_values(privtel_device_up{tenant=~"$tenant"}, site)')], b,
        links=[{"title": "Agents and pipeline", "type": "link", "url": "/d/privtel-agent"}])


def device() -> dict[str, Any]:
    b = Board()
    b.add("stat", "Up", 4, 4, m(f"privtel_device_up{{{D}}}"), maps=UP_MAP)
    b.add("stat", "Uptime", 4, 4, m(f"privtel_device_uptime_seconds{{{D}}}"), unit="s")
    b.add("stat", "Since last poll", 4, 4,
          f"time() - {m(f'privtel_device_last_poll_timestamp_seconds{{{D}}}')}", unit="s")
    b.add("stat", "Interfaces", 4, 4, m(f"privtel_device_interfaces{{{D}}}"))
    b.add("table", "Protocol, profile and failure reason", 8, 4,
          m(f"privtel_device_info{{{D}}}"), m(f"privtel_device_poll_failures{{{D}}}"),
          table=True)
    b.add("timeseries", "Inbound utilisation", 12, 8, m(utilisation("in", DI)),
          unit="percentunit", legend="{{ifname}}")
    b.add("timeseries", "Outbound utilisation", 12, 8, m(utilisation("out", DI)),
          unit="percentunit", legend="{{ifname}}")
    b.add("timeseries", "Traffic (bits/s)", 12, 8,
          (m(f"rate(privtel_interface_in_octets_total{{{DI}}}[{RI}]) * 8"), "{{ifname}} in"),
          (m(f"rate(privtel_interface_out_octets_total{{{DI}}}[{RI}]) * 8"), "{{ifname}} out"),
          unit="bps")
    b.add("timeseries", "Packets (all casts)", 12, 8,
          (f"sum without (cast) ({m(f'rate(privtel_interface_in_packets_total{{{DI}}}[{RI}])')})",
           "{{ifname}} in"),
          (f"sum without (cast) ({m(f'rate(privtel_interface_out_packets_total{{{DI}}}[{RI}])')})",
           "{{ifname}} out"), unit="pps")
    b.add("timeseries", "Errors per packet", 12, 8,
          (m(ratio("errors", "in", DI)), "{{ifname}} in"),
          (m(ratio("errors", "out", DI)), "{{ifname}} out"), unit="percentunit",
          desc="The alert PrivtelInterfaceErrors fires over 1 %.")
    b.add("timeseries", "Discards per packet", 12, 8,
          (m(ratio("discards", "in", DI)), "{{ifname}} in"),
          (m(ratio("discards", "out", DI)), "{{ifname}} out"), unit="percentunit",
          desc="The alert PrivtelInterfaceDiscards fires over 5 %.")
    b.add("timeseries", "Errors and discards (per second)", 12, 8,
          (m(f"rate(privtel_interface_in_errors_total{{{DI}}}[{RI}])"), "{{ifname}} in errors"),
          (m(f"rate(privtel_interface_out_errors_total{{{DI}}}[{RI}])"), "{{ifname}} out errors"),
          (m(f"rate(privtel_interface_in_discards_total{{{DI}}}[{RI}])"),
           "{{ifname}} in discards"),
          (m(f"rate(privtel_interface_out_discards_total{{{DI}}}[{RI}])"),
           "{{ifname}} out discards"), unit="pps")
    b.add("timeseries", "Poll duration", 12, 8, m(f"privtel_device_poll_duration_seconds{{{D}}}"),
          unit="s")
    b.add("state-timeline", "Oper status", 24, 8, m(f"privtel_interface_oper_status{{{DI}}}"),
          maps=OPER, legend="{{ifname}}")
    b.add("state-timeline", "Admin status", 12, 6, m(f"privtel_interface_admin_status{{{DI}}}"),
          maps={"1": ("up", "green"), "2": ("down", "text"), "3": ("testing", "blue")},
          legend="{{ifname}}")
    b.add("timeseries", "CPU", 6, 6, m(f"privtel_device_cpu_utilization_percent{{{D}}}"),
          unit="percent")
    b.add("timeseries", "Memory", 6, 6,
          (m(f"privtel_device_memory_used_bytes{{{D}}}"), "used"),
          (m(f"privtel_device_memory_total_bytes{{{D}}}"), "total"), unit="bytes")
    return dashboard(
        "privtel-device", "privtel / Device",
        "One device by its pseudonymous id: health, utilisation, packets, errors, status.",
        [var("tenant", "Tenant", "label_values(privtel_device_up, tenant)"),
         var("site", "Site", 'label_values(privtel_device_up{tenant=~"$tenant"}, site)'),
         var("device", "Device", f"label_values(privtel_device_up{{{F}}}, device)", all_=False),
         var("ifname", "Interface",
             'label_values(privtel_interface_oper_status{tenant=~"$tenant",device="$device"}, '
             "ifname)")], b,
        links=[{"title": "Fleet", "type": "link", "url": "/d/privtel-fleet"}])


def agent() -> dict[str, Any]:
    b = Board()
    b.add("stat", "Agents scraped", 4, 4, f'sum(up{{job="privtel-agent",{A}}})')
    b.add("stat", "Agents up (heartbeats)", 4, 4, f"sum({m(f'privtel_agent_up{{{A}}}')})",
          desc="What the collectors say from batches and heartbeats, scraped or not.")
    b.add("stat", "Connected to the broker", 4, 4, f"sum(privtel_agent_mqtt_connected{{{A}}})")
    b.add("stat", "Oldest unacknowledged batch", 4, 4,
          f"max(privtel_agent_spool_oldest_age_seconds{{{A}}})", unit="s")
    b.add("stat", "Spool dropped (1h)", 4, 4,
          f"sum(increase(privtel_agent_spool_dropped_batches_total{{{A}}}[1h]))")
    b.add("stat", "Devices in backoff", 4, 4, f"sum(privtel_devices_in_backoff{{{A}}})")
    b.add("timeseries", "Spool depth", 12, 8,
          (f"privtel_agent_spool_batches{{{A}}}", "{{agent}} batches"),
          (f"privtel_agent_spool_pending_records{{{A}}}", "{{agent}} records to seal"))
    b.add("timeseries", "Spool age and size", 12, 8,
          (f"privtel_agent_spool_oldest_age_seconds{{{A}}}", "{{agent}} oldest (s)"),
          (f"privtel_agent_spool_bytes{{{A}}}", "{{agent}} bytes"),
          desc="PrivtelAgentSpoolBacklog fires when the oldest batch is over 15 minutes old.")
    b.add("timeseries", "Publishing", 12, 8,
          (f"rate(privtel_agent_batches_published_total{{{A}}}[{RI}])", "{{agent}} published"),
          (f"rate(privtel_agent_publish_failures_total{{{A}}}[{RI}])", "{{agent}} failures"),
          (f"rate(privtel_agent_reconnects_total{{{A}}}[{RI}])", "{{agent}} reconnects"),
          unit="ops")
    b.add("timeseries", "Heartbeats: seconds since last seen", 12, 8,
          f"time() - {m(f'privtel_agent_last_seen_timestamp_seconds{{{A}}}')}", unit="s",
          legend="{{agent}}")
    b.add("timeseries", "Polls by protocol and result", 12, 8,
          f"sum by (agent, protocol, result) (rate(privtel_polls_total{{{A}}}[{RI}]))",
          unit="ops", legend="{{agent}} {{protocol}} {{result}}")
    b.add("timeseries", "Syslog and trap records stored", 12, 8,
          ("sum by (retention_class) (rate(privtel_store_records_written_total"
           f'{{retention_class=~"logs|raw_cli|security_events"}}[{RI}]))',
           "{{retention_class}}"), unit="ops",
          desc="Log lines (syslog, device logs) and events (SNMP traps) as the shipped "
               "retention policy classes them: log -> logs or raw_cli, event -> "
               "security_events.")
    b.add("timeseries", "Records: polled, stored, dropped", 24, 8,
          (f"sum(rate(privtel_agent_records_submitted_total{{{A}}}[{RI}]))", "spooled"),
          (f"sum by (reason) (rate(privtel_agent_records_dropped_total{{{A}}}[{RI}]))",
           "dropped {{reason}}"),
          (f"sum(rate(privtel_records_accepted_total[{RI}]))", "stored (collector)"),
          unit="ops")
    return dashboard(
        "privtel-agent", "privtel / Agents and pipeline",
        "Edge agents (their own /metrics, job privtel-agent) and what reaches the collectors.",
        [var("tenant", "Tenant", 'label_values(up{job="privtel-agent"}, tenant)'),
         var("site", "Site", 'label_values(up{job="privtel-agent",tenant=~"$tenant"}, site)'),
         var("agent", "Agent",
             'label_values(up{job="privtel-agent",tenant=~"$tenant",site=~"$site"}, agent)')],
        b, links=[{"title": "Fleet", "type": "link", "url": "/d/privtel-fleet"}])


def collector() -> dict[str, Any]:
    b = Board()
    b.add("stat", "Workers connected", 4, 4, f"sum(privtel_ingest_connected{{{W}}})")
    b.add("stat", "Scrape targets up", 4, 4, f'sum(up{{job="privtel-collector",{W}}})')
    b.add("stat", "Store size", 4, 4, f"max by (backend) (privtel_store_size_bytes{{{W}}})",
          unit="bytes")
    b.add("stat", "Since last purge", 4, 4,
          f"time() - max(privtel_retention_last_purge_timestamp_seconds{{{W}}})", unit="s")
    b.add("stat", "Policy gaps", 4, 4, f"max(privtel_retention_policy_gaps{{{W}}})")
    b.add("stat", "Series dropped by caps (1h)", 4, 4,
          f"sum(increase(privtel_metrics_dropped_total{{{W}}}[1h]))")
    b.add("timeseries", "Ingest rate", 12, 8,
          (f"sum by (instance) (rate(privtel_batches_received_total{{{W}}}[{RI}]))",
           "{{instance}} batches received"),
          (f"sum by (instance) (rate(privtel_batches_accepted_total{{{W}}}[{RI}]))",
           "{{instance}} batches accepted"),
          (f"sum by (instance) (rate(privtel_records_accepted_total{{{W}}}[{RI}]))",
           "{{instance}} records stored"), unit="ops")
    b.add("timeseries", "Rejected batches by reason", 12, 8,
          f"sum by (reason) (rate(privtel_batches_rejected_total{{{W}}}[{RI}]))", unit="ops",
          legend="{{reason}}")
    b.add("timeseries", "Lag: batch sealed to stored", 12, 8,
          ("histogram_quantile(0.5, sum by (le) (rate("
           f"privtel_store_batch_lag_seconds_bucket{{{W}}}[{RI}])))", "p50"),
          ("histogram_quantile(0.95, sum by (le) (rate("
           f"privtel_store_batch_lag_seconds_bucket{{{W}}}[{RI}])))", "p95"), unit="s")
    b.add("timeseries", "Store write time per batch", 12, 8,
          ("histogram_quantile(0.99, sum by (le, backend) (rate("
           f"privtel_store_write_seconds_bucket{{{W}}}[{RI}])))", "p99 {{backend}}"),
          (f"sum(rate(privtel_store_write_seconds_sum{{{W}}}[{RI}])) / "
           f"sum(rate(privtel_store_write_seconds_count{{{W}}}[{RI}]))", "mean"), unit="s")
    b.add("timeseries", "Outputs: delivered, failed, dropped", 12, 8,
          (f"sum by (output) (rate(privtel_output_delivered_total{{{W}}}[{RI}]))",
           "{{output}} delivered"),
          (f"sum by (output) (rate(privtel_output_failures_total{{{W}}}[{RI}]))",
           "{{output}} failed"),
          (f"sum by (output) (rate(privtel_output_dropped_total{{{W}}}[{RI}]))",
           "{{output}} dropped"), unit="ops")
    b.add("timeseries", "Remote write samples", 12, 8,
          (f"sum by (output) (rate(privtel_remote_write_samples_sent_total{{{W}}}[{RI}]))",
           "{{output}} sent"),
          (f"sum by (output) (rate(privtel_remote_write_samples_failed_total{{{W}}}[{RI}]))",
           "{{output}} failed"),
          (f"sum by (output, reason) (rate(privtel_remote_write_samples_dropped_total{{{W}}}"
           f"[{RI}]))", "{{output}} dropped {{reason}}"), unit="ops")
    b.add("timeseries", "Store batches by result", 8, 8,
          f"sum by (result) (rate(privtel_store_batches_total{{{W}}}[{RI}]))", unit="ops",
          legend="{{result}}")
    b.add("timeseries", "Quarantined by reason", 8, 8,
          f"sum by (reason) (increase(privtel_store_quarantined_total{{{W}}}[1h]))",
          legend="{{reason}}")
    b.add("timeseries", "Records held by retention class", 8, 8,
          f"max by (retention_class) (privtel_store_records{{{W}}})", legend="{{retention_class}}")
    b.add("timeseries", "Records stored by retention class", 12, 8,
          f"sum by (retention_class) (rate(privtel_store_records_written_total{{{W}}}[{RI}]))",
          unit="ops", legend="{{retention_class}}")
    b.add("timeseries", "Retention purges", 12, 8,
          (f"sum by (retention_class) (increase(privtel_retention_purged_records_total{{{W}}}"
           "[1h]))", "{{retention_class}} purged"),
          (f"sum by (trigger, result) (increase(privtel_retention_purge_runs_total{{{W}}}[1h]))",
           "runs {{trigger}} {{result}}"))
    b.add("timeseries", "Records without a retention rule", 24, 7,
          f"sum by (kind) (increase(privtel_retention_unmatched_records_total{{{W}}}[1h]))",
          legend="{{kind}}")
    return dashboard(
        "privtel-collector", "privtel / Collector health",
        "Collector workers: ingest, store, outputs, retention; one or all workers.",
        [var("instance", "Worker", 'label_values(up{job="privtel-collector"}, instance)')], b)


BOARDS = {"fleet-overview.json": fleet, "device.json": device, "agent-pipeline.json": agent,
          "collector-health.json": collector}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=1) + "\n" for name, build in BOARDS.items()}


if __name__ == "__main__":
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}", file=sys.stderr)
