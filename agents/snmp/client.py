"""pysnmp 7 (asyncio) client: the reference implementation and the fallback.

Every version (v1, v2c, v3 with all USM protocols pysnmp has) and operation
goes through here when the fast path does not apply. pysnmp's results and
error indications are translated here, and only here, into our value model
(`values.VarBind`) and error tree (`errors`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import pysnmp
from pyasn1.type.univ import Null
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
    get_cmd,
    next_cmd,
)
from pysnmp.hlapi.v3arch.asyncio import auth as hauth
from pysnmp.proto import errind
from pysnmp.proto.mpmod.rfc3412 import SnmpV3MessageProcessingModel

from agents.snmp import errors as E
from agents.snmp.options import SnmpOptions
from agents.snmp.values import Oid, VarBind
from pipelines.digest import sha256_hex

log = logging.getLogger(__name__)

AUTH = {
    "none": hauth.USM_AUTH_NONE,
    "md5": hauth.USM_AUTH_HMAC96_MD5,
    "sha": hauth.USM_AUTH_HMAC96_SHA,
    "sha224": hauth.USM_AUTH_HMAC128_SHA224,
    "sha256": hauth.USM_AUTH_HMAC192_SHA256,
    "sha384": hauth.USM_AUTH_HMAC256_SHA384,
    "sha512": hauth.USM_AUTH_HMAC384_SHA512,
}
PRIV = {
    "none": hauth.USM_PRIV_NONE,
    "des": hauth.USM_PRIV_CBC56_DES,
    "3des": hauth.USM_PRIV_CBC168_3DES,
    "aes": hauth.USM_PRIV_CFB128_AES,
    # net-snmp's AES-192/256 localise keys the Blumenthal way; Cisco's the Reeder way.
    "aes192": hauth.USM_PRIV_CFB192_AES_BLUMENTHAL,
    "aes256": hauth.USM_PRIV_CFB256_AES_BLUMENTHAL,
    "aes192c": hauth.USM_PRIV_CFB192_AES,
    "aes256c": hauth.USM_PRIV_CFB256_AES,
}


class TooBig(E.SnmpError):
    """The agent answered tooBig: the caller should ask for fewer repetitions."""

    def __init__(self) -> None:
        super().__init__(E.ERROR, "response would be too big")


class PduError(E.SnmpError):
    """A non-zero error-status in the response PDU (e.g. v1 noSuchName)."""

    def __init__(self, status: int, index: int) -> None:
        super().__init__(E.ERROR, f"error-status {status} at varbind {index}")
        self.status, self.index = status, index


class SnmpClient(Protocol):
    """One device's request primitives; walks and polls are built on these."""

    version: str

    async def get(self, oids: Sequence[Oid]) -> list[VarBind]: ...

    async def next(self, oids: Sequence[Oid]) -> list[VarBind]: ...

    async def bulk(self, oids: Sequence[Oid], max_repetitions: int) -> list[VarBind]: ...

    async def close(self) -> None: ...


_ERRIND: list[tuple[type[Exception], str]] = [
    (errind.RequestTimedOut, E.TIMEOUT),
    (errind.UnknownUserName, E.UNKNOWN_USER),
    (errind.NotInTimeWindow, E.WRONG_ENGINE_TIME),
    (errind.WrongDigest, E.AUTH_FAILED),
    (errind.AuthenticationFailure, E.AUTH_FAILED),
    (errind.AuthenticationError, E.AUTH_FAILED),
    (errind.DecryptionError, E.AUTH_FAILED),
    (errind.UnsupportedSecurityLevel, E.AUTH_FAILED),
    (errind.UnknownCommunityName, E.AUTH_FAILED),
    (errind.SerializationError, E.MALFORMED),
    (errind.DeserializationError, E.MALFORMED),
]


def translate(indication: Any) -> E.SnmpError:
    """pysnmp errorIndication -> our error; the text is pysnmp's class name, never data."""
    name = type(indication).__name__
    for cls, reason in _ERRIND:
        if isinstance(indication, cls):
            if reason == E.TIMEOUT:
                return E.SnmpTimeout()
            if reason == E.MALFORMED:
                return E.SnmpDecodeError(name)
            return E.SnmpAuthError(reason, name)
    return E.SnmpError(E.ERROR, name)


def to_varbind(oid: Any, value: Any) -> VarBind:
    """pysnmp ObjectName + pyasn1 value -> (oid tuple, BER tag, plain value)."""
    tag = value.tagSet[0]
    tag_byte = int(tag.tagClass) | int(tag.tagFormat) | int(tag.tagId)
    if tag_byte >= 0x80 or isinstance(value, Null):
        v: Any = None
    elif tag_byte == 0x06:
        v = tuple(value)
    elif tag_byte in (0x04, 0x40, 0x44):
        v = value.asOctets()
    else:
        v = int(value)
    return tuple(oid), tag_byte, v


def _engine_key(opts: SnmpOptions) -> str:
    """Engines are shared per credential set: pysnmp keys USM users by name alone."""
    if opts.version != "3":
        return "community"
    return sha256_hex("\0".join((opts.user, opts.auth_protocol, opts.auth_key,
                                 opts.priv_protocol, opts.priv_key)).encode())


# pysnmp's v3 message processing model keeps these under name-mangled attributes
_MP_ENGINE_IDS = "_SnmpV3MessageProcessingModel__engineIdCache"
_MP_EXPIRY = "_SnmpV3MessageProcessingModel__engineIdCacheExpQueue"


