"""SNMP trap and inform receiver: notifications become `snmp.trap` event records.

pysnmp's notification receiver does the protocol work (v1/v2c communities,
v3 USM with the sender's engine id for traps and ours for informs, and the
acknowledgement an inform needs); this module turns each notification into
one flat event record and hands it to an async `emit`, the same sink the
scheduler uses. Records carry the sender's address in `source_ip` (and any
IpAddress varbind as `vbN_ip`) for the pseudonymiser to replace; logs never do.

Config (`[traps]` in the agent config):

    [traps]
    listen = "0.0.0.0"
    port = 162
    communities = ["public"]
    [[traps.users]]
    user = "noc"
    auth_protocol = "sha256"
    auth_key = "..."
    priv_protocol = "aes"
    priv_key = "..."
    engine_id = "80001f8880..."   # the sender's, for v3 traps; omit for informs

With a credential store the secrets are named instead (inline ones are then
refused): `community_credentials = ["trap-public"]` (each credential's
`snmp_community`) and, per user, `credential = "trap-noc"` (its
`snmp_auth_key`/`snmp_priv_key`, and its username when `user` is left out).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import ntfrcv
from pysnmp.proto.rfc1902 import OctetString

from agents.credentials import ConfigSecrets
from agents.snmp.client import AUTH, PRIV, to_varbind
from agents.snmp.options import AUTH_PROTOCOLS, PRIV_PROTOCOLS
from agents.snmp.values import (
    IP_ADDRESS,
    OBJECT_ID,
    OCTET_STRING,
    TIMETICKS,
    Oid,
    VarBind,
    as_text,
    oid_str,
)
from pipelines.config import ConfigError, Section
from pipelines.lifecycle import Lifecycle
from pipelines.record import Kind, Record
from pipelines.vocab import RecordName, TrapName

log = logging.getLogger(__name__)

SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SNMP_TRAP_OID = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)
SNMP_TRAP_ADDRESS = (1, 3, 6, 1, 6, 3, 18, 1, 3, 0)
_STD = (1, 3, 6, 1, 6, 3, 1, 1, 5)
KNOWN_TRAPS: dict[Oid, str] = {
    (*_STD, 1): TrapName.COLD_START, (*_STD, 2): TrapName.WARM_START,
    (*_STD, 3): TrapName.LINK_DOWN, (*_STD, 4): TrapName.LINK_UP,
    (*_STD, 5): TrapName.AUTHENTICATION_FAILURE,
}
_IF_ENTRY = (1, 3, 6, 1, 2, 1, 2, 2, 1)
_LINK_COLS = {1: "if_index", 7: "admin_status", 8: "oper_status"}
MAX_GENERIC_VARBINDS = 60

Emit = Callable[[list[Record]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TrapUser:
    user: str
    auth_protocol: str = "none"
    auth_key: str = field(default="", repr=False)
    priv_protocol: str = "none"
    priv_key: str = field(default="", repr=False)
    engine_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class TrapConfig:
    listen: str = "0.0.0.0"
    port: int = 162
    communities: tuple[str, ...] = ("public",)
    users: tuple[TrapUser, ...] = ()


def parse_trap_config(s: Section, secrets: ConfigSecrets | None = None) -> TrapConfig:
    """Read `[traps]` strictly; errors name the key, never a key's value."""
    src = secrets if secrets is not None else ConfigSecrets()
    if secrets is not None:
        secrets.refuse_inline(s, "communities")
    listen = s.str("listen", "0.0.0.0")
    try:
        ipaddress.ip_address(listen)
    except ValueError:
        raise s.error("listen", "must be an IP address to bind") from None
    port = s.int("port", 162, lo=1, hi=65535)
    refs = s.str_list("community_credentials", [])
    communities = tuple(s.str_list("communities", [] if refs else ["public"])) + tuple(
        src.secret(s, "community_credentials", n, "snmp_community") for n in refs)
    users = []
    for u in s.sections("users"):
        if secrets is not None:
            secrets.refuse_inline(u, "auth_key")
            secrets.refuse_inline(u, "priv_key")
        auth = u.str("auth_protocol", "none", choices=AUTH_PROTOCOLS)
        priv = u.str("priv_protocol", "none", choices=PRIV_PROTOCOLS)
        auth_key = u.str("auth_key", "")
        priv_key = u.str("priv_key", "")
        eid = u.str("engine_id", None)
        name = u.str("user", None)
        ref = u.str("credential", None)
        if ref is not None:
            if auth_key or priv_key:
                raise u.error("credential", "is set, so auth_key and priv_key must not be")
            name = name or src.get(u, "credential", ref).username
            if auth != "none":
                auth_key = src.secret(u, "credential", ref, "snmp_auth_key")
            if priv != "none":
                priv_key = src.secret(u, "credential", ref, "snmp_priv_key")
        if not name:
            raise u.error("user", "is required (or a credential with a username)")
        if auth != "none" and len(auth_key) < 8:
            raise u.error("auth_key", "must be at least 8 characters (RFC 3414)")
        if priv != "none" and (auth == "none" or len(priv_key) < 8):
            raise u.error("priv_key", "needs an auth_protocol and at least 8 characters")
        engine_id = None
        if eid is not None:
            try:
                engine_id = bytes.fromhex(eid.removeprefix("0x"))
            except ValueError:
                raise u.error("engine_id", "must be hex") from None
            if not 5 <= len(engine_id) <= 32:
                raise u.error("engine_id", "must be 5 to 32 bytes (RFC 3411)")
        u.done()
        users.append(TrapUser(name, auth, auth_key, priv, priv_key, engine_id))
    s.done()
    if not communities and not users:
        raise ConfigError(s.file, s.key("communities"), "no communities and no users: "
                          "the receiver would accept nothing")
    return TrapConfig(listen, port, communities, tuple(users))


