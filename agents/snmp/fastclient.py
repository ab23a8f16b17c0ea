"""The fast path: v2c and v3 GET/GETNEXT/GETBULK over one shared asyncio datagram endpoint.

One UDP socket serves every device of a poller; responses are matched to
requests by request-id and sender address. Each request has its own timer
(timeout x retries, same request-id on resend so a late first answer still
counts). A datagram from a device that does not decode fails that device's
pending requests as `malformed_reply` at once, instead of letting them run
into a timeout. For v3 the engine id, boots and time found by discovery are
cached per device and kept current from authenticated replies, so a steady
poll costs no extra round trips.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.snmp import errors as E
from agents.snmp import usm
from agents.snmp.client import PduError, TooBig
from agents.snmp.fastcodec import (
    FLAG_AUTH,
    FLAG_PRIV,
    FLAG_REPORTABLE,
    GET,
    GETBULK,
    GETNEXT,
    REPORT,
    RESPONSE,
    Pdu,
    decode_scoped_pdu,
    decode_v2c,
    decode_v3,
    enc_pdu,
    encode_scoped_pdu,
    encode_v2c,
    encode_v3,
    peek_version_and_id,
)
from agents.snmp.options import SnmpOptions
from agents.snmp.values import Oid, VarBind

Addr = tuple[str, int]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: FastTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.: let timers run
        pass


class FastTransport:
    """The shared socket and the table of requests waiting for an answer."""

    def __init__(self) -> None:
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self._pending: dict[int, tuple[asyncio.Future[Any], Addr]] = {}
        self._ids = itertools.count(int.from_bytes(os.urandom(3), "big") + 1)
        self._lock = asyncio.Lock()
        self.malformed = 0

    def next_id(self) -> int:
        rid = next(self._ids)
        if rid >= 2**31 - 1:
            self._ids = itertools.count(1)
            rid = next(self._ids)
        return rid

    async def _transport(self, family: int) -> asyncio.DatagramTransport:
        t = self._transports.get(family)
        if t is not None:
            return t
        async with self._lock:
            t = self._transports.get(family)
            if t is None:
                loop = asyncio.get_running_loop()
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
                sock.setblocking(False)
                t, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
                self._transports[family] = t
        return t

    def _received(self, data: bytes, addr: Addr) -> None:
        try:
            version, key = peek_version_and_id(data)
            reply: Any = data
            if version != 3:
                reply = decode_v2c(data)
                key = reply.pdu.request_id
        except E.SnmpDecodeError as e:
            self.malformed += 1
            for rid, (fut, a) in list(self._pending.items()):
                if a == addr and not fut.done():
                    fut.set_exception(E.SnmpDecodeError(e.detail))
                    del self._pending[rid]
            return
        hit = self._pending.get(key)
        if hit is None or hit[1] != addr or hit[0].done():
            return  # late, duplicate or spoofed: ignore
        hit[0].set_result(reply)
        del self._pending[key]

    async def request(self, addr: Addr, family: int, build: Any, timeout_s: float,
                      retries: int) -> Any:
        """Send `build(id)` and wait for the answer with that id: a decoded v2c `Message`,
        or the raw bytes of a v3 message for the caller's USM processing."""
        t = await self._transport(family)
        loop = asyncio.get_running_loop()
        rid = self.next_id()
        payload = build(rid)
        for _ in range(retries + 1):
            fut: asyncio.Future[Any] = loop.create_future()
            self._pending[rid] = (fut, addr)
            t.sendto(payload, addr)
            timer = loop.call_later(timeout_s, _expire, fut)
            try:
                return await fut
            except TimeoutError:
                continue
            finally:
                timer.cancel()
                if self._pending.get(rid, (None,))[0] is fut:
                    del self._pending[rid]
        raise E.SnmpTimeout()

    def close(self) -> None:
        for t in self._transports.values():
            t.close()
        self._transports.clear()
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


_USM_STATS = (1, 3, 6, 1, 6, 3, 15, 1, 1)
_REPORTS = {1: (E.AUTH_FAILED, "unsupported security level"),
            2: (E.WRONG_ENGINE_TIME, "not in time window"),
            3: (E.UNKNOWN_USER, "unknown user name"),
            4: (E.ERROR, "unknown engine id"),
            5: (E.AUTH_FAILED, "wrong digest"),
            6: (E.AUTH_FAILED, "decryption error")}
TIME_WINDOW_S = 150


class _Resync(Exception):
    pass


