"""NOC exposition: device and interface series built from stored records.

`NocMetrics` is a custom Prometheus collector rather than labelled gauges, so
that a device or interface that stops reporting simply stops being yielded:
no stale series lingers and nothing has to be unregistered. It keeps only the
latest value per series, ignoring records older than what it already holds
(a spool replaying an old backlog must not move a gauge backwards).

Cardinality is bounded by construction. Labels are tenant, site, device (the
pseudonymous id) and, on interface series, ifname; never a free-text field.
Series per device: 11 device series + 9 per interface. `max_devices` and
`max_interfaces` cap the state; records beyond a cap are counted in
`privtel_metrics_dropped_total{reason}` instead of creating series. With the
defaults (10,000 devices, 256 interfaces each) the worst case is stated in
docs/store.md; a typical site (20 devices x 48 ports) is about 9,000 series.

It is fed after commit through `collector.outputs.noc.NocOutput`, the first
post-commit output. Store self-metrics are in `collector.metrics.store`; the
HTTP endpoint is `plumbing.metrics_http`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.recheck import screen_labels
from pipelines.record import HEALTH_REASONS, Record

log = logging.getLogger(__name__)
DEVICE_LABELS = ("tenant", "site", "device")
IF_LABELS = (*DEVICE_LABELS, "ifname")
REASONS = HEALTH_REASONS
_OPER = {"up": 1, "down": 2, "testing": 3, "unknown": 4, "dormant": 5, "notpresent": 6,
         "lowerlayerdown": 7}

# family name -> (type, help[, record field]); counters are exposed with `_total`.
DEVICE_SERIES: dict[str, tuple[str, str]] = {
    "privtel_device_up": ("gauge", "1 if the last poll of the device succeeded, else 0."),
    "privtel_device_uptime_seconds": ("gauge", "Device uptime as the device reports it."),
    "privtel_device_last_poll_timestamp_seconds": ("gauge", "Unix time of the last poll."),
    "privtel_device_last_poll_age_seconds": ("gauge", "Seconds since the last poll record."),
    "privtel_device_poll_duration_seconds": ("gauge", "Duration of the last poll."),
    "privtel_device_cpu_utilization_percent": ("gauge", "CPU use, where the device reports it."),
    "privtel_device_memory_used_bytes": ("gauge", "Memory in use, where reported."),
    "privtel_device_memory_total_bytes": ("gauge", "Memory installed, where reported."),
    "privtel_device_info": ("gauge", "Always 1; carries the protocol and profile labels."),
    "privtel_device_poll_failures": ("gauge", "1 for the reason of a failed last poll."),
    "privtel_device_interfaces": ("gauge", "Interfaces the device currently reports."),
}
INTERFACE_SERIES: dict[str, tuple[str, str, str]] = {
    "privtel_interface_in_octets": ("counter", "Octets received (ifHCInOctets).", "in_octets"),
    "privtel_interface_out_octets": ("counter", "Octets sent (ifHCOutOctets).", "out_octets"),
    "privtel_interface_in_errors": ("counter", "Inbound errors (ifInErrors).", "in_errors"),
    "privtel_interface_out_errors": ("counter", "Outbound errors (ifOutErrors).", "out_errors"),
    "privtel_interface_in_discards": ("counter", "Inbound discards.", "in_discards"),
    "privtel_interface_out_discards": ("counter", "Outbound discards.", "out_discards"),
    "privtel_interface_oper_status": ("gauge", "IF-MIB ifOperStatus: 1 up, 2 down, ...",
                                      "oper_status"),
    "privtel_interface_admin_status": ("gauge", "IF-MIB ifAdminStatus: 1 up, 2 down, 3 testing.",
                                       "admin_status"),
    "privtel_interface_speed_bits_per_second": ("gauge", "Interface speed.", "speed_bps"),
}


_IF_STATUS = tuple(fld for _, _, fld in INTERFACE_SERIES.values() if fld.endswith("_status"))
_IF_FIELDS = tuple(fld for _, _, fld in INTERFACE_SERIES.values())


@dataclass(slots=True)
class _Iface:
    """`raw` holds the record's values for `_IF_FIELDS` as they came; they are
    turned into `values` at the first scrape after an update, so a poll's worth of
    rows that the next poll overwrites before any scrape is never converted."""

    ts: float
    raw: tuple[Any, ...] | None
    values: dict[str, float] | None = None

    def exposed(self) -> dict[str, float]:
        if self.values is None:
            values: dict[str, float] = {}
            for fld, v in zip(_IF_FIELDS, self.raw or (), strict=True):
                if fld in _IF_STATUS:
                    sv = _status(v)
                    if sv is not None:
                        values[fld] = sv
                elif type(v) is int or type(v) is float:
                    values[fld] = float(v)
            self.values, self.raw = values, None
        return self.values


@dataclass
class _Device:
    tenant: str
    site: str
    device: str
    last_ts: float = 0.0
    health_ts: float = 0.0
    up: float | None = None
    reason: str | None = None
    protocol: str = ""
    profile: str = ""
    poll_duration: float | None = None
    uptime: tuple[float, float] | None = None
    cpu: tuple[float, float] | None = None
    mem_used: tuple[float, float] | None = None
    mem_total: tuple[float, float] | None = None
    ifaces: dict[str, _Iface] = field(default_factory=dict)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _status(v: Any) -> float | None:
    if isinstance(v, str):
        code = _OPER.get(v.strip().lower().replace("_", "").replace(" ", ""))
        return float(code) if code is not None else None
    return _num(v)


def _newer(held: tuple[float, float] | None, ts: float, value: float | None
           ) -> tuple[float, float] | None:
    if value is None or (held is not None and held[0] > ts):
        return held
    return (ts, value)


class NocMetrics(Collector):
    """Register once per registry; feed with `observe(records)` after each stored batch."""

    def __init__(self, registry: CollectorRegistry | None, *, stale_after_s: float = 900.0,
                 max_devices: int = 10000, max_interfaces: int = 256,
                 clock: Callable[[], float] = time.time) -> None:
        if stale_after_s <= 0:
            raise ValueError("stale_after_s must be positive")
        if max_devices < 1 or max_interfaces < 1:
            raise ValueError("max_devices and max_interfaces must be at least 1")
        self.stale_after_s, self.max_devices, self.max_interfaces = (
            stale_after_s, max_devices, max_interfaces)
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: dict[tuple[str, str], _Device] = {}
        self._dropped: dict[str, int] = {"device_limit": 0, "interface_limit": 0}
        self._handlers = self._handler_table()
        if registry is not None:
            registry.register(self)

    def observe(self, records: Iterable[Record]) -> None:
        # One dict lookup skips a record whose name feeds no series; the device of the
        # previous record is reused while a run of records shares it (a poll's rows do).
        handlers, devices = self._handlers, self._devices
        with self._lock:
            tenant: str | None = None
            device: str | None = None
            d: _Device | None = None
            for r in screen_labels(records):  # no raw identifier in a label (issue 17)
                handler = handlers.get(r.name)
                if handler is None:
                    self._observe_other(r)
                    d = None
                    continue
                if d is None or r.device != device or r.tenant != tenant:
                    tenant, device = r.tenant, r.device
                    d = devices.get((tenant, device))
                    if d is None:
                        d = self._new_device(r)
                        if d is None:
                            continue
                ts = float(r.ts)
                if ts >= d.last_ts:
                    d.last_ts, d.site = ts, r.site
                handler(d, ts, r.fields)

    def forget(self, tenant: str, device: str) -> bool:
        with self._lock:
            return self._devices.pop((tenant, device), None) is not None

    def device_count(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._devices)

    def _new_device(self, r: Record) -> _Device | None:
        if len(self._devices) >= self.max_devices:
            self._expire(self._clock())
            if len(self._devices) >= self.max_devices:
                self._dropped["device_limit"] += 1
                return None
        d = self._devices[(r.tenant, r.device)] = _Device(r.tenant, r.site, r.device)
        return d

    def _observe_other(self, r: Record) -> None:
        """A record whose name feeds no series still keeps its device alive (and
        counts against the device cap), as it always has."""
        d = self._devices.get((r.tenant, r.device))
        if d is None:
            d = self._new_device(r)
            if d is None:
                return
        ts = float(r.ts)
        if ts >= d.last_ts:
            d.last_ts, d.site = ts, r.site

    def _handler_table(self) -> dict[str, Callable[[_Device, float, Any], None]]:
        return {"device.health": self._observe_health, "snmp.system": self._observe_system,
                "host.cpu": self._observe_cpu, "host.memory": self._observe_memory,
                "if": self._observe_if}

    @staticmethod
    def _observe_health(d: _Device, ts: float, f: Any) -> None:
        if ts >= d.health_ts:
            d.health_ts = ts
            d.up = 1.0 if f.get("up") in (1, True) else 0.0
            reason = f.get("reason")
            d.reason = (reason if reason in REASONS else "error") if reason else None
            d.protocol = str(f.get("protocol") or "")[:32]
            d.profile = str(f.get("profile") or "")[:64]
            d.poll_duration = _num(f.get("poll_duration_s"))
        d.uptime = _newer(d.uptime, ts, _num(f.get("uptime_s")))

    @staticmethod
    def _observe_system(d: _Device, ts: float, f: Any) -> None:
        d.uptime = _newer(d.uptime, ts, _num(f.get("uptime_s")))

    @staticmethod
    def _observe_cpu(d: _Device, ts: float, f: Any) -> None:
        d.cpu = _newer(d.cpu, ts, _num(f.get("cpu_util_pct")))

    @staticmethod
    def _observe_memory(d: _Device, ts: float, f: Any) -> None:
        d.mem_used = _newer(d.mem_used, ts, _num(f.get("mem_used_bytes")))
        d.mem_total = _newer(d.mem_total, ts, _num(f.get("mem_total_bytes")))

    def _observe_if(self, d: _Device, ts: float, f: Any) -> None:
        name = f.get("if_name") or f.get("if_descr") or f.get("if_index")
        if name is None or name == "":
            return
        ifname = name[:64] if type(name) is str else str(name)[:64]
        cur = d.ifaces.get(ifname)
        if cur is None:
            if len(d.ifaces) >= self.max_interfaces:
                self._dropped["interface_limit"] += 1
                return
        elif cur.ts > ts:
            return
        raw = tuple(map(f.get, _IF_FIELDS))
        if cur is None:
            d.ifaces[ifname] = _Iface(ts, raw)
        else:
            cur.ts, cur.raw, cur.values = ts, raw, None

    def _expire(self, now: float) -> None:
        horizon = now - self.stale_after_s
        for key in [k for k, d in self._devices.items() if d.last_ts < horizon]:
            del self._devices[key]
        for d in self._devices.values():
            for name in [n for n, i in d.ifaces.items() if i.ts < horizon]:
                del d.ifaces[name]

    def describe(self) -> list[Metric]:
        out: list[Metric] = []
        for name, (_kind, doc) in DEVICE_SERIES.items():
            labels = [*DEVICE_LABELS, "protocol", "profile"] if name == "privtel_device_info" \
                else [*DEVICE_LABELS, "reason"] if name == "privtel_device_poll_failures" \
                else list(DEVICE_LABELS)
            out.append(GaugeMetricFamily(name, doc, labels=labels))
        for name, (kind, doc, _) in INTERFACE_SERIES.items():
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            out.append(cls(name, doc, labels=list(IF_LABELS)))
        out.append(CounterMetricFamily("privtel_metrics_dropped", "Records not exposed because "
                                       "a cardinality cap was reached.", labels=["reason"]))
        return out

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        fams: dict[str, Any] = {m.name: m for m in self.describe()}
        with self._lock:
            self._expire(now)
            for d in self._devices.values():
                lv = [d.tenant, d.site, d.device]
                if d.up is not None:
                    fams["privtel_device_up"].add_metric(lv, d.up)
                    fams["privtel_device_last_poll_timestamp_seconds"].add_metric(lv, d.health_ts)
                    fams["privtel_device_last_poll_age_seconds"].add_metric(
                        lv, max(0.0, now - d.health_ts))
                    fams["privtel_device_info"].add_metric([*lv, d.protocol, d.profile], 1.0)
                    if d.up == 0.0:
                        fams["privtel_device_poll_failures"].add_metric(
                            [*lv, d.reason or "error"], 1.0)
                if d.poll_duration is not None:
                    fams["privtel_device_poll_duration_seconds"].add_metric(lv, d.poll_duration)
                for name, held in (("privtel_device_uptime_seconds", d.uptime),
                                   ("privtel_device_cpu_utilization_percent", d.cpu),
                                   ("privtel_device_memory_used_bytes", d.mem_used),
                                   ("privtel_device_memory_total_bytes", d.mem_total)):
                    if held is not None:
                        fams[name].add_metric(lv, held[1])
                if d.ifaces:
                    fams["privtel_device_interfaces"].add_metric(lv, float(len(d.ifaces)))
                for ifname, iface in d.ifaces.items():
                    values = iface.exposed()
                    for name, (_, _, fld) in INTERFACE_SERIES.items():
                        if fld in values:
                            fams[name].add_metric([*lv, ifname], values[fld])
            for reason, n in self._dropped.items():
                fams["privtel_metrics_dropped"].add_metric([reason], float(n))
        yield from fams.values()
