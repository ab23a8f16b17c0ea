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
from collections import deque
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
    Message,
    Pdu,
    V3Encoder,
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


# What a chained request's handler returns: the next request's payload to send under
# the given id, or None and the exchange's final result.
Step = tuple[bytes | None, Any]
Handler = Callable[[Any, int], Step]


class _Exchange:
    """One request (or a chain of them) in flight: its id, payload, tries and timer.

    The timer is lazy: it is armed once and, when it fires early because the
    exchange has moved on to a newer request since, re-armed for that request's
    deadline, so a chained walk of thousands of requests sets a handful of timers
    instead of one per request.
    """

    __slots__ = ("addr", "deadline", "family", "fut", "handle", "loop", "owner", "payload",
                 "retries", "rid", "timeout", "timer", "tries")

    def __init__(self, owner: FastTransport, loop: asyncio.AbstractEventLoop, addr: Addr,
                 family: int, timeout_s: float, retries: int, handle: Handler | None) -> None:
        self.owner, self.loop, self.addr, self.family = owner, loop, addr, family
        self.fut: asyncio.Future[Any] = loop.create_future()
        self.timeout, self.retries, self.handle = timeout_s, retries, handle
        self.rid, self.payload, self.tries, self.deadline = 0, b"", 0, 0.0
        self.timer: asyncio.TimerHandle | None = None

    def send(self, rid: int, payload: bytes) -> None:
        self.rid, self.payload, self.tries = rid, payload, 0
        self.owner._pending[rid] = self
        self._transmit()

    def _transmit(self) -> None:
        self.deadline = self.loop.time() + self.timeout
        self.owner._sendto(self.payload, self.addr, self.family)
        if self.timer is None:
            self.timer = self.loop.call_at(self.deadline, self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.fut.done():
            return
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._tick)
            return
        self.tries += 1
        if self.tries > self.retries:  # the same id on every try: a late answer still counts
            self.fail(E.SnmpTimeout())
            return
        self._transmit()

    def reply(self, msg: Any) -> None:
        self.owner._pending.pop(self.rid, None)
        if self.handle is None:
            self.fut.set_result(msg)
            return
        rid = self.owner.next_id()
        try:
            payload, result = self.handle(msg, rid)
        except Exception as e:  # the handler's verdict on the reply goes to the waiter
            self.fail(e)
            return
        if payload is None:
            self.fut.set_result(result)
        else:
            self.send(rid, payload)

    def fail(self, exc: BaseException) -> None:
        self.owner._pending.pop(self.rid, None)
        if not self.fut.done():
            self.fut.set_exception(exc)

    def end(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.owner._pending.get(self.rid) is self:
            del self.owner._pending[self.rid]


_RECV_BATCH = 64  # datagrams read per readiness event before yielding to the loop


class FastTransport:
    """The shared socket and the table of requests waiting for an answer.

    The socket is read and written directly (`add_reader`, non-blocking
    `sendto`), not through an asyncio datagram transport: one poll costs a few
    thousand round trips, and the transport's layers (and its 256 KiB receive
    buffer per datagram) were a fifth of the client's CPU. A send the kernel
    refuses for lack of buffer space waits for the socket to be writable.
    """

    def __init__(self) -> None:
        self._socks: dict[int, socket.socket] = {}
        self._pending: dict[int, _Exchange] = {}
        self._ids = itertools.count(int.from_bytes(os.urandom(3), "big") + 1)
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog: dict[int, deque[tuple[bytes, Addr]]] = {}
        self._buf = bytearray(65536)
        self.malformed = 0

    def next_id(self) -> int:
        rid = next(self._ids)
        if rid >= 2**31 - 1:
            self._ids = itertools.count(1)
            rid = next(self._ids)
        return rid

    async def _socket(self, family: int) -> socket.socket:
        s = self._socks.get(family)
        if s is not None:
            return s
        async with self._lock:
            s = self._socks.get(family)
            if s is None:
                loop = self._loop = asyncio.get_running_loop()
                s = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
                    s.setblocking(False)
                    loop.add_reader(s.fileno(), self._readable, s)
                except BaseException:
                    s.close()
                    raise
                self._socks[family] = s
        return s

    def _readable(self, sock: socket.socket) -> None:
        buf = self._buf
        view = memoryview(buf)
        # With one request in flight one datagram is due: reading again would only
        # fail (a syscall and an exception per request); epoll is level-triggered,
        # so anything else waiting is reported on the next turn of the loop.
        for _ in range(_RECV_BATCH if len(self._pending) > 1 else 1):
            try:
                n, addr = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP errors and the like: let the timers run
                return
            self._received(bytes(view[:n]), (addr[0], addr[1]))

    def _sendto(self, payload: bytes, addr: Addr, family: int) -> None:
        sock = self._socks[family]
        backlog = self._backlog.get(family)
        if backlog:
            backlog.append((payload, addr))
            return
        try:
            sock.sendto(payload, addr)
        except (BlockingIOError, InterruptedError):
            self._backlog[family] = deque([(payload, addr)])
            assert self._loop is not None
            self._loop.add_writer(sock.fileno(), self._writable, family)
        except OSError:  # unreachable and the like: the request times out as lost
            pass

    def _writable(self, family: int) -> None:
        sock, backlog = self._socks[family], self._backlog[family]
        while backlog:
            payload, addr = backlog[0]
            try:
                sock.sendto(payload, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            backlog.popleft()
        assert self._loop is not None
        self._loop.remove_writer(sock.fileno())

    def _received(self, data: bytes, addr: Addr) -> None:
        try:
            version, key = peek_version_and_id(data)
            reply: Any = data
            if version != 3:
                reply = decode_v2c(data)
                key = reply.pdu.request_id
        except E.SnmpDecodeError as e:
            self.malformed += 1
            for ex in [x for x in self._pending.values() if x.addr == addr]:
                ex.fail(E.SnmpDecodeError(e.detail))
            return
        hit = self._pending.get(key)
        if hit is None or hit.addr != addr or hit.fut.done():
            return  # late, duplicate or spoofed: ignore
        hit.reply(reply)

    async def request(self, addr: Addr, family: int, build: Callable[[int], bytes],
                      timeout_s: float, retries: int, handle: Handler | None = None) -> Any:
        """Send `build(id)` and wait for the answer with that id: a decoded v2c `Message`,
        or the raw bytes of a v3 message for the caller's USM processing.

        With `handle`, each answer is passed to `handle(answer, next_id)` in the
        socket's callback: it returns the next request's payload to send straight
        away (a walk's next GETBULK), or None and the result to return. A chain of
        requests then costs no task wake-up, future or timer per request; whatever
        `handle` raises ends the chain and is raised here."""
        await self._socket(family)
        ex = _Exchange(self, asyncio.get_running_loop(), addr, family, timeout_s, retries,
                       handle)
        rid = self.next_id()
        ex.send(rid, build(rid))
        try:
            return await ex.fut
        finally:
            ex.end()

    def close(self) -> None:
        for family, s in self._socks.items():
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(s.fileno())
                if family in self._backlog:
                    self._loop.remove_writer(s.fileno())
            s.close()
        self._socks.clear()
        self._backlog.clear()
        for ex in list(self._pending.values()):
            ex.end()
            if not ex.fut.done():
                ex.fut.cancel()
        self._pending.clear()


# A chained walk's verdict on one reply's varbinds: the OID to ask for next, or None
# to stop and hand these varbinds back (see `walk`).
Accept = Callable[[list[VarBind]], Oid | None]


def _varbinds(pdu: Pdu) -> list[VarBind]:
    """A response PDU's varbinds, or its error as an exception."""
    if pdu.type != RESPONSE:
        raise E.SnmpDecodeError("unexpected PDU in reply")
    if pdu.error_status:
        if pdu.error_status == 1:
            raise TooBig()
        raise PduError(pdu.error_status, pdu.error_index)
    return pdu.varbinds


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


@dataclass(frozen=True, slots=True)
class _Keys:
    engine_id: bytes
    auth: usm.Authenticator | None
    priv: usm.Privacy | None
    encoder: V3Encoder


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
        self._keys: _Keys | None = None

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

    async def _req(self, pdu_type: int, oids: Sequence[Oid], rep: int = 0,
                   accept: Accept | None = None) -> list[VarBind]:
        addr = await self._resolve()
        oids = list(oids)
        if self.version == "3":
            return await self._req_v3(addr, pdu_type, oids, rep, accept)
        community = self._community
        o = self._opts

        def build(rid: int) -> bytes:
            return encode_v2c(community, enc_pdu(pdu_type, rid, oids, max_repetitions=rep))

        handle: Handler | None = None
        if accept is not None:
            def handle(msg: Any, rid: int) -> Step:
                vbs = self._v2c_varbinds(msg)
                nxt = accept(vbs)
                if nxt is None:
                    return None, vbs
                return encode_v2c(community, enc_pdu(pdu_type, rid, (nxt,),
                                                     max_repetitions=rep)), None

        got = await self._t.request(addr, self._family, build, o.timeout_s, o.retries, handle)
        return got if accept is not None else self._v2c_varbinds(got)

    def _v2c_varbinds(self, msg: Message) -> list[VarBind]:
        if msg.community != self._community:
            raise E.SnmpDecodeError("reply for another community")
        return _varbinds(msg.pdu)

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

    async def _req_v3(self, addr: Addr, pdu_type: int, oids: list[Oid], rep: int,
                      accept: Accept | None) -> list[VarBind]:
        last: E.SnmpError | None = None
        at = [oids]  # where a chained walk has got to: a resync resumes from there
        for _ in range(2):  # a second go after rediscovery or a time resync
            eng = self.engine or await self.discover()
            try:
                return await self._send_v3(addr, eng, pdu_type, at, rep, accept)
            except _Resync as e:
                last = e.args[0]
        assert last is not None
        raise last

    def _v3_keys(self, engine_id: bytes) -> _Keys:
        """The localised keys for this engine with their keyed HMAC and cipher state,
        and the request encoder: made once per engine id, not per message."""
        k = self._keys
        if k is None or k.engine_id != engine_id:
            o = self._opts
            auth = usm.authenticator(o.auth_protocol, usm.localize(
                o.auth_protocol, o.auth_key.encode(), engine_id)) \
                if o.auth_protocol != "none" else None
            priv = usm.Privacy(o.priv_protocol, usm.priv_key(
                o.auth_protocol, o.priv_protocol, o.priv_key.encode(), engine_id)) \
                if o.priv_protocol != "none" else None
            flags = FLAG_REPORTABLE | (FLAG_AUTH if auth else 0) | (FLAG_PRIV if priv else 0)
            enc = V3Encoder(flags, engine_id, self._user, auth.n if auth else 0,
                            priv is not None, context_name=self._context)
            k = self._keys = _Keys(engine_id, auth, priv, enc)
        return k

    async def _send_v3(self, addr: Addr, eng: EngineState, pdu_type: int, at: list[list[Oid]],
                       rep: int, accept: Accept | None) -> list[VarBind]:
        o = self._opts
        keys = self._v3_keys(eng.engine_id)
        auth, priv, enc = keys.auth, keys.priv, keys.encoder

        def build(mid: int) -> bytes:
            scoped = enc.scoped(enc_pdu(pdu_type, mid, at[0], max_repetitions=rep))
            boots, etime = eng.boots, eng.now(self._clock)
            priv_params = b""
            if priv is not None:
                scoped, priv_params = priv.encrypt(boots, etime, self._salt.next(), scoped)
            msg, off = enc.message(mid, boots, etime, priv_params, scoped)
            if auth is not None:
                msg = msg[:off] + auth.sign(msg) + msg[off + auth.n:]
            return msg

        handle: Handler | None = None
        if accept is not None:
            def handle(raw: Any, mid: int) -> Step:
                vbs = _varbinds(self._v3_pdu(raw, eng, keys))
                nxt = accept(vbs)
                if nxt is None:
                    return None, vbs
                at[0] = [nxt]
                return build(mid), None

        got = await self._t.request(addr, self._family, build, o.timeout_s, o.retries, handle)
        return got if accept is not None else _varbinds(self._v3_pdu(got, eng, keys))

    def _v3_pdu(self, raw: bytes, eng: EngineState, keys: _Keys) -> Pdu:
        """A v3 reply checked (MAC, engine, time window, reports) and decrypted."""
        msg = decode_v3(raw)
        authed = bool(msg.flags & FLAG_AUTH)
        if authed:
            if keys.auth is None:
                raise E.SnmpDecodeError("authenticated reply to an unauthenticated request")
            if msg.engine_id != eng.engine_id or not keys.auth.verify(
                    raw, msg.auth_span, msg.auth_params):
                raise E.SnmpAuthError(E.AUTH_FAILED, "reply failed authentication")
        data: bytes | memoryview = msg.data
        if msg.encrypted:
            if not (authed and msg.flags & FLAG_PRIV and keys.priv is not None):
                raise E.SnmpDecodeError("encrypted reply we cannot decrypt")
            try:
                data = keys.priv.decrypt(msg.boots, msg.time, msg.priv_params, data)
            except ValueError:
                raise E.SnmpDecodeError("reply does not decrypt") from None
        _, _, pdu = decode_scoped_pdu(data)
        if pdu.type == REPORT:
            self._report(pdu, msg.engine_id, msg.boots, msg.time, authed)
        if authed:
            self._check_time(eng, msg.boots, msg.time)
        elif keys.auth is not None:
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

    async def bulk_chain(self, oids: Sequence[Oid], max_repetitions: int,
                         accept: Accept) -> list[VarBind]:
        """GETBULK, then again from wherever `accept` says for as long as it accepts
        the replies, all in the socket's callback; returns the first varbinds it
        refused. What `bulk` would raise for any of the replies is raised here."""
        return await self._req(GETBULK, oids, max_repetitions, accept)

    async def close(self) -> None:
        pass


def fast_path_supports(opts: SnmpOptions) -> bool:
    """v2c always; v3 with the auth/priv protocols `usm` implements; never v1."""
    if opts.version == "2c":
        return True
    return opts.version == "3" and usm.supported(opts.auth_protocol, opts.priv_protocol)
