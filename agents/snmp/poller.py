"""The "snmp" poller: one poll of one device -> records, never an exception.

A poll GETs the system group, then runs the device's profiles (those it
names, else every profile whose `match` fits its sysObjectID; see
`profiles.py`): the built-in IF-MIB walk with counters and rates, and the
declarative scalar GETs and table walks. It emits `snmp.system`, one `if`
record per interface, the profiles' records, then exactly one
`device.health`. A device that
times out, rejects our credentials or answers garbage yields only the health
record with a reason code; a walk that breaks half way yields what arrived
plus `reason="partial_walk"`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from agents.credentials import ConfigSecrets
from agents.pollers import Device, PollerContext, PollerSpec, health_record, register
from agents.snmp import errors as E
from agents.snmp.client import EnginePool, PduError, PysnmpClient, SnmpClient
from agents.snmp.fastclient import FastClient, FastTransport, fast_path_supports
from agents.snmp.options import SnmpOptions, parse_options
from agents.snmp.profiles import (
    Profile,
    default_profiles,
    profiles_for,
    scalar_fields,
    select,
    table_rows,
)
from agents.snmp.values import (
    COUNTER32,
    COUNTER64,
    EXCEPTIONS,
    Oid,
    Value,
    VarBind,
    as_text,
)
from agents.snmp.walk import walk
from pipelines.config import Section
from pipelines.counters import rates
from pipelines.record import Kind, Record
from pipelines.vocab import RecordName

log = logging.getLogger(__name__)

SYS_DESCR = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_OBJECT_ID = (1, 3, 6, 1, 2, 1, 1, 2, 0)
SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)
SYSTEM_OIDS = (SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_NAME)
IF_TABLE = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IF_X_TABLE = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
SCALARS_PER_GET = 16
OCTET_FIELDS = ("in_octets", "out_octets")
ERROR_FIELDS = ("in_errors", "out_errors", "in_discards", "out_discards")  # always Counter32

# column -> field, for the contract's `if` record
_IF_COLS = {2: "if_descr", 3: "if_type", 5: "speed", 7: "admin_status", 8: "oper_status",
            9: "last_change", 10: "in_octets32", 11: "in_ucast32", 13: "in_discards",
            14: "in_errors", 16: "out_octets32", 17: "out_ucast32", 19: "out_discards",
            20: "out_errors"}
_IFX_COLS = {1: "if_name", 2: "in_mcast32", 3: "in_bcast32", 4: "out_mcast32",
             5: "out_bcast32", 6: "in_octets64", 7: "in_ucast64", 8: "in_mcast64",
             9: "in_bcast64", 10: "out_octets64", 11: "out_ucast64", 12: "out_mcast64",
             13: "out_bcast64", 15: "high_speed", 18: "if_alias"}
# packet fields of the `if` record: the 64-bit ifXTable column when the device has it
_PKTS = tuple(f"{d}_{c}" for d in ("in", "out") for c in ("ucast", "mcast", "bcast"))


@dataclass(slots=True)
class _DeviceState:
    client: SnmpClient
    options: SnmpOptions
    address: tuple[str, int]
    previous: dict[int, dict[str, Any]] = field(default_factory=dict)
    previous_ts: float = 0.0
    previous_uptime_s: float | None = None
    use_bulk: bool = True


def _columns(vbs: list[VarBind], base: Oid, cols: dict[int, str],
             rows: dict[int, dict[str, Value]], tags: dict[tuple[int, str], int]) -> None:
    n = len(base)
    want = n + 2
    tagged = ("in_octets32", "out_octets32", "in_octets64", "out_octets64")
    for oid, tag, value in vbs:
        if len(oid) != want or tag in EXCEPTIONS:
            continue
        name = cols.get(oid[n])
        if name is None:
            continue
        idx = oid[n + 1]
        row = rows.get(idx)
        if row is None:
            row = rows[idx] = {}
        row[name] = value
        if name in tagged:
            tags[idx, name] = tag


def _int(v: Value) -> int | None:
    return v if isinstance(v, int) else None


def interface_fields(rows: dict[int, dict[str, Value]],
                     tags: dict[tuple[int, str], int]) -> dict[int, dict[str, Any]]:
    """Raw IF-MIB columns -> the contract's `if` fields; 64-bit counters when present."""
    out: dict[int, dict[str, Any]] = {}
    for idx in sorted(rows):
        r = rows[idx]
        hc = tags.get((idx, "in_octets64")) == COUNTER64 and tags.get(
            (idx, "out_octets64")) == COUNTER64
        speed = _int(r.get("speed"))
        high = _int(r.get("high_speed"))
        last_change = _int(r.get("last_change"))
        if high and (speed is None or speed >= 4294967295):
            speed = high * 1_000_000
        out[idx] = {
            "if_index": idx,
            "if_descr": as_text(r.get("if_descr")),
            "if_name": as_text(r.get("if_name")),
            "if_alias": as_text(r.get("if_alias")),
            "in_octets": _int(r.get("in_octets64" if hc else "in_octets32")),
            "out_octets": _int(r.get("out_octets64" if hc else "out_octets32")),
            "in_errors": _int(r.get("in_errors")),
            "out_errors": _int(r.get("out_errors")),
            "in_discards": _int(r.get("in_discards")),
            "out_discards": _int(r.get("out_discards")),
            "oper_status": _int(r.get("oper_status")),
            "admin_status": _int(r.get("admin_status")),
            "speed_bps": speed,
            "counter_bits": 64 if hc else (
                32 if tags.get((idx, "in_octets32")) == COUNTER32 else None),
            "if_type": _int(r.get("if_type")),
            "last_change_s": None if last_change is None else last_change / 100,
        }
        hc_pkts = _int(r.get("in_ucast64")) is not None
        for pk in _PKTS:
            out[idx][f"{pk}_pkts"] = _int(r.get(f"{pk}64" if hc_pkts else f"{pk}32"))
        out[idx]["pkts_bits"] = 64 if hc_pkts else (
            32 if _int(r.get("in_ucast32")) is not None else None)
    return out