@dataclass(slots=True)
class EngineState:
    """What discovery learnt about the device's engine, kept across polls (RFC 3414 2.3)."""

    engine_id: bytes
    boots: int
    time: int
    at: float  # our monotonic clock when `time` was true
    latest: int = 0  # latestReceivedEngineTime, for the replay check

    def now(self, clock: Callable[[], float]) -> int:
        return min(self.time + int(clock() - self.at), 2**31 - 1)


class FastClient:
    """A v2c or v3 (USM, the common auth/priv protocols) device on the shared transport;
    same primitives as `PysnmpClient`."""

    def __init__(self, transport: FastTransport, host: str, port: int, opts: SnmpOptions,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        if not fast_path_supports(opts):
            raise ValueError("these options need pysnmp; see fast_path_supports()")
        self.version = opts.version
        self._t = transport
        self._host, self._port, self._opts = host, port, opts
        self._community = opts.community.encode()
        self._addr: Addr | None = None
        self._family = socket.AF_INET
        self._clock = clock
        self.engine: EngineState | None = None
        self._salt = usm.Salt()
        self._user = opts.user.encode()
        self._context = opts.context.encode()
        self.discoveries = 0

    async def _resolve(self) -> Addr:
        if self._addr is None:
            try:
                ip = ipaddress.ip_address(self._host)
                host = str(ip)
            except ValueError:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    self._host, self._port, type=socket.SOCK_DGRAM)
                if not infos:
                    raise E.SnmpError(E.ERROR, "name does not resolve") from None
                host = str(infos[0][4][0])
                ip = ipaddress.ip_address(host)
            self._family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            self._addr = (host, self._port)
        return self._addr

    async def _req(self, pdu_type: int, oids: Sequence[Oid], rep: int = 0) -> list[VarBind]:
        addr = await self._resolve()
        oids = list(oids)
        if self.version == "3":
            pdu = await self._req_v3(addr, pdu_type, oids, rep)
        else:
            community = self._community

            def build(rid: int) -> bytes:
                return encode_v2c(community, enc_pdu(pdu_type, rid, oids, max_repetitions=rep))

            msg = await self._t.request(addr, self._family, build, self._opts.timeout_s,
                                        self._opts.retries)
            if msg.community != community:
                raise E.SnmpDecodeError("reply for another community")
            pdu = msg.pdu
        if pdu.type != RESPONSE:
            raise E.SnmpDecodeError("unexpected PDU in reply")
        if pdu.error_status:
            if pdu.error_status == 1:
                raise TooBig()
            raise PduError(pdu.error_status, pdu.error_index)
        return pdu.varbinds

    # -- v3 ---------------------------------------------------------------

    async def discover(self) -> EngineState:
        """Learn the engine id, boots and time with an unauthenticated probe (RFC 3414 4)."""
        addr = await self._resolve()

        def build(mid: int) -> bytes:
            scoped = encode_scoped_pdu(b"", b"", enc_pdu(GET, mid, []))
            return encode_v3(mid, FLAG_REPORTABLE, b"", 0, 0, b"", 0, b"", scoped, False)[0]

        raw = await self._t.request(addr, self._family, build, self._opts.timeout_s,
                                    self._opts.retries)
        msg = decode_v3(raw)
        if not 5 <= len(msg.engine_id) <= 32:
            raise E.SnmpDecodeError("discovery reply without a valid engine id")
        self.discoveries += 1
        self.engine = EngineState(msg.engine_id, msg.boots, msg.time, self._clock(), msg.time)
        return self.engine

    async def _req_v3(self, addr: Addr, pdu_type: int, oids: list[Oid], rep: int) -> Pdu:
        last: E.SnmpError | None = None
        for _ in range(2):  # a second go after rediscovery or a time resync
            eng = self.engine or await self.discover()
            try:
                return await self._send_v3(addr, eng, pdu_type, oids, rep)
            except _Resync as e:
                last = e.args[0]
        assert last is not None
        raise last

    async def _send_v3(self, addr: Addr, eng: EngineState, pdu_type: int, oids: list[Oid],
                       rep: int) -> Pdu:
        o = self._opts
        auth = o.auth_protocol != "none"
        priv = o.priv_protocol != "none"
        flags = FLAG_REPORTABLE | (FLAG_AUTH if auth else 0) | (FLAG_PRIV if priv else 0)
        auth_key = usm.localize(o.auth_protocol, o.auth_key.encode(), eng.engine_id) \
            if auth else b""
        priv_key = usm.priv_key(o.auth_protocol, o.priv_protocol, o.priv_key.encode(),
                                eng.engine_id) if priv else b""
        boots, etime = eng.boots, eng.now(self._clock)

        def build(mid: int) -> bytes:
            scoped = encode_scoped_pdu(eng.engine_id, self._context,
                                       enc_pdu(pdu_type, mid, oids, max_repetitions=rep))
            priv_params = b""
            if priv:
                scoped, priv_params = usm.encrypt(o.priv_protocol, priv_key, boots, etime,
                                                  self._salt.next(), scoped)
            alen = usm.AUTH[o.auth_protocol][1] if auth else 0
            msg, off = encode_v3(mid, flags, eng.engine_id, boots, etime, self._user, alen,
                                 priv_params, scoped, priv)
            if auth:
                mac = usm.sign(o.auth_protocol, auth_key, msg)
                msg = msg[:off] + mac + msg[off + alen:]
            return msg

        raw = await self._t.request(addr, self._family, build, o.timeout_s, o.retries)
        msg = decode_v3(raw)
        authed = bool(msg.flags & FLAG_AUTH)
        if authed:
            if not auth:
                raise E.SnmpDecodeError("authenticated reply to an unauthenticated request")
            if msg.engine_id != eng.engine_id or not usm.verify(
                    o.auth_protocol, auth_key, raw, msg.auth_span, msg.auth_params):
                raise E.SnmpAuthError(E.AUTH_FAILED, "reply failed authentication")
        data: bytes | memoryview = msg.data
        if msg.encrypted:
            if not (authed and msg.flags & FLAG_PRIV and priv):
                raise E.SnmpDecodeError("encrypted reply we cannot decrypt")
            try:
                data = usm.decrypt(o.priv_protocol, priv_key, msg.boots, msg.time,
                                   msg.priv_params, data)
            except ValueError:
                raise E.SnmpDecodeError("reply does not decrypt") from None
        _, _, pdu = decode_scoped_pdu(data)
        if pdu.type == REPORT:
            self._report(pdu, msg.engine_id, msg.boots, msg.time, authed)
        if authed:
            self._check_time(eng, msg.boots, msg.time)
        elif auth:
            raise E.SnmpAuthError(E.AUTH_FAILED, "unauthenticated reply to an authenticated "
                                                 "request")
        return pdu

    def _report(self, pdu: Pdu, engine_id: bytes, boots: int, etime: int, authed: bool) -> None:
        oid = pdu.varbinds[0][0] if pdu.varbinds else ()
        code = oid[len(_USM_STATS)] if oid[: len(_USM_STATS)] == _USM_STATS and len(
            oid) > len(_USM_STATS) else 0
        reason, why = _REPORTS.get(code, (E.ERROR, "agent sent a report"))
        if code == 4:  # unknownEngineID: our cache is stale (device replaced)
            self.engine = None
            raise _Resync(E.SnmpAuthError(E.ERROR, why))
        if code == 2 and authed and len(engine_id) >= 5:
            # RFC 3414 4: an authenticated notInTimeWindow report carries the true time
            self.engine = EngineState(engine_id, boots, etime, self._clock(), etime)
            raise _Resync(E.SnmpAuthError(E.WRONG_ENGINE_TIME, why))
        raise E.SnmpAuthError(reason, why)

    def _check_time(self, eng: EngineState, boots: int, etime: int) -> None:
        """RFC 3414 3.2.7: adopt newer time; refuse replies from outside the window."""
        if boots > eng.boots or (boots == eng.boots and etime > eng.latest):
            eng.boots, eng.time, eng.at, eng.latest = boots, etime, self._clock(), etime
            return
        if boots < eng.boots or eng.latest - etime > TIME_WINDOW_S:
            raise E.SnmpAuthError(E.WRONG_ENGINE_TIME, "reply outside the time window")

    async def get(self, oids: Sequence[Oid]) -> list[VarBind]:
        return await self._req(GET, oids)

    async def next(self, oids: Sequence[Oid]) -> list[VarBind]:
        return await self._req(GETNEXT, oids)

    async def bulk(self, oids: Sequence[Oid], max_repetitions: int) -> list[VarBind]:
        return await self._req(GETBULK, oids, max_repetitions)

    async def close(self) -> None:
        pass


def fast_path_supports(opts: SnmpOptions) -> bool:
    """v2c always; v3 with the auth/priv protocols `usm` implements; never v1."""
    if opts.version == "2c":
        return True
    return opts.version == "3" and usm.supported(opts.auth_protocol, opts.priv_protocol)
