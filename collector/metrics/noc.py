"""NOC exposition: device, interface and agent-liveness series built from stored records.

`NocMetrics` is a custom Prometheus collector. It holds one `DeviceState` per
(tenant, device): the latest value of every field, each kept with the time of
the poll it came from, so a spool replaying an old backlog never moves a value
backwards and two states merge field by field whatever order they arrive in.

On its own (`shared=None`) it is fed by `observe` and serves what this
process saw. In a collector it is fed from the shared store (`collector.liveness`),
so every worker holds the same states and the agents' liveness, and serves only
the devices and agents it owns by a stable assignment: one series per device
however many workers run, and a restarted worker serves on from the stored state.

Liveness never works by vanishing: a device the agent lists stays exposed,
`privtel_device_up 0` with its reason while it does not answer, and
`privtel_device_up 0` with reason `agent_silent` once its agent is silent beyond
its allowed silence; it goes only when the agent stops listing it. A device no
heartbeat ever listed (an older agent) still expires after `stale_after_s`.

Naming: `privtel` (the default) or `snmp_exporter` (the `if_mib` module's names,
types and labels, `instance` = the pseudonymous device); see docs/metrics.md.
Interfaces are keyed by ifIndex, their names are labels. Labels never carry a
free-text field beyond the interface name, description and alias, which the
agent's identifiers pipeline scrubbed. `max_devices` and `max_interfaces` cap
the state; what a cap refuses is counted in `privtel_metrics_dropped_total{reason}`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from collector.recheck import screen_labels
from pipelines.record import Record
from pipelines.vocab import HEALTH_REASONS, Reason, RecordName

log = logging.getLogger(__name__)
HEARTBEAT_NAME = RecordName.AGENT_HEARTBEAT
NAMINGS = ("privtel", "snmp_exporter")
DEVICE_LABELS = ("tenant", "site", "device")
IF_LABELS = (*DEVICE_LABELS, "ifindex", "ifname")
AGENT_LABELS = ("tenant", "site", "agent")
AGENT_SILENT = Reason.AGENT_SILENT
REASONS = HEALTH_REASONS | {AGENT_SILENT}
_LABEL_MAX = 128
_OPER = {"up": 1, "down": 2, "testing": 3, "unknown": 4, "dormant": 5, "notpresent": 6,
         "lowerlayerdown": 7}
_CASTS = (("ucast", "unicast"), ("mcast", "multicast"), ("bcast", "broadcast"))
# `if` record fields kept per interface (numbers only; status words mapped to IF-MIB codes)
IF_FIELDS = ("in_octets", "out_octets", "in_errors", "out_errors", "in_discards",
             "out_discards", "oper_status", "admin_status", "speed_bps", "counter_bits",
             "if_type", "last_change_s", "pkts_bits",
             *(f"{d}_{c}_pkts" for d in ("in", "out") for c, _ in _CASTS))
_IF_STATUS = ("oper_status", "admin_status")

DEVICE_SERIES: dict[str, str] = {
    "privtel_device_up": "1 if the last poll of the device succeeded; 0 if it failed or its "
                         "agent is silent (reason in privtel_device_poll_failures).",
    "privtel_device_uptime_seconds": "Device uptime as the device reports it.",
    "privtel_device_last_poll_timestamp_seconds": "Unix time of the last poll.",
    "privtel_device_last_poll_age_seconds": "Seconds since the last poll record.",
    "privtel_device_poll_duration_seconds": "Duration of the last poll.",
    "privtel_device_cpu_utilization_percent": "CPU use, where the device reports it.",
    "privtel_device_memory_used_bytes": "Memory in use, where reported.",
    "privtel_device_memory_total_bytes": "Memory installed, where reported.",
    "privtel_device_info": "Always 1, one series per device; carries protocol and profile.",
    "privtel_device_poll_failures": "1 for the reason the device is down (agent_silent when "
                                    "its agent sent nothing for longer than allowed).",
    "privtel_device_interfaces": "Interfaces the device currently reports.",
}
_COUNTER_HELP = ("the 64-bit IF-MIB counter (ifHC*) where the device has it, else the 32-bit "
                 "one; privtel_interface_counter_bits says which")
# family -> (type, help, field)
INTERFACE_SERIES: dict[str, tuple[str, str, str]] = {
    "privtel_interface_in_octets": ("counter", f"Octets received: {_COUNTER_HELP}.",
                                    "in_octets"),
    "privtel_interface_out_octets": ("counter", f"Octets sent: {_COUNTER_HELP}.", "out_octets"),
    "privtel_interface_in_errors": ("counter", "Inbound errors (ifInErrors, 32-bit).",
                                    "in_errors"),
    "privtel_interface_out_errors": ("counter", "Outbound errors (ifOutErrors, 32-bit).",
                                     "out_errors"),
    "privtel_interface_in_discards": ("counter", "Inbound discards (ifInDiscards, 32-bit).",
                                      "in_discards"),
    "privtel_interface_out_discards": ("counter", "Outbound discards (ifOutDiscards, 32-bit).",
                                       "out_discards"),
    "privtel_interface_oper_status": ("gauge", "IF-MIB ifOperStatus: 1 up, 2 down, ... 7 "
                                      "lowerLayerDown.", "oper_status"),
    "privtel_interface_admin_status": ("gauge", "IF-MIB ifAdminStatus: 1 up, 2 down, 3 testing.",
                                       "admin_status"),
    "privtel_interface_speed_bits_per_second": ("gauge", "Interface speed (ifHighSpeed x 10^6, "
                                                "or ifSpeed).", "speed_bps"),
    "privtel_interface_counter_bits": ("gauge", "Width of the octet counters: 64 (ifHC*) or 32.",
                                       "counter_bits"),
    "privtel_interface_last_change_seconds": ("gauge", "ifLastChange: device uptime, in "
                                              "seconds, when the interface last changed state.",
                                              "last_change_s"),
}
# snmp_exporter if_mib: field -> (64-bit name, 32-bit name or None, type)
SNMP_IF: dict[str, tuple[str, str | None, str]] = {
    "in_octets": ("ifHCInOctets", "ifInOctets", "counter"),
    "out_octets": ("ifHCOutOctets", "ifOutOctets", "counter"),
    "in_ucast_pkts": ("ifHCInUcastPkts", "ifInUcastPkts", "counter"),
    "in_mcast_pkts": ("ifHCInMulticastPkts", "ifInMulticastPkts", "counter"),
    "in_bcast_pkts": ("ifHCInBroadcastPkts", "ifInBroadcastPkts", "counter"),
    "out_ucast_pkts": ("ifHCOutUcastPkts", "ifOutUcastPkts", "counter"),
    "out_mcast_pkts": ("ifHCOutMulticastPkts", "ifOutMulticastPkts", "counter"),
    "out_bcast_pkts": ("ifHCOutBroadcastPkts", "ifOutBroadcastPkts", "counter"),
    "in_errors": ("ifInErrors", None, "counter"),
    "out_errors": ("ifOutErrors", None, "counter"),
    "in_discards": ("ifInDiscards", None, "counter"),
    "out_discards": ("ifOutDiscards", None, "counter"),
    "oper_status": ("ifOperStatus", None, "gauge"),
    "admin_status": ("ifAdminStatus", None, "gauge"),
    "if_type": ("ifType", None, "gauge"),
}
SNMP_IF_LABELS = ("tenant", "site", "instance", "ifIndex", "ifName", "ifDescr", "ifAlias",
                  "ifType")


def _num(v: Any) -> float | None:
    t = type(v)
    if t is float:  # the common cases first: this runs for every field of every record
        return v  # type: ignore[no-any-return]
    if t is int:
        return float(v)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _status(v: Any) -> float | None:
    if isinstance(v, str):
        code = _STATUS_WORDS.get(v)
        if code is None:
            code = _OPER.get(v.strip().lower().replace("_", "").replace(" ", ""))
        return float(code) if code is not None else None
    return _num(v)


_STATUS_WORDS = _OPER | {"lowerLayerDown": 7, "notPresent": 6}  # spellings seen as they are
_IF_CONVERT: dict[str, Callable[[Any], float | None]] = {
    fld: _status if fld in _IF_STATUS else _num for fld in IF_FIELDS}


def _label(v: Any) -> str:
    return v[:_LABEL_MAX] if type(v) is str else "" if v is None else str(v)[:_LABEL_MAX]


def _newer(held: list[float] | None, ts: float, value: float | None) -> list[float] | None:
    if value is None or (held is not None and held[0] > ts):
        return held
    return [ts, value]


@dataclass(slots=True)
class Iface:
    ts: float
    name: str = ""
    descr: str = ""
    alias: str = ""
    values: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ts": self.ts, "name": self.name, "descr": self.descr, "alias": self.alias,
                "values": self.values}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Iface:
        return cls(float(d["ts"]), d.get("name", ""), d.get("descr", ""), d.get("alias", ""),
                   {k: float(v) for k, v in d.get("values", {}).items()})


@dataclass
class DeviceState:
    """What the NOC knows of one device; `to_dict`/`from_dict` is its stored form."""

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
    uptime: list[float] | None = None
    cpu: list[float] | None = None
    mem_used: list[float] | None = None
    mem_total: list[float] | None = None
    ifaces: dict[str, Iface] = field(default_factory=dict)
    # liveness, from the store: the agent that reports it and when a heartbeat last listed it
    agent: str | None = None
    listed_at: float | None = None

    _SCALARS = ("site", "last_ts", "health_ts", "up", "reason", "protocol", "profile",
                "poll_duration", "uptime", "cpu", "mem_used", "mem_total")

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._SCALARS}
        out["ifaces"] = {k: i.to_dict() for k, i in self.ifaces.items()}
        return out

    @classmethod
    def from_dict(cls, tenant: str, device: str, d: Mapping[str, Any]) -> DeviceState:
        st = cls(tenant, str(d.get("site", "")), device)
        for k in cls._SCALARS[1:]:
            if k in d:
                setattr(st, k, d[k])
        st.ifaces = {k: Iface.from_dict(v) for k, v in d.get("ifaces", {}).items()}
        return st

    def merge(self, other: DeviceState) -> None:
        """Field by field, the newer poll wins (`other` may be older or newer)."""
        if other.last_ts >= self.last_ts:
            self.last_ts, self.site = other.last_ts, other.site
        if other.health_ts >= self.health_ts and other.up is not None:
            self.health_ts, self.up, self.reason = other.health_ts, other.up, other.reason
            self.protocol, self.profile = other.protocol, other.profile
            self.poll_duration = other.poll_duration
        for k in ("uptime", "cpu", "mem_used", "mem_total"):
            held = other_v = getattr(other, k)
            if other_v is not None:
                held = _newer(getattr(self, k), other_v[0], other_v[1])
                setattr(self, k, held)
        for idx, i in other.ifaces.items():
            cur = self.ifaces.get(idx)
            if cur is None or cur.ts <= i.ts:
                self.ifaces[idx] = i


class Shared(Protocol):
    """The shared store view a worker serves from (`collector.liveness.SharedNoc`)."""

    def refresh(self, noc: NocMetrics) -> None: ...

    def owns(self, key: str) -> bool: ...

    def agents(self) -> Iterable[AgentView]: ...


@dataclass(frozen=True, slots=True)
class AgentView:
    tenant: str
    site: str
    agent: str
    last_seen: float
    up: bool
    heartbeat_ts: float | None
    interval_s: float


class NocMetrics(Collector):
    """Register once per registry; feed with `observe(records)` (or from `shared`)."""

    def __init__(self, registry: CollectorRegistry | None, *, stale_after_s: float = 900.0,
                 max_devices: int = 10000, max_interfaces: int = 256,
                 naming: str = "privtel", shared: Shared | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if stale_after_s <= 0:
            raise ValueError("stale_after_s must be positive")
        if max_devices < 1 or max_interfaces < 1:
            raise ValueError("max_devices and max_interfaces must be at least 1")
        if naming not in NAMINGS:
            raise ValueError(f"naming must be one of {', '.join(NAMINGS)}")
        self.stale_after_s, self.max_devices, self.max_interfaces = (
            stale_after_s, max_devices, max_interfaces)
        self.naming, self.shared = naming, shared
        self._clock = clock
        self._lock = threading.RLock()
        self._devices: dict[tuple[str, str], DeviceState] = {}
        self._dropped: dict[str, int] = {"device_limit": 0, "interface_limit": 0}
        self._refresh_failures = 0
        self.handlers = self._handler_table()
        self._if_fams = self._interface_families()
        self._cache: dict[tuple[str, str], _DeviceText] = {}
        if registry is not None:
            registry.register(self)

    # --- feeding -------------------------------------------------------------------------
    def observe(self, records: Iterable[Record]) -> set[tuple[str, str]]:
        """Apply records; returns the (tenant, device) keys they touched."""
        with self._lock:
            # no raw identifier in a label (issue 17)
            return apply_records(self._devices, screen_labels(records), self.handlers,
                                 self._new_device)

    def put(self, st: DeviceState) -> None:
        """Replace one device's state (from the store), liveness included; a new
        device beyond `max_devices` is counted, not held."""
        key = (st.tenant, st.device)
        with self._lock:
            if key not in self._devices and len(self._devices) >= self.max_devices:
                self._dropped["device_limit"] += 1
                return
            self._devices[key] = st

    def retain(self, keep: Callable[[str, str], bool]) -> None:
        """Drop every device for which `keep(tenant, device)` is false."""
        with self._lock:
            for key in [k for k in self._devices if not keep(*k)]:
                del self._devices[key]

    def get(self, tenant: str, device: str) -> DeviceState | None:
        with self._lock:
            return self._devices.get((tenant, device))

    def forget(self, tenant: str, device: str) -> bool:
        with self._lock:
            return self._devices.pop((tenant, device), None) is not None

    def forget_older(self, horizon: float) -> int:
        """Drop devices neither reported nor listed since `horizon`; how many went."""
        with self._lock:
            old = [k for k, d in self._devices.items()
                   if max(d.last_ts, d.listed_at or 0.0) < horizon]
            for k in old:
                del self._devices[k]
            return len(old)

    def device_count(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._devices)

    def _new_device(self, r: Record) -> DeviceState | None:
        if len(self._devices) >= self.max_devices:
            self._expire(self._clock())
            if len(self._devices) >= self.max_devices:
                self._dropped["device_limit"] += 1
                return None
        d = self._devices[(r.tenant, r.device)] = DeviceState(r.tenant, r.site, r.device)
        return d

    def _handler_table(self) -> dict[str, Callable[[DeviceState, float, Any], None]]:
        return {RecordName.DEVICE_HEALTH: _observe_health, RecordName.SNMP_SYSTEM: _observe_system,
                RecordName.HOST_CPU: _observe_cpu, RecordName.HOST_MEMORY: _observe_memory,
                RecordName.IF: self._observe_if, HEARTBEAT_NAME: _observe_heartbeat}

    def _observe_if(self, d: DeviceState, ts: float, f: Any) -> None:
        idx = f.get("if_index")
        if isinstance(idx, bool) or not isinstance(idx, int | str) or idx == "":
            idx = f.get("if_name") or f.get("if_descr")
            if not idx:
                return
        key = _label(idx)
        cur = d.ifaces.get(key)
        if cur is None:
            if len(d.ifaces) >= self.max_interfaces:
                self._dropped["interface_limit"] += 1
                return
        elif cur.ts > ts:
            return
        values: dict[str, float] = {}
        convert = _IF_CONVERT
        for fld, v in f.items():  # the record's fields, fewer than those kept
            if fld in convert:
                t = type(v)  # numbers inline: this runs for every field of every record
                if t is float:
                    values[fld] = v
                elif t is int:
                    values[fld] = float(v)
                elif v is not None:
                    n = convert[fld](v)
                    if n is not None:
                        values[fld] = n
        d.ifaces[key] = Iface(ts, _label(f.get("if_name") or f.get("if_descr") or idx),
                              _label(f.get("if_descr")), _label(f.get("if_alias")), values)

    def _visible(self, d: DeviceState, agents: Mapping[tuple[str, str], AgentView],
                 now: float) -> tuple[bool, AgentView | None]:
        a = agents.get((d.tenant, d.agent)) if d.agent else None
        if d.listed_at is not None and a is not None and a.heartbeat_ts is not None:
            return d.listed_at >= a.heartbeat_ts - 1.5 * a.interval_s, a
        return d.last_ts >= now - self.stale_after_s, a

    def _expire(self, now: float) -> None:
        """Only devices no heartbeat lists expire by age; listed ones go when unlisted."""
        horizon = now - self.stale_after_s
        for key in [k for k, d in self._devices.items()
                    if d.listed_at is None and d.last_ts < horizon]:
            del self._devices[key]

    # --- exposition ----------------------------------------------------------------------
    def describe(self) -> list[Metric]:
        return list(self._families().values())

    def _families(self) -> dict[str, Metric]:
        out: dict[str, Metric] = {}
        for name, doc in DEVICE_SERIES.items():
            labels = [*DEVICE_LABELS, "protocol", "profile"] if name == "privtel_device_info" \
                else [*DEVICE_LABELS, "reason"] if name == "privtel_device_poll_failures" \
                else list(DEVICE_LABELS)
            out[name] = GaugeMetricFamily(name, doc, labels=labels)
        out["privtel_agent_up"] = GaugeMetricFamily(
            "privtel_agent_up", "1 while the agent sends batches or heartbeats within its "
            "allowed silence (a multiple of its heartbeat interval), else 0.",
            labels=list(AGENT_LABELS))
        out["privtel_agent_last_seen_timestamp_seconds"] = GaugeMetricFamily(
            "privtel_agent_last_seen_timestamp_seconds", "When a batch or heartbeat of the "
            "agent was last stored.", labels=list(AGENT_LABELS))
        out["privtel_agent_devices"] = GaugeMetricFamily(
            "privtel_agent_devices", "Devices the agent's last heartbeat listed.",
            labels=list(AGENT_LABELS))
        if self.naming == "privtel":
            for name, (kind, doc, _) in INTERFACE_SERIES.items():
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                out[name] = cls(name, doc, labels=list(IF_LABELS))
            for d in ("in", "out"):
                name = f"privtel_interface_{d}_packets"
                out[name] = CounterMetricFamily(name, f"Packets {d}, by cast (ifHC*Pkts where "
                                                "the device has them, else 32-bit).",
                                                labels=[*IF_LABELS, "cast"])
            out["privtel_interface_info"] = GaugeMetricFamily(
                "privtel_interface_info", "Always 1; description and ifType of each interface "
                "(never the alias: free text typed by people).",
                labels=[*IF_LABELS, "ifdescr", "iftype"])
        else:
            # prometheus_client cannot write a counter family without `_total` (and
            # OpenMetrics refuses one), so the if_mib counters are typed unknown: same
            # names and values as snmp_exporter, rate() and increase() work unchanged.
            for hc, c32, kind in SNMP_IF.values():
                for series in (hc, c32):
                    if series is not None:
                        out[series] = Metric(series, f"IF-MIB {series} ({kind} in snmp_exporter)",
                                             "unknown" if kind == "counter" else kind)
            for name, doc in (("ifHighSpeed", "IF-MIB ifHighSpeed, Mbit/s"),
                              ("ifSpeed", "IF-MIB ifSpeed, bit/s (capped at 2^32-1)"),
                              ("ifLastChange", "IF-MIB ifLastChange, TimeTicks (1/100 s)"),
                              ("sysUpTime", "SNMPv2-MIB sysUpTime, TimeTicks (1/100 s)")):
                out[name] = Metric(name, doc, "gauge")
        out["privtel_metrics_dropped"] = CounterMetricFamily(
            "privtel_metrics_dropped", "Records not exposed because a cardinality cap was "
            "reached.", labels=["reason"])
        out["privtel_noc_refresh_failures"] = CounterMetricFamily(
            "privtel_noc_refresh_failures", "Scrapes served from the last state read because "
            "reading the shared NOC state from the store failed.")
        return out

    def _interface_families(self) -> tuple[_IfFamily, ...]:
        """The per-interface families of this naming, in exposition order."""
        if self.naming == "privtel":
            fams: list[_IfFamily] = [_IfFamily(name + ("_total" if kind == "counter" else ""), name,
                              (_Column(fld),), _privtel_labels)
                    for name, (kind, _, fld) in INTERFACE_SERIES.items()]
            fams += [_IfFamily(f"privtel_interface_{d}_packets_total",
                               f"privtel_interface_{d}_packets",
                               tuple(_Column(f"{d}_{short}_pkts", f',cast="{cast}"')
                                     for short, cast in _CASTS), _privtel_labels)
                     for d in ("in", "out")]
            fams.append(_IfFamily("privtel_interface_info", "privtel_interface_info",
                                  (_Column(None),), _privtel_info_labels))
            return tuple(fams)
        fams = []
        for fld, (hc, c32, _) in SNMP_IF.items():
            bits = None if c32 is None else "pkts_bits" if fld.endswith("_pkts") \
                else "counter_bits"
            fams.append(_IfFamily(hc, hc, (_Column(fld, bits=bits),), _snmp_labels))
            if c32 is not None:
                fams.append(_IfFamily(c32, c32, (_Column(fld, bits=bits, want32=True),),
                                      _snmp_labels))
        fams += [_IfFamily("ifHighSpeed", "ifHighSpeed", (_Column("speed_bps"),), _snmp_labels,
                           lambda x: float(round(x / 1e6))),
                 _IfFamily("ifSpeed", "ifSpeed", (_Column("speed_bps"),), _snmp_labels,
                           lambda x: min(x, 4294967295.0)),
                 _IfFamily("ifLastChange", "ifLastChange", (_Column("last_change_s"),),
                           _snmp_labels, lambda x: float(round(x * 100)))]
        return tuple(fams)

    def collect(self) -> Iterator[Metric]:
        """The registry's view (tests, a collector without a config): `render` parsed
        back, so both are one exposition; a collector serves `render` itself."""
        yield from text_string_to_metric_families(self.render().decode())

    def render(self) -> bytes:
        return b"".join(self.render_parts())

    def render_parts(self) -> list[bytes]:
        """The exposition in the text format (0.0.4), written directly: prometheus_client
        spends about 9 us formatting each sample and a NOC exposition has ~10 samples per
        interface. Each device keeps, per interface family, a byte template of its lines
        with a `%r` where each value goes (rebuilt only when its interfaces or labels
        change) and the chunk last formatted from it (reused while its values are
        unchanged), so a scrape is one C-level format per device and family. The pieces
        are returned unjoined for the HTTP answer to write one after another (joined,
        10,000 devices are a 620 MB copy). The price is memory: templates and chunks held
        are about twice the exposition's size (~1.2 GB for 10,000 devices x 48
        interfaces, whose exposition is ~620 MB)."""
        if self.shared is not None:
            try:
                self.shared.refresh(self)
            except Exception as e:  # serve the last state read; the scrape must not fail
                self._refresh_failures += 1
                log.warning("NOC state refresh from the store failed (%s); serving the last "
                            "state read", type(e).__name__)
        fams = self._families()
        lines: dict[str, list[str]] = {name: [] for name in fams}
        if_fams = self._if_fams
        chunks: list[list[bytes]] = [[] for _ in if_fams]
        now = self._clock()
        agents: dict[tuple[str, str], AgentView] = {}
        if self.shared is not None:
            for a in self.shared.agents():
                agents[(a.tenant, a.agent)] = a
                if self.shared.owns(f"agent/{a.tenant}/{a.agent}"):
                    lv = _label_text(AGENT_LABELS, (a.tenant, a.site, a.agent))
                    lines["privtel_agent_up"].append(
                        f"privtel_agent_up{{{lv}}} {1.0 if a.up else 0.0}\n")
                    lines["privtel_agent_last_seen_timestamp_seconds"].append(
                        f"privtel_agent_last_seen_timestamp_seconds{{{lv}}} "
                        f"{_value(a.last_seen)}\n")
        owns = self.shared.owns if self.shared is not None else None
        with self._lock:
            self._expire(now)
            old, cache = self._cache, {}
            for key, d in self._devices.items():
                if owns is not None and not owns(f"device/{d.tenant}/{d.device}"):
                    continue
                visible, agent = self._visible(d, agents, now)
                if not visible:
                    continue
                c = cache[key] = old.get(key) or _DeviceText()
                self._device_lines(lines, d, now, agent, c)
                for j, chunk in enumerate(self._interface_chunks(d, c)):
                    chunks[j].append(chunk)
            self._cache = cache
            for reason, n in self._dropped.items():
                lines["privtel_metrics_dropped"].append(
                    f'privtel_metrics_dropped_total{{reason="{reason}"}} {float(n)}\n')
            lines["privtel_noc_refresh_failures"].append(
                f"privtel_noc_refresh_failures_total {float(self._refresh_failures)}\n")
        at = {f.metric: j for j, f in enumerate(if_fams)}
        parts: list[bytes] = []
        for name, m in fams.items():
            exposed = name + "_total" if m.type == "counter" else name
            doc = m.documentation.replace("\\", "\\\\").replace("\n", "\\n")
            kind = "untyped" if m.type == "unknown" else m.type
            parts.append((f"# HELP {exposed} {doc}\n# TYPE {exposed} {kind}\n"
                          + "".join(lines[name])).encode())
            at_family = at.get(name)
            if at_family is not None:
                parts += chunks[at_family]
        return parts

    def _device_lines(self, lines: dict[str, list[str]], d: DeviceState, now: float,
                      agent: AgentView | None, c: _DeviceText) -> None:
        """The device's own series (a few per device; the age and an agent's silence
        change them at every scrape, so they are written anew)."""
        key = (d.tenant, d.site, d.device)
        if c.key != key:
            c.key, c.labels = key, _label_text(DEVICE_LABELS, key)
            c.instance = _label_text(("tenant", "site", "instance"), key)
        lv = c.labels
        up, reason = d.up, d.reason
        if agent is not None and not agent.up:
            up, reason = 0.0, AGENT_SILENT
        lines["privtel_device_info"].append(
            f'privtel_device_info{{{lv},protocol="{_escape(d.protocol)}",'
            f'profile="{_escape(d.profile)}"}} 1.0\n')
        if up is not None:
            lines["privtel_device_up"].append(f"privtel_device_up{{{lv}}} {_value(up)}\n")
            if up == 0.0:
                lines["privtel_device_poll_failures"].append(
                    f'privtel_device_poll_failures{{{lv},reason="{_escape(reason or "error")}"}}'
                    " 1.0\n")
        if d.health_ts:
            lines["privtel_device_last_poll_timestamp_seconds"].append(
                f"privtel_device_last_poll_timestamp_seconds{{{lv}}} {_value(d.health_ts)}\n")
            lines["privtel_device_last_poll_age_seconds"].append(
                f"privtel_device_last_poll_age_seconds{{{lv}}} "
                f"{_value(max(0.0, now - d.health_ts))}\n")
        if d.poll_duration is not None:
            lines["privtel_device_poll_duration_seconds"].append(
                f"privtel_device_poll_duration_seconds{{{lv}}} {_value(d.poll_duration)}\n")
        for name, held in (("privtel_device_uptime_seconds", d.uptime),
                           ("privtel_device_cpu_utilization_percent", d.cpu),
                           ("privtel_device_memory_used_bytes", d.mem_used),
                           ("privtel_device_memory_total_bytes", d.mem_total)):
            if held is not None:
                lines[name].append(f"{name}{{{lv}}} {_value(held[1])}\n")
        if d.ifaces:
            lines["privtel_device_interfaces"].append(
                f"privtel_device_interfaces{{{lv}}} {_value(len(d.ifaces))}\n")
        if self.naming != "privtel" and d.uptime is not None:
            lines["sysUpTime"].append(
                f"sysUpTime{{{c.instance}}} {_value(round(d.uptime[1] * 100))}\n")

    def _interface_chunks(self, d: DeviceState, c: _DeviceText) -> list[bytes]:
        """One chunk of lines per interface family for the device's current interfaces
        (one missing from its polls for `stale_after_s` is gone; the device's own
        silence keeps them all)."""
        horizon = d.last_ts - self.stale_after_s
        cur = [(k, i) for k, i in d.ifaces.items() if i.ts >= horizon]
        vals = [i.values for _, i in cur]
        # what the templates depend on: labels, which fields each interface has, widths
        shape = (d.tenant, d.site, d.device,
                 [(k, i.name, i.descr, i.alias, i.values.keys(), i.values.get("if_type"),
                   i.values.get("counter_bits"), i.values.get("pkts_bits")) for k, i in cur])
        if shape != c.shape:
            c.shape = shape
            c.templates = _templates(self._if_fams, c.labels if self.naming == "privtel"
                                     else c.instance, cur)
            c.values = [None] * len(self._if_fams)
            c.chunks = [b""] * len(self._if_fams)
        out = c.chunks
        held = c.values
        for j, (fam, (template, plan, getter)) in enumerate(zip(self._if_fams, c.templates,
                                                                strict=True)):
            if getter is not None:  # one field, every interface has it
                vt = tuple(map(getter, vals))
            else:
                vt = tuple([vals[p][f] for p, f in plan])
            if fam.transform is not None:
                vt = tuple(map(fam.transform, vt))
            if vt == held[j]:
                continue
            held[j] = vt
            s = sum(vt)
            # NaN and infinities are written as the text format spells them, not as repr
            out[j] = template % (vt if s - s == 0 else tuple(_Lit(_value(x)) for x in vt))
        return out


Handler = Callable[[DeviceState, float, Any], None]
_INF = float("inf")


def _escape(v: str) -> str:
    if "\\" not in v and "\n" not in v and '"' not in v:
        return v
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(v: float) -> str:
    v = float(v)
    if v != v:
        return "NaN"
    if v == _INF or v == -_INF:
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


class _Lit:
    """A value whose `%r` is the text given (NaN, +Inf and -Inf in a template)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _label_text(names: Iterable[str], values: Iterable[str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in zip(names, values, strict=True))


def _iftype(v: Mapping[str, float]) -> str:
    t = v.get("if_type")
    return "" if t is None else str(int(t))


def _privtel_labels(prefix: str, idx: str, i: Iface, v: Mapping[str, float]) -> str:
    return f'{prefix},ifindex="{_escape(idx)}",ifname="{_escape(i.name)}"'


def _privtel_info_labels(prefix: str, idx: str, i: Iface, v: Mapping[str, float]) -> str:
    return (f'{_privtel_labels(prefix, idx, i, v)},ifdescr="{_escape(i.descr)}",'
            f'iftype="{_iftype(v)}"')


def _snmp_labels(prefix: str, idx: str, i: Iface, v: Mapping[str, float]) -> str:
    return (f'{prefix},ifIndex="{_escape(idx)}",ifName="{_escape(i.name)}",'
            f'ifDescr="{_escape(i.descr)}",ifAlias="{_escape(i.alias)}",ifType="{_iftype(v)}"')


@dataclass(frozen=True, slots=True)
class _Column:
    """One series per interface of a family: `field`'s value (None: the constant 1 of an
    info series), `extra` label text; with `bits`, only interfaces whose counter width
    (that field, 64 when absent) is 32 (`want32`) or is not."""

    field: str | None
    extra: str = ""
    bits: str | None = None
    want32: bool = False


@dataclass(frozen=True, slots=True)
class _IfFamily:
    """A per-interface family: its exposed name, its key in `_families`, its columns,
    its labels and a transform of the values (snmp_exporter units)."""

    exposed: str
    metric: str
    columns: tuple[_Column, ...]
    labels: Callable[[str, str, Iface, Mapping[str, float]], str]  # after the device's
    transform: Callable[[float], float] | None = None


Template = tuple[bytes, tuple[tuple[int, str], ...], Callable[[Mapping[str, float]], float] | None]


def _templates(fams: Iterable[_IfFamily], prefix: str, cur: list[tuple[str, Iface]]
               ) -> list[Template]:
    """Per family, the device's lines with `%r` for each value, where each value is read
    from ((position in `cur`, field) pairs) and, when the family has one field every
    interface has, an itemgetter reading all of them at once. An interface's label text
    is written once for all the families that share its labels."""
    out: list[Template] = []
    vals = [i.values for _, i in cur]
    labels: dict[Any, list[str]] = {}
    for fam in fams:
        lbl = labels.get(fam.labels)
        if lbl is None:
            lbl = labels[fam.labels] = [fam.labels(prefix, idx, i, i.values).replace("%", "%%")
                                        for idx, i in cur]
        name = fam.exposed
        plan: list[tuple[int, str]]
        getter = None
        if len(fam.columns) == 1:  # the common case, without the general loop
            col = fam.columns[0]
            fld, bits = col.field, col.bits
            end = f"{col.extra}}} {'1.0' if fld is None else '%r'}\n"
            if fld is None:
                sel = lbl
                plan = []
            else:
                where = [p for p, v in enumerate(vals) if fld in v and (
                    bits is None or (v.get(bits, 64.0) == 32.0) == col.want32)]
                sel = [lbl[p] for p in where]
                plan = [(p, fld) for p in where]
                if len(where) == len(cur):
                    getter = itemgetter(fld)
            # one join for all the lines: each line's end and the next one's start between
            parts = [f"{name}{{{(end + name + '{').join(sel)}{end}"] if sel else []
        else:
            parts, plan = [], []
            for pos, v in enumerate(vals):
                for col in fam.columns:
                    if col.field is not None:
                        if col.field not in v:
                            continue
                        if col.bits is not None and (
                                v.get(col.bits, 64.0) == 32.0) != col.want32:
                            continue
                        plan.append((pos, col.field))
                    parts.append(f"{name}{{{lbl[pos]}{col.extra}}} "
                                 f"{'1.0' if col.field is None else '%r'}\n")
        out.append(("".join(parts).encode(), tuple(plan), getter))
    return out


@dataclass(slots=True)
class _DeviceText:
    """A device's rendered exposition, kept between scrapes (see `NocMetrics.render`)."""

    key: tuple[str, str, str] | None = None
    labels: str = ""
    instance: str = ""
    shape: Any = None
    templates: list[Template] = field(default_factory=list)
    values: list[tuple[float, ...] | None] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)


