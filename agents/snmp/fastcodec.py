"""A lean BER codec for the SNMP messages the fast path sends and receives: v2c
messages, and v3 (RFC 3412) envelopes with USM parameters and their scoped PDUs.

pysnmp decodes through pyasn1's generic, schema-driven machinery: every TLV
becomes an object with constraints and tag maps. A GETBULK response is a
fixed, shallow structure (message -> PDU -> varbind list -> (OID, value)), so
here it is decoded with straight-line index arithmetic from the datagram into
the plain `(oid, tag, value)` tuples of `values.VarBind`; a table's OIDs share
all but their last arc, so that prefix is decoded once per run of rows. The v3
envelope is parsed a SEQUENCE at a time and its scoped PDU (or ciphertext) left
as a view into the datagram; USM checks and decryption are `usm`'s. v1 stays
pysnmp's. pysnmp is the reference: tests feed both decoders the same generated
and captured bytes (v2c and v3) and require identical results, and any input
this decoder cannot fully account for raises `SnmpDecodeError` (never another
exception, never a loop that does not advance)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from agents.snmp.errors import SnmpDecodeError
from agents.snmp.values import (
    COUNTER32,
    COUNTER64,
    EXCEPTIONS,
    GAUGE32,
    INTEGER,
    IP_ADDRESS,
    NULL,
    OBJECT_ID,
    OCTET_STRING,
    OPAQUE,
    TIMETICKS,
    Oid,
    VarBind,
)

GET: Final = 0xA0
GETNEXT: Final = 0xA1
RESPONSE: Final = 0xA2
GETBULK: Final = 0xA5
INFORM: Final = 0xA6
TRAP_V2: Final = 0xA7
REPORT: Final = 0xA8
_PDUS = frozenset({GET, GETNEXT, RESPONSE, 0xA3, GETBULK, INFORM, TRAP_V2, REPORT})
_SEQ = 0x30
_UNSIGNED_MAX = {COUNTER32: 2**32 - 1, GAUGE32: 2**32 - 1, TIMETICKS: 2**32 - 1,
                 COUNTER64: 2**64 - 1}
_INT32 = (-(2**31), 2**31 - 1)


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and one
# of these is built per datagram. Nothing mutates them.
@dataclass(slots=True)
class Pdu:
    type: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[VarBind]


@dataclass(slots=True)
class Message:
    version: int  # always 1 (v2c); v3 is `V3Message`, v1 is pysnmp's
    community: bytes
    pdu: Pdu


# -- encoding -------------------------------------------------------------

def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(b),)) + b


def tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    return bytes((tag,)) + _len(n) + body


def enc_int(v: int, tag: int = INTEGER) -> bytes:
    if 0 <= v < 0x80:
        return bytes((tag, 1, v))
    n = max(1, (v + (v < 0)).bit_length() // 8 + 1)
    return tlv(tag, v.to_bytes(n, "big", signed=True))


def enc_uint(v: int, tag: int) -> bytes:
    n = v.bit_length() // 8 + 1  # a leading zero keeps the top bit clear, as BER wants
    return tlv(tag, v.to_bytes(n, "big"))


def enc_oid(oid: Oid) -> bytes:
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] > 39):
        raise ValueError(f"cannot encode OID {oid}")
    first = oid[0] * 40 + oid[1]
    if first < 0x80 and max(oid[2:], default=0) < 0x80 and min(oid[2:], default=0) >= 0:
        return tlv(OBJECT_ID, bytes((first, *oid[2:])))  # one byte per arc: the usual case
    out = bytearray()
    for arc in (first, *oid[2:]):
        if arc < 0x80:
            out.append(arc)
            continue
        chunk = []
        while arc:
            chunk.append(arc & 0x7F)
            arc >>= 7
        for i in range(len(chunk) - 1, 0, -1):
            out.append(chunk[i] | 0x80)
        out.append(chunk[0])
    return tlv(OBJECT_ID, bytes(out))


def enc_value(tag: int, value: object) -> bytes:
    if tag in (NULL, *EXCEPTIONS):
        return bytes((tag, 0))
    if tag == INTEGER:
        return enc_int(value)  # type: ignore[arg-type]
    if tag in _UNSIGNED_MAX:
        return enc_uint(value, tag)  # type: ignore[arg-type]
    if tag in (OCTET_STRING, IP_ADDRESS, OPAQUE):
        return tlv(tag, value)  # type: ignore[arg-type]
    if tag == OBJECT_ID:
        return enc_oid(value)  # type: ignore[arg-type]
    raise ValueError(f"cannot encode value with tag 0x{tag:02x}")


def enc_varbinds(varbinds: list[VarBind]) -> bytes:
    return tlv(_SEQ, b"".join(tlv(_SEQ, enc_oid(o) + enc_value(t, v)) for o, t, v in varbinds))


def enc_pdu(pdu_type: int, request_id: int, oids: list[Oid] | tuple[Oid, ...], *,
            non_repeaters: int = 0, max_repetitions: int = 0,
            varbinds: list[VarBind] | None = None) -> bytes:
    """A request PDU; for GETBULK the two error fields carry non-repeaters/max-repetitions."""
    a, b = (non_repeaters, max_repetitions) if pdu_type == GETBULK else (0, 0)
    if varbinds is None:  # a request's NULL values, without the general value encoder
        body = tlv(_SEQ, b"".join([tlv(_SEQ, enc_oid(o) + b"\x05\x00") for o in oids]))
    else:
        body = enc_varbinds(varbinds)
    return tlv(pdu_type, enc_int(request_id) + enc_int(a) + enc_int(b) + body)


def encode_v2c(community: bytes, pdu: bytes, version: int = 1) -> bytes:
    return tlv(_SEQ, enc_int(version) + tlv(OCTET_STRING, community) + pdu)


# -- decoding -------------------------------------------------------------

def _hdr(b: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the TLV at pos, bounds-checked."""
    if pos + 2 > end:
        raise SnmpDecodeError("truncated header")
    tag = b[pos]
    if tag & 0x1F == 0x1F:
        raise SnmpDecodeError("multi-byte tags are not used by SNMP")
    n = b[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or pos + k > end:
            raise SnmpDecodeError("bad length")
        n = int.from_bytes(b[pos:pos + k], "big")
        pos += k
    if pos + n > end:
        raise SnmpDecodeError("length runs past the end")
    return tag, pos, pos + n


def _int(b: bytes, s: int, e: int) -> int:
    if s == e:
        raise SnmpDecodeError("empty integer")
    return int.from_bytes(b[s:e], "big", signed=True)


def _expect_int(b: bytes, pos: int, end: int) -> tuple[int, int]:
    tag, s, e = _hdr(b, pos, end)
    if tag != INTEGER:
        raise SnmpDecodeError("expected INTEGER")
    return _int(b, s, e), e


def _octets(b: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    tag, s, e = _hdr(b, pos, end)
    if tag != OCTET_STRING:
        raise SnmpDecodeError(f"expected {what}")
    return s, e


_T = TypeVar("_T")
Wire = bytes | memoryview  # a datagram, or a view into one (v3's scoped PDU)


def _decoder(fn: Callable[[Wire], _T]) -> Callable[[Wire], _T]:
    """A public decoder: whatever the bytes, SnmpDecodeError is the only failure
    (an index or value error deep in a malformed message says the same thing)."""
    @functools.wraps(fn)
    def decode(data: Wire) -> _T:
        try:
            return fn(data)
        except SnmpDecodeError:
            raise
        except (IndexError, ValueError, TypeError) as e:
            raise SnmpDecodeError(f"undecodable ({type(e).__name__})") from None
    return decode


_HIGH = re.compile(rb"[\x80-\xff]")


def _oid(b: bytes, s: int, e: int) -> Oid:
    if s == e:
        raise SnmpDecodeError("empty OID")
    sub = b[s:e]
    if sub[-1] & 0x80:
        raise SnmpDecodeError("OID ends mid-arc")
    m = _HIGH.search(sub)
    if m is None or m.start() > 0:
        # one-byte arcs up to the first multi-byte one (table indices, mostly) go in bulk
        first = sub[0]
        head = (first // 40, first % 40) if first < 80 else (2, first - 80)
        if m is None:
            return head + tuple(sub[1:])
        k = m.start()
        arcs = list(head)
        arcs.extend(sub[1:k])
    else:
        k = 0
        arcs = []
    acc = 0
    for c in sub[k:]:
        if acc == 0 and c == 0x80:
            raise SnmpDecodeError("non-minimal OID arc")
        acc = (acc << 7) | (c & 0x7F)
        if c & 0x80:
            continue
        if not arcs:
            arcs += (acc // 40, acc % 40) if acc < 80 else (2, acc - 80)
        else:
            arcs.append(acc)
        acc = 0
    return tuple(arcs)


def decode_value(b: bytes, tag: int, s: int, e: int) -> object:
    if tag == INTEGER:
        v = _int(b, s, e)
        if not _INT32[0] <= v <= _INT32[1]:
            raise SnmpDecodeError("INTEGER out of Integer32 range")
        return v
    if tag in _UNSIGNED_MAX:
        v = _int(b, s, e)
        if not 0 <= v <= _UNSIGNED_MAX[tag]:
            raise SnmpDecodeError("unsigned value out of range")
        return v
    if tag in (OCTET_STRING, OPAQUE):
        return b[s:e]
    if tag == IP_ADDRESS:
        if e - s != 4:
            raise SnmpDecodeError("IpAddress must be 4 bytes")
        return b[s:e]
    if tag == OBJECT_ID:
        return _oid(b, s, e)
    if tag == NULL or tag in EXCEPTIONS:
        if s != e:
            raise SnmpDecodeError("NULL with content")
        return None
    raise SnmpDecodeError(f"unknown value tag 0x{tag:02x}")


# every one- and two-byte last arc as a shared 1-tuple, ready to be appended to a
# decoded prefix: table indices repeat in each column
_ONES: Final = tuple((i,) for i in range(1 << 7))
_ARC2: Final = tuple((i,) for i in range(1 << 14))
_INTLIKE = {INTEGER: _INT32, COUNTER32: (0, 2**32 - 1), GAUGE32: (0, 2**32 - 1),
            TIMETICKS: (0, 2**32 - 1), COUNTER64: (0, 2**64 - 1)}


def decode_varbinds(b: bytes, pos: int, end: int) -> tuple[list[VarBind], int]:
    """The hot loop, straight from the datagram into `(oid, tag, value)` tuples.

    The OIDs of a GETBULK reply are mostly one column's rows: they differ from the
    one before only in the last arc. So the bytes before the last arc are compared
    with the previous OID's (one `startswith`, no slicing) and, when equal, its
    decoded prefix is reused and only the last arc (one or two bytes) is read.
    Short-form lengths and one-byte positive integers skip the general path too;
    anything else goes through `_hdr`/`_oid`/`decode_value`, the reference.
    """
    tag, pos, lend = _hdr(b, pos, end)
    if tag != _SEQ:
        raise SnmpDecodeError("expected varbind list")
    out: list[VarBind] = []
    append = out.append
    from_bytes = int.from_bytes
    intlike = _INTLIKE
    starts = b.startswith
    arc2 = _ARC2
    ones = _ONES
    head = b""  # the previous OID up to its last arc, and that part decoded
    hlen = 1 << 30  # no previous OID yet: `oe - os_ - hlen` is never 1 or 2
    prefix: Oid = ()
    # literals, not the named tags: a constant is cheaper than a global in this loop
    while pos < lend:
        if b[pos] != 0x30:
            raise SnmpDecodeError("expected varbind")
        n = b[pos + 1]
        if n < 0x80:
            s = pos + 2
            vend = s + n
            if vend > lend:
                raise SnmpDecodeError("length runs past the end")
        else:
            _, s, vend = _hdr(b, pos, lend)
        if b[s] != 0x06:
            raise SnmpDecodeError("expected OID")
        # An OID or value that runs past its varbind shows as `ve != vend` below, and
        # an empty OID (oe == os_) never matches the prefix and fails in `_oid`.
        n = b[s + 1]
        if n < 0x80:
            os_ = s + 2
            oe = os_ + n
        else:
            _, os_, oe = _hdr(b, s, vend)
        last = b[oe - 1]
        if last & 0x80:
            raise SnmpDecodeError("OID ends mid-arc")
        tail = oe - os_ - hlen
        if tail == 1 and starts(head, os_):
            oid: Oid = prefix + ones[last]
        elif tail == 2 and b[oe - 2] > 0x80 and starts(head, os_):
            oid = prefix + arc2[((b[oe - 2] & 0x7F) << 7) | last]
        else:
            oid = _oid(b, os_, oe)
            i = oe - 1
            while i > os_ and b[i - 1] & 0x80:
                i -= 1
            if i > os_:
                head, hlen, prefix = b[os_:i], i - os_, oid[:-1]
        vtag = b[oe]
        n = b[oe + 1]
        if n < 0x80:
            vs = oe + 2
            ve = vs + n
        else:
            vtag, vs, ve = _hdr(b, oe, vend)
        if ve != vend:
            raise SnmpDecodeError("varbind lengths do not add up")
        rng = intlike.get(vtag)
        if rng is not None:
            if vs == ve:
                raise SnmpDecodeError("empty integer")
            if b[vs] < 0x80:  # non-negative: an unsigned read, no keyword arguments
                v: object = b[vs] if n == 1 else from_bytes(b[vs:ve])
                if v > rng[1]:  # type: ignore[operator]
                    raise SnmpDecodeError("integer value out of range for its type")
            else:
                v = from_bytes(b[vs:ve], "big", signed=True)
                if v < rng[0]:  # type: ignore[operator]
                    raise SnmpDecodeError("integer value out of range for its type")
        elif vtag == 0x04:
            v = b[vs:ve]
        else:
            v = decode_value(b, vtag, vs, ve)
        append((oid, vtag, v))  # type: ignore[arg-type]
        pos = vend
    return out, lend


def decode_pdu(b: bytes, pos: int, end: int) -> tuple[Pdu, int]:
    ptype, pos, pend = _hdr(b, pos, end)
    if ptype not in _PDUS:
        raise SnmpDecodeError(f"unsupported PDU type 0x{ptype:02x}")
    rid, pos = _expect_int(b, pos, pend)
    est, pos = _expect_int(b, pos, pend)
    eix, pos = _expect_int(b, pos, pend)
    if not _INT32[0] <= rid <= _INT32[1]:
        raise SnmpDecodeError("request-id out of range")
    if not 0 <= eix <= _INT32[1] or (ptype == GETBULK and not 0 <= est <= _INT32[1]):
        raise SnmpDecodeError("error-index out of range")
    vbs, pos = decode_varbinds(b, pos, pend)
    if pos != pend:
        raise SnmpDecodeError("trailing bytes in PDU")
    return Pdu(ptype, rid, est, eix, vbs), pend


@_decoder
def decode_v2c(data: Wire) -> Message:
    """A v2c message; anything else (v1, v3, garbage) raises SnmpDecodeError."""
    b = bytes(data)
    tag, pos, end = _hdr(b, 0, len(b))
    if tag != _SEQ or end != len(b):
        raise SnmpDecodeError("not an SNMP message")
    version, pos = _expect_int(b, pos, end)
    if version != 1:
        raise SnmpDecodeError(f"not a v2c message (version {version})")
    cs, ce = _octets(b, pos, end, "community")
    pdu, pos = decode_pdu(b, ce, end)
    if pos != end:
        raise SnmpDecodeError("trailing bytes")
    return Message(version, b[cs:ce], pdu)


# -- SNMPv3 (RFC 3412 message, RFC 3414 USM parameters) -------------------

FLAG_AUTH = 0x01
FLAG_PRIV = 0x02
FLAG_REPORTABLE = 0x04
USM = 3
MAX_SIZE = 65507


@dataclass(slots=True)
class V3Message:
    """A v3 message as it came off the wire; `data` is the scoped PDU or its ciphertext."""

    msg_id: int
    max_size: int
    flags: int
    engine_id: bytes
    boots: int
    time: int
    user: bytes
    auth_params: bytes
    auth_span: tuple[int, int]  # where authParameters sit in the raw message
    priv_params: bytes
    data: memoryview
    encrypted: bool


_V3_VERSION: Final = b"\x02\x01\x03"
_V3_MAX_SIZE: Final = b"\x02\x03\x00\xff\xe3"  # enc_int(MAX_SIZE)
_V3_USM: Final = b"\x02\x01\x03"


class V3Encoder:
    """The parts of a v3 message that stay the same for one engine, user and security
    level, encoded once; each message then costs the varying fields only."""

    __slots__ = ("_gtail", "_scoped_head", "_usm_engine", "_usm_user", "auth_len",
                 "encrypted")

    def __init__(self, flags: int, engine_id: bytes, user: bytes, auth_len: int,
                 encrypted: bool, context_engine_id: bytes | None = None,
                 context_name: bytes = b"") -> None:
        self._gtail = _V3_MAX_SIZE + b"\x04\x01" + bytes((flags,)) + _V3_USM
        ctx = engine_id if context_engine_id is None else context_engine_id
        self._scoped_head = tlv(OCTET_STRING, ctx) + tlv(OCTET_STRING, context_name)
        self._usm_engine = tlv(OCTET_STRING, engine_id)
        self._usm_user = tlv(OCTET_STRING, user) + tlv(OCTET_STRING, bytes(auth_len))
        self.auth_len, self.encrypted = auth_len, encrypted

    def scoped(self, pdu: bytes) -> bytes:
        """The scoped PDU (context engine id and name as given at construction)."""
        return tlv(_SEQ, self._scoped_head + pdu)

    def message(self, msg_id: int, boots: int, etime: int, priv_params: bytes,
                data: bytes) -> tuple[bytes, int]:
        """The message with a zeroed MAC, and the offset of the MAC for the caller to
        fill: only privParameters and the data follow the MAC, so it sits that far
        from the end."""
        priv_tlv = tlv(OCTET_STRING, priv_params)
        tail = tlv(OCTET_STRING, data) if self.encrypted else data
        usm = tlv(_SEQ, self._usm_engine + enc_int(boots) + enc_int(etime) + self._usm_user
                  + priv_tlv)
        msg = tlv(_SEQ, _V3_VERSION + tlv(_SEQ, enc_int(msg_id) + self._gtail)
                  + tlv(OCTET_STRING, usm) + tail)
        return msg, len(msg) - len(tail) - len(priv_tlv) - self.auth_len


def encode_v3(msg_id: int, flags: int, engine_id: bytes, boots: int, etime: int, user: bytes,
              auth_len: int, priv_params: bytes, data: bytes,
              encrypted: bool) -> tuple[bytes, int]:
    """One message without a prepared `V3Encoder` (discovery, tests)."""
    return V3Encoder(flags, engine_id, user, auth_len, encrypted).message(
        msg_id, boots, etime, priv_params, data)


def encode_scoped_pdu(context_engine_id: bytes, context_name: bytes, pdu: bytes) -> bytes:
    return tlv(_SEQ, tlv(OCTET_STRING, context_engine_id) + tlv(OCTET_STRING, context_name)
               + pdu)


@_decoder
def peek_version_and_id(data: Wire) -> tuple[int, int]:
    """(version, id to match on) without decoding the rest: request-id for v2c, msgID
    for v3. Raises SnmpDecodeError for anything that is not an SNMP message."""
    b = bytes(data)
    tag, pos, end = _hdr(b, 0, len(b))
    if tag != _SEQ:
        raise SnmpDecodeError("not an SNMP message")
    version, pos = _expect_int(b, pos, end)
    if version == 3:
        tag, pos, gend = _hdr(b, pos, end)
        if tag != _SEQ:
            raise SnmpDecodeError("expected msgGlobalData")
        msg_id, _ = _expect_int(b, pos, gend)
        return 3, msg_id
    return version, -1



def _seq(b: bytes, pos: int, end: int, n: int) -> list[tuple[int, int, int]]:
    """(tag, start, end) of exactly `n` TLVs filling pos..end: one call for a whole
    SEQUENCE's fields instead of one `_hdr` per field."""
    out = []
    for _ in range(n):
        k = b[pos + 1]
        if k < 0x80:
            s = pos + 2
            e = s + k
            if e > end:
                raise SnmpDecodeError("length runs past the end")
            out.append((b[pos], s, e))
        else:
            t = _hdr(b, pos, end)
            out.append(t)
            e = t[2]
        pos = e
    if pos != end:
        raise SnmpDecodeError("trailing bytes" if pos < end else "truncated")
    return out


def _uint31(b: bytes, t: tuple[int, int, int], what: str) -> int:
    tag, s, e = t
    if tag != INTEGER or s == e:
        raise SnmpDecodeError(f"expected {what}")
    v = int.from_bytes(b[s:e], "big", signed=True)
    if not 0 <= v <= _INT32[1]:
        raise SnmpDecodeError(f"{what} out of range")
    return v


@_decoder
def decode_v3(data: Wire) -> V3Message:
    """The v3 envelope; `data` stays a view into the datagram (decrypted or parsed
    from there, never copied here)."""
    b = bytes(data)
    tag, pos, end = _hdr(b, 0, len(b))
    if tag != _SEQ or end != len(b):
        raise SnmpDecodeError("not an SNMP message")
    if b[pos:pos + 3] != b"\x02\x01\x03":
        raise SnmpDecodeError("not a v3 message")
    (_, _, _), glob, sec, dat = _seq(b, pos, end, 4)
    if glob[0] != _SEQ:
        raise SnmpDecodeError("expected msgGlobalData")
    mid, msize, fl, model = _seq(b, glob[1], glob[2], 4)
    msg_id = _uint31(b, mid, "msgID")
    max_size = _uint31(b, msize, "msgMaxSize")
    if fl[0] != OCTET_STRING or fl[2] - fl[1] != 1:
        raise SnmpDecodeError("msgFlags must be one byte")
    if model[0] != INTEGER or b[model[1]:model[2]] != b"\x03":
        raise SnmpDecodeError("not a USM message")
    if sec[0] != OCTET_STRING:
        raise SnmpDecodeError("expected msgSecurityParameters")
    tag, u, uend = _hdr(b, sec[1], sec[2])
    if tag != _SEQ or uend != sec[2]:
        raise SnmpDecodeError("bad UsmSecurityParameters")
    eng, bts, tim, usr, aut, prv = _seq(b, u, uend, 6)
    if not eng[0] == usr[0] == aut[0] == prv[0] == OCTET_STRING:
        raise SnmpDecodeError("bad UsmSecurityParameters")
    boots = _uint31(b, bts, "msgAuthoritativeEngineBoots")
    etime = _uint31(b, tim, "msgAuthoritativeEngineTime")
    encrypted = dat[0] == OCTET_STRING
    if not encrypted and dat[0] != _SEQ:
        raise SnmpDecodeError("expected a scoped PDU")
    view = memoryview(b)
    return V3Message(msg_id, max_size, b[fl[1]], b[eng[1]:eng[2]], boots, etime,
                     b[usr[1]:usr[2]], b[aut[1]:aut[2]], (aut[1], aut[2]), b[prv[1]:prv[2]],
                     view[dat[1]:dat[2]] if encrypted else view[sec[2]:end], encrypted)


@_decoder
def decode_scoped_pdu(data: Wire) -> tuple[bytes, bytes, Pdu]:
    """A (decrypted) scoped PDU; trailing bytes after it are DES padding and ignored."""
    b = bytes(data)
    tag, pos, end = _hdr(b, 0, len(b))
    if tag != _SEQ:
        raise SnmpDecodeError("expected a scoped PDU (wrong privacy key?)")
    es, ee = _octets(b, pos, end, "contextEngineID")
    ns, ne = _octets(b, ee, end, "contextName")
    pdu, pos = decode_pdu(b, ne, end)
    if pos != end:
        raise SnmpDecodeError("trailing bytes in scoped PDU")
    return b[es:ee], b[ns:ne], pdu
