"""The fast path: v2c GET/GETNEXT/GETBULK over one shared asyncio datagram endpoint.

One UDP socket serves every device of a poller; responses are matched to
requests by request-id and sender address. Each request has its own timer
(timeout x retries, same request-id on resend so a late first answer still
counts). A datagram from a device that does not decode fails that device's
pending requests as `malformed_reply` at once, instead of letting them run
into a timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import socket
from collections.abc import Sequence
from typing import Any

from agents.snmp import errors as E
from agents.snmp.client import PduError, TooBig
from agents.snmp.fastcodec import GET, GETBULK, GETNEXT, RESPONSE, decode_v2c, enc_pdu, encode_v2c
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
            msg = decode_v2c(data)
        except E.SnmpDecodeError as e:
            self.malformed += 1
            for rid, (fut, a) in list(self._pending.items()):
                if a == addr and not fut.done():
                    fut.set_exception(E.SnmpDecodeError(e.detail))
                    del self._pending[rid]
            return
        hit = self._pending.get(msg.pdu.request_id)
        if hit is None or hit[1] != addr or hit[0].done():
            return  # late, duplicate or spoofed: ignore
        hit[0].set_result(msg)
        del self._pending[msg.pdu.request_id]

    async def request(self, addr: Addr, family: int, build: Any, community: bytes,
                      timeout_s: float, retries: int) -> list[VarBind]:
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
                msg = await fut
            except TimeoutError:
                continue
            finally:
                timer.cancel()
                if self._pending.get(rid, (None,))[0] is fut:
                    del self._pending[rid]
            pdu = msg.pdu
            if pdu.type != RESPONSE or msg.community != community:
                raise E.SnmpDecodeError("unexpected PDU in reply")
            if pdu.error_status:
                if pdu.error_status == 1:
                    raise TooBig()
                raise PduError(pdu.error_status, pdu.error_index)
            return pdu.varbinds
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


class FastClient:
    """A v2c device on the shared transport; same primitives as `PysnmpClient`."""

    def __init__(self, transport: FastTransport, host: str, port: int,
                 opts: SnmpOptions) -> None:
        if opts.version != "2c":
            raise ValueError("the fast path speaks v2c only; use PysnmpClient")
        self.version = "2c"
        self._t = transport
        self._host, self._port, self._opts = host, port, opts
        self._community = opts.community.encode()
        self._addr: Addr | None = None
        self._family = socket.AF_INET

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
                host = infos[0][4][0]
                ip = ipaddress.ip_address(host)
            self._family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            self._addr = (host, self._port)
        return self._addr

    async def _req(self, pdu_type: int, oids: Sequence[Oid], rep: int = 0) -> list[VarBind]:
        addr = await self._resolve()
        community = self._community
        oids = list(oids)

        def build(rid: int) -> bytes:
            return encode_v2c(community, enc_pdu(pdu_type, rid, oids, max_repetitions=rep))

        return await self._t.request(addr, self._family, build, community,
                                     self._opts.timeout_s, self._opts.retries)

    async def get(self, oids: Sequence[Oid]) -> list[VarBind]:
        return await self._req(GET, oids)

    async def next(self, oids: Sequence[Oid]) -> list[VarBind]:
        return await self._req(GETNEXT, oids)

    async def bulk(self, oids: Sequence[Oid], max_repetitions: int) -> list[VarBind]:
        return await self._req(GETBULK, oids, max_repetitions)

    async def close(self) -> None:
        pass