def apply_records(devices: dict[tuple[str, str], DeviceState], records: Iterable[Record],
                  handlers: Mapping[str, Handler],
                  new: Callable[[Record], DeviceState | None]) -> set[tuple[str, str]]:
    """Records into `devices`; the device of the previous record is reused while a run of
    records shares it (a poll's rows do)."""
    touched: set[tuple[str, str]] = set()
    key: tuple[str, str] | None = None
    d: DeviceState | None = None
    for r in records:
        if r.name == HEARTBEAT_NAME and r.fields.get("listed") in (0, False):
            continue  # an agent with no device: its liveness only
        if d is None or key != (r.tenant, r.device):
            key = (r.tenant, r.device)
            d = devices.get(key)
            if d is None:
                d = new(r)
                if d is None:
                    continue
                devices[key] = d
            touched.add(key)
        ts = float(r.ts)
        if ts >= d.last_ts and r.name != HEARTBEAT_NAME:
            d.last_ts, d.site = ts, r.site
        handler = handlers.get(r.name)
        if handler is not None:
            handler(d, ts, r.fields)
    return touched


def _observe_health(d: DeviceState, ts: float, f: Any) -> None:
    if ts >= d.health_ts:
        d.health_ts = ts
        d.up = 1.0 if f.get("up") in (1, True) else 0.0
        reason = f.get("reason")
        d.reason = (reason if reason in HEALTH_REASONS else Reason.ERROR) if reason else None
        d.protocol = _label(f.get("protocol"))[:32]
        d.profile = _label(f.get("profile"))[:64]
        d.poll_duration = _num(f.get("poll_duration_s"))
    d.uptime = _newer(d.uptime, ts, _num(f.get("uptime_s")))


def _observe_heartbeat(d: DeviceState, ts: float, f: Any) -> None:
    """A heartbeat lists the device: its protocol until a poll says more; never its health."""
    if f.get("listed") in (0, False):
        return
    if not d.protocol:
        d.protocol = _label(f.get("protocol"))[:32]
    if d.listed_at is None or ts > d.listed_at:
        d.listed_at = ts


def _observe_system(d: DeviceState, ts: float, f: Any) -> None:
    d.uptime = _newer(d.uptime, ts, _num(f.get("uptime_s")))


def _observe_cpu(d: DeviceState, ts: float, f: Any) -> None:
    d.cpu = _newer(d.cpu, ts, _num(f.get("cpu_util_pct")))


def _observe_memory(d: DeviceState, ts: float, f: Any) -> None:
    d.mem_used = _newer(d.mem_used, ts, _num(f.get("mem_used_bytes")))
    d.mem_total = _newer(d.mem_total, ts, _num(f.get("mem_total_bytes")))