def _scalar(tag: int, v: Any) -> Any:
    if tag == IP_ADDRESS and isinstance(v, bytes) and len(v) == 4:
        return str(ipaddress.IPv4Address(v))
    if tag in (OCTET_STRING, OBJECT_ID):
        return as_text(v)
    if isinstance(v, bytes):
        return v.hex()
    return v


def trap_fields(varbinds: list[VarBind], *, source_ip: str, version: str,
                pdu: str) -> dict[str, Any]:
    """The flat fields of one notification: known traps named, the rest kept generically."""
    f: dict[str, Any] = {"source_ip": source_ip, "version": version, "pdu": pdu}
    trap_oid: Oid | None = None
    n = 0
    for oid, tag, v in varbinds:
        if oid == SNMP_TRAP_OID and isinstance(v, tuple):
            trap_oid = v
        elif oid == SYS_UPTIME and tag == TIMETICKS and isinstance(v, int):
            f["uptime_s"] = v / 100
        elif oid == SNMP_TRAP_ADDRESS and tag == IP_ADDRESS:
            f["agent_ip"] = _scalar(tag, v)
        elif oid[:-1][: len(_IF_ENTRY)] == _IF_ENTRY and len(oid) == len(_IF_ENTRY) + 2 \
                and oid[len(_IF_ENTRY)] in _LINK_COLS:
            f[_LINK_COLS[oid[len(_IF_ENTRY)]]] = v
            f.setdefault("if_index", oid[-1])
        elif n < MAX_GENERIC_VARBINDS:
            n += 1
            f[f"vb{n}_oid"] = oid_str(oid)
            f[f"vb{n}_ip" if tag == IP_ADDRESS else f"vb{n}_value"] = _scalar(tag, v)
    f["trap_oid"] = oid_str(trap_oid) if trap_oid else None
    f["trap"] = str(KNOWN_TRAPS.get(trap_oid, TrapName.UNKNOWN) if trap_oid else TrapName.UNKNOWN)
    return f


class TrapReceiver(Lifecycle):
    """Listens for notifications; `start()` binds, `close()` unbinds (safe without start)."""

    def __init__(self, cfg: TrapConfig, emit: Emit, *, tenant: str, site: str,
                 devices_by_address: Mapping[str, str] | None = None) -> None:
        self._cfg, self._emit = cfg, emit
        self._tenant, self._site = tenant, site
        self._names = dict(devices_by_address or {})
        self._engine: engine.SnmpEngine | None = None
        self._rcv: ntfrcv.NotificationReceiver | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.received = 0
        self.port = cfg.port

    async def _start(self) -> None:
        eng = engine.SnmpEngine()
        transport = udp.UdpTransport().open_server_mode((self._cfg.listen, self._cfg.port))
        config.add_transport(eng, udp.DOMAIN_NAME, transport)
        await transport._lport  # bound (or failed) before we say we are listening
        if self._cfg.port == 0:
            self.port = transport.transport.get_extra_info("sockname")[1]
        for i, c in enumerate(self._cfg.communities):
            config.add_v1_system(eng, f"c{i}", c)
        for u in self._cfg.users:
            kw: dict[str, Any] = {}
            if u.engine_id is not None:
                kw["securityEngineId"] = OctetString(u.engine_id)
            config.add_v3_user(eng, u.user, AUTH[u.auth_protocol], u.auth_key or None,
                               PRIV[u.priv_protocol], u.priv_key or None, **kw)
        self._rcv = ntfrcv.NotificationReceiver(eng, self._on_notification)
        self._engine = eng

    def _on_notification(self, eng: Any, state_ref: Any, ctx_engine_id: Any, ctx_name: Any,
                         varbinds: Any, cb_ctx: Any) -> None:
        try:
            ex = eng.observer.get_execution_context("rfc3412.receiveMessage:request")
            addr = ex["transportAddress"]
            source = str(addr[0])
            mp = int(ex.get("messageProcessingModel", 1))
            pdu_type = ex.get("pdu")
            is_inform = pdu_type is not None and "Inform" in type(pdu_type).__name__
            vbs = [to_varbind(o, v) for o, v in varbinds]
            fields = trap_fields(vbs, source_ip=source,
                                 version={0: "1", 1: "2c", 3: "3"}.get(mp, str(mp)),
                                 pdu="inform" if is_inform else "trap")
            rec = Record(kind=Kind.EVENT, tenant=self._tenant, site=self._site,
                         device=self._names.get(source, source), name=RecordName.SNMP_TRAP,
                         fields=fields, ts=time.time())
        except Exception as e:  # one odd notification must not stop the receiver
            log.warning("dropped an SNMP notification that did not convert: %s",
                        type(e).__name__)
            return
        self.received += 1
        t: asyncio.Task[None] = asyncio.ensure_future(self._emit([rec]))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _close(self) -> None:
        if self._engine is not None:
            if self._rcv is not None:
                self._rcv.close(self._engine)
            self._engine.close_dispatcher()
            self._engine = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