def uses_fast_path(opts: SnmpOptions) -> bool:
    """The lean codec for v2c and the common v3 protocols unless pysnmp is asked for."""
    return opts.engine != "pysnmp" and fast_path_supports(opts)


class SnmpPoller:
    """Polls any number of devices; shares pysnmp engines, keeps per-device state."""

    def __init__(self, profiles: dict[str, Profile] | None = None) -> None:
        self._profiles = default_profiles() if profiles is None else profiles
        self._engines = EnginePool()
        self._fast = FastTransport()
        self._devices: dict[str, _DeviceState] = {}

    @classmethod
    def from_context(cls, ctx: PollerContext) -> SnmpPoller:
        """The poller an agent builds: built-in profiles plus the configured dirs."""
        return cls(profiles=profiles_for(ctx.snmp_profile_dirs))

    def _state(self, device: Device) -> _DeviceState:
        st = self._devices.get(device.name)
        addr = (device.address, device.port)
        if st is None or st.options != device.options or st.address != addr:
            opts: SnmpOptions = device.options
            client: SnmpClient
            if uses_fast_path(opts):
                client = FastClient(self._fast, device.address, device.port, opts)
            else:
                client = PysnmpClient(self._engines.get(opts), device.address, device.port, opts)
            st = self._devices[device.name] = _DeviceState(client, opts, addr)
        return st

    async def poll(self, device: Device) -> list[Record]:
        started = time.time()
        try:
            return await self._poll(device, started)
        except E.SnmpError as e:
            return [health_record(device, up=False, reason=e.reason, started=started)]
        except Exception as e:  # a bug must not stop the agent; it is reported as data
            log.warning("snmp poll of device %s failed: %s", device.name, type(e).__name__)
            return [health_record(device, up=False, reason=E.ERROR, started=started)]

    async def _poll(self, device: Device, started: float) -> list[Record]:
        st = self._state(device)
        opts = st.options
        client = st.client
        got = {oid: (tag, v) for oid, tag, v in await client.get(SYSTEM_OIDS)}
        ticks = got.get(SYS_UPTIME, (0, None))[1]
        uptime_s = ticks / 100 if isinstance(ticks, int) else None
        now = time.time()

        def rec(kind: Kind, name: str, fields: dict[str, Any]) -> Record:
            return Record(kind=kind, tenant=device.tenant, site=device.site,
                          device=device.name, name=name, fields=fields, ts=now)

        records = [rec(Kind.INVENTORY, RecordName.SNMP_SYSTEM, {
            "sys_descr": as_text(got.get(SYS_DESCR, (0, None))[1]),
            "sys_object_id": as_text(got.get(SYS_OBJECT_ID, (0, None))[1]),
            "sys_name": as_text(got.get(SYS_NAME, (0, None))[1]),
            "uptime_s": uptime_s,
        })]
        sys_oid = got.get(SYS_OBJECT_ID, (0, None))[1]
        profiles = select(self._profiles, opts.profiles,
                          sys_oid if isinstance(sys_oid, tuple) else None)
        reason: str | None = None
        if any(p.handler == "if-mib" for p in profiles):
            reason = await self._interfaces(st, client, now, uptime_s, records, rec)
        r2 = await self._profile_records(st, client, profiles, records, rec)
        reason = reason or r2
        extra: dict[str, Any] = {}
        if uptime_s is not None:
            extra["uptime_s"] = uptime_s
        records.append(health_record(device, up=True, reason=reason, started=started, **extra))
        return records

    async def _interfaces(self, st: _DeviceState, client: SnmpClient, now: float,
                          uptime_s: float | None, records: list[Record], rec: Any) -> str | None:
        rows: dict[int, dict[str, Value]] = {}
        tags: dict[tuple[int, str], int] = {}
        reason: str | None = None
        for base, cols in ((IF_TABLE, _IF_COLS), (IF_X_TABLE, _IFX_COLS)):
            res = await walk(client, base, st.options.max_repetitions, use_bulk=st.use_bulk)
            st.use_bulk = st.use_bulk and not res.bulk_refused
            _columns(res.varbinds, base, cols, rows, tags)
            if res.error is not None and reason is None:
                # the device answered the system GET, so a broken walk is partial data
                reason = E.MALFORMED if res.error.reason == E.MALFORMED else E.PARTIAL
        current = interface_fields(rows, tags)
        for idx, fields in current.items():
            prev = st.previous.get(idx)
            if prev is not None and fields["counter_bits"]:
                speed = fields["speed_bps"]
                cap = {n: speed / 8 * 1.5 for n in ("in_octets", "out_octets")} if speed else {}
                span: dict[str, Any] = {"prev_ts": st.previous_ts, "cur_ts": now,
                                        "prev_uptime_s": st.previous_uptime_s,
                                        "cur_uptime_s": uptime_s}
                fields.update(rates(prev, fields, OCTET_FIELDS, bits=fields["counter_bits"],
                                    prev_bits=prev["counter_bits"], max_per_s=cap, **span))
                fields.update(rates(prev, fields, ERROR_FIELDS, bits=32, **span))
            records.append(rec(Kind.METRIC, RecordName.IF, fields))
        st.previous = {i: f for i, f in current.items() if f["counter_bits"]}
        st.previous_ts, st.previous_uptime_s = now, uptime_s
        return reason

    async def _profile_records(self, st: _DeviceState, client: SnmpClient,
                               profiles: list[Profile], records: list[Record],
                               rec: Any) -> str | None:
        reason: str | None = None
        oids = [o for p in profiles for o in p.scalar_oids()]
        got: dict[Oid, tuple[int, Value]] = {}
        for i in range(0, len(oids), SCALARS_PER_GET):
            chunk = oids[i:i + SCALARS_PER_GET]
            try:
                vbs = await client.get(chunk)
            except PduError as e:
                if e.status != 2:  # v1 answers noSuchName for the whole PDU: ask one by one
                    reason = reason or E.PARTIAL
                    continue
                vbs = []
                for o in chunk:
                    try:
                        vbs += await client.get([o])
                    except PduError:
                        continue
            except E.SnmpError:
                reason = reason or E.PARTIAL
                continue
            got.update((o, (t, v)) for o, t, v in vbs)
        for p in profiles:
            for g in p.groups:
                if g.is_table:
                    res = await walk(client, g.entry, st.options.max_repetitions,
                                     use_bulk=st.use_bulk)
                    st.use_bulk = st.use_bulk and not res.bulk_refused
                    if res.error is not None:
                        reason = reason or E.PARTIAL
                    for fields in table_rows(g, res.varbinds):
                        records.append(rec(g.kind, g.record, fields))
                else:
                    scalars = scalar_fields(g, got)
                    if scalars is not None:
                        records.append(rec(g.kind, g.record, scalars))
        return reason

    def forget(self, device_name: str) -> None:
        """Drop a removed device's state (counter baselines, engine cache)."""
        self._devices.pop(device_name, None)

    async def settled(self, device: Device, kept: bool) -> None:
        """Nothing to move on: a lost sample only widens the next rate's interval."""

    async def close(self) -> None:
        for st in self._devices.values():
            await st.client.close()
        self._devices.clear()
        self._engines.close()
        self._fast.close()


def _parse_options(s: Section, ctx: PollerContext) -> SnmpOptions:
    return parse_options(s, ConfigSecrets(ctx.credentials_file, ctx.credentials_key_file),
                         profiles_for(ctx.snmp_profile_dirs))


register("snmp", PollerSpec(default_port=161, parse_options=_parse_options,
                            make=SnmpPoller.from_context))