@functools.cache
def _cannot_forget(version: str) -> None:
    log.debug("pysnmp %s has no engine id cache where expected: a replaced v3 device "
              "is rediscovered only when pysnmp's cache expires", version)


def forget_peer_engine(engine: SnmpEngine, domain: Any, address: Any) -> bool:
    """Make `engine` rediscover the SNMPv3 engine id behind one transport address.

    pysnmp (checked against 7.1.30, pysnmp/proto/mpmod/rfc3412.py) caches the
    engine id it learns from the first report of an address for 300 s of timer
    ticks, and never replaces it from a later report. When the device at that
    address comes back with a new engine id, every request still names the old
    id; the agent's unknownEngineID report names the new id, for which USM has
    no localised copy of our user, so pysnmp drops it (unknownSecurityName) and
    the request times out, poll after poll, until the entry expires. pysnmp
    offers no public way to drop one entry (only `get_peer_engine_info` to read
    it), so this pops it from the private cache; other addresses sharing the
    engine keep theirs. Its slot in the expiry queue goes too: the expiry
    deletes without looking, and a KeyError there would stop the engine's timer
    and with it every request timeout. If a pysnmp release moves these
    attributes this does nothing (logged once at debug) and a replaced device
    heals when pysnmp's own cache expires, as before.
    Returns whether an entry was dropped.
    """
    mp = next((m for m in engine.message_processing_subsystems.values()
               if isinstance(m, SnmpV3MessageProcessingModel)), None)
    cache = getattr(mp, _MP_ENGINE_IDS, None)
    expiry = getattr(mp, _MP_EXPIRY, None)
    if not isinstance(cache, dict) or not isinstance(expiry, dict):
        _cannot_forget(getattr(pysnmp, "__version__", "?"))
        return False
    key = (domain, address)
    if cache.pop(key, None) is None:
        return False
    for keys in expiry.values():
        while key in keys:
            keys.remove(key)
    return True


class EnginePool:
    """SnmpEngine instances shared across devices with compatible credentials."""

    def __init__(self) -> None:
        self._engines: dict[str, SnmpEngine] = {}

    def get(self, opts: SnmpOptions) -> SnmpEngine:
        key = _engine_key(opts)
        eng = self._engines.get(key)
        if eng is None:
            eng = self._engines[key] = SnmpEngine()
        return eng

    def close(self) -> None:
        for eng in self._engines.values():
            eng.close_dispatcher()
        self._engines.clear()


class PysnmpClient:
    """A device as pysnmp sees it; each call has pysnmp's timeout/retries plus our deadline."""

    def __init__(self, engine: SnmpEngine, host: str, port: int, opts: SnmpOptions) -> None:
        self.version = opts.version
        self._engine, self._host, self._port, self._opts = engine, host, port, opts
        self._target: UdpTransportTarget | None = None
        if opts.version == "3":
            self._auth: Any = UsmUserData(
                opts.user,
                authKey=opts.auth_key or None,
                privKey=opts.priv_key or None,
                authProtocol=AUTH[opts.auth_protocol],
                privProtocol=PRIV[opts.priv_protocol],
            )
        else:
            self._auth = CommunityData(opts.community, mpModel=0 if opts.version == "1" else 1)
        self._context = ContextData(contextName=opts.context.encode())

    async def _tgt(self) -> UdpTransportTarget:
        if self._target is None:
            self._target = await UdpTransportTarget.create(
                (self._host, self._port), timeout=self._opts.timeout_s,
                retries=self._opts.retries)
        return self._target

    @staticmethod
    def _vbs(oids: Sequence[Oid]) -> list[ObjectType]:
        return [ObjectType(ObjectIdentity(".".join(map(str, o)))) for o in oids]

    def _check(self, res: tuple[Any, Any, Any, Any]) -> list[VarBind]:
        indication, status, index, vbs = res
        if indication:
            raise translate(indication)
        if status and int(status):
            if int(status) == 1:
                raise TooBig()
            raise PduError(int(status), int(index or 0))
        return [to_varbind(vb[0], vb[1]) for vb in vbs]

    def _forget_engine(self) -> None:
        """A v3 device that stops answering may have come back with a new engine id:
        let the next request rediscover it. For a device that is merely down this
        costs one discovery round trip once it is back, and nobody else's cache."""
        if self.version == "3" and self._target is not None:
            forget_peer_engine(self._engine, *self._target.get_transport_info())

    async def _run(self, coro: Any) -> list[VarBind]:
        try:
            res = await asyncio.wait_for(coro, self._opts.deadline_s)
        except TimeoutError:
            self._forget_engine()
            raise E.SnmpTimeout("deadline passed") from None
        # an unknownEngineID that survives pysnmp's discovery retries is the same stale id
        if isinstance(res[0], (errind.RequestTimedOut, errind.UnknownEngineID)):
            self._forget_engine()
        return self._check(res)

    async def get(self, oids: Sequence[Oid]) -> list[VarBind]:
        t = await self._tgt()
        return await self._run(get_cmd(self._engine, self._auth, t, self._context,
                                       *self._vbs(oids), lookupMib=False))

    async def next(self, oids: Sequence[Oid]) -> list[VarBind]:
        t = await self._tgt()
        return await self._run(next_cmd(self._engine, self._auth, t, self._context,
                                        *self._vbs(oids), lookupMib=False))

    async def bulk(self, oids: Sequence[Oid], max_repetitions: int) -> list[VarBind]:
        t = await self._tgt()
        return await self._run(bulk_cmd(self._engine, self._auth, t, self._context, 0,
                                        max_repetitions, *self._vbs(oids), lookupMib=False))

    async def close(self) -> None:
        self._target = None
