"""Sealed batches, wire format v1 (see docs/wire-format.md for the byte layout).

A batch must be routable and attributable before anyone can read it, and
unreadable to everyone but the collector: so the header travels in clear,
the records are compressed and sealed with HPKE to the collector's public key
with the header bound in as HPKE ``info``, and the agent's Ed25519 signature
covers every byte before it. Opening checks the cheap things first (size,
framing, known agent, signature) so a flood of junk never costs a decryption.

Stateful checks (topic, replay window, per-agent sequence, duplicates) belong
to the collector's ingest; their reason codes are defined here so that every
rejection anywhere is counted under one vocabulary.
"""

from __future__ import annotations

import io
import re
import struct
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from pipelines.keys import SUITES as _SUITES
from pipelines.keys import CollectorPrivateKey, CollectorPublicKey, signing_key_id
from pipelines.keys import suite as hpke_suite
from pipelines.names import PATTERN as NAME_PATTERN
from pipelines.names import is_name
from pipelines.record import Record, RecordError, decode, encode

VERSION = 1
MAGIC = b"PTB1"
SIGNATURE_CONTEXT = b"privtel/v1 batch signature\x00"
HPKE_INFO_PREFIX = b"privtel/v1 batch\x00"
SIG_LEN = 64
MAX_HEADER = 4096
MAX_BATCH_BYTES = 1 << 20
MAX_BODY_BYTES = 16 << 20
TOPIC_PREFIX = "privtel/v1"

REASONS = ("malformed", "oversized", "bad_signature", "unknown_agent", "unknown_key",
           "decrypt_failed", "invalid_record", "wrong_topic", "replayed", "duplicate",
           "too_old")

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_KID = re.compile(r"^[0-9a-f]{16}$")
_PKID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_HEADER_KEYS = ("v", "tenant", "agent", "batch", "seq", "created", "suite", "ckid", "skid",
                "pkids", "n", "comp")


class EnvelopeError(ValueError):
    """A batch that cannot be accepted; `reason` is one of `REASONS`, the text says why."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown envelope reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class Header:
    """The clear part of a batch. `seal` fills the key ids, suite and count."""

    tenant: str
    agent_id: str
    batch_id: str
    seq: int
    created: float
    pseudonym_key_ids: tuple[str, ...] = ()
    suite: str = ""
    collector_key_id: str = ""
    signing_key_id: str = ""
    records: int = 0
    version: int = VERSION

    @property
    def topic(self) -> str:
        return topic_for(self.tenant, self.agent_id)

    def to_json(self) -> bytes:
        return orjson.dumps({
            "v": self.version, "tenant": self.tenant, "agent": self.agent_id,
            "batch": self.batch_id, "seq": self.seq, "created": self.created,
            "suite": self.suite, "ckid": self.collector_key_id, "skid": self.signing_key_id,
            "pkids": list(self.pseudonym_key_ids), "n": self.records, "comp": "zstd",
        }, option=orjson.OPT_SORT_KEYS)


def topic_for(tenant: str, agent_id: str) -> str:
    return f"{TOPIC_PREFIX}/{tenant}/{agent_id}/batches"


def _check_header(h: Header) -> None:
    def bad(why: str) -> EnvelopeError:
        return EnvelopeError("malformed", f"header {why}")

    if h.version != VERSION:
        raise bad(f"version {h.version!r} is not {VERSION}")
    for name, v in (("tenant", h.tenant), ("agent", h.agent_id)):
        if not is_name(v):
            raise bad(f"{name} must match {NAME_PATTERN}")
    if not isinstance(h.batch_id, str) or not _HEX32.fullmatch(h.batch_id):
        raise bad("batch must be 32 lowercase hex characters")
    if isinstance(h.seq, bool) or not isinstance(h.seq, int) or not 0 <= h.seq < 2**63:
        raise bad("seq must be an integer in [0, 2^63)")
    if (isinstance(h.created, bool) or not isinstance(h.created, int | float)
            or not 0 < h.created < 4102444800):
        raise bad("created must be unix seconds between 1970 and 2100")
    if h.suite and h.suite not in _SUITES:
        raise bad(f"suite must be one of {', '.join(_SUITES)}")
    for name, v in (("ckid", h.collector_key_id), ("skid", h.signing_key_id)):
        if v and not _KID.fullmatch(v):
            raise bad(f"{name} must be 16 lowercase hex characters")
    if not isinstance(h.pseudonym_key_ids, tuple) or len(h.pseudonym_key_ids) > 16 or not all(
            isinstance(k, str) and _PKID.fullmatch(k) for k in h.pseudonym_key_ids):
        raise bad("pkids must be at most 16 short key id strings")
    if isinstance(h.records, bool) or not isinstance(h.records, int) or h.records < 0:
        raise bad("n must be a non-negative integer")


def _header_from_json(data: bytes) -> Header:
    try:
        d = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise EnvelopeError("malformed", "header is not valid JSON") from None
    if not isinstance(d, dict) or set(d) != set(_HEADER_KEYS):
        raise EnvelopeError("malformed", f"header must have exactly the keys {_HEADER_KEYS}")
    if d["comp"] != "zstd":
        raise EnvelopeError("malformed", "header comp must be 'zstd'")
    if not isinstance(d["pkids"], list):
        raise EnvelopeError("malformed", "header pkids must be a list")
    h = Header(tenant=d["tenant"], agent_id=d["agent"], batch_id=d["batch"], seq=d["seq"],
               created=d["created"], pseudonym_key_ids=tuple(d["pkids"]), suite=d["suite"],
               collector_key_id=d["ckid"], signing_key_id=d["skid"], records=d["n"],
               version=d["v"])
    _check_header(h)
    if not (h.suite and h.collector_key_id and h.signing_key_id):
        raise EnvelopeError("malformed", "header suite, ckid and skid must be set")
    return h


def _fill(header: Header, field: str, value: Any) -> Header:
    given = getattr(header, field)
    if given not in ("", 0) and given != value:
        raise ValueError(f"header {field} {given!r} does not match the key ({value!r})")
    return replace(header, **{field: value})


def seal(header: Header, records: Sequence[Record], collector_public_key: CollectorPublicKey,
         signing_key: ed25519.Ed25519PrivateKey, *, max_size: int = MAX_BATCH_BYTES,
         level: int = 3) -> bytes:
    """Compress, encrypt to the collector and sign; `EnvelopeError('oversized')` if too big.

    The suite, key ids and record count come from the keys and records, so a
    caller cannot seal a header that lies about them. Records are not checked
    against the header's tenant here: the agent binds its tenant where records
    enter its spool (`Shipper.submit`), the collector where it opens the batch.
    """
    return seal_body(header, encode(records), len(records), collector_public_key,
                     signing_key, max_size=max_size, level=level)


def seal_body(header: Header, body: bytes, records: int,
              collector_public_key: CollectorPublicKey,
              signing_key: ed25519.Ed25519PrivateKey, *, max_size: int = MAX_BATCH_BYTES,
              level: int = 3) -> bytes:
    """`seal` for a body already encoded (`pipelines.record.join_encoded` of the records'
    stored JSON, byte for byte what `encode` makes) holding `records` records: the
    agent's spool keeps each record's JSON, so a batch is not encoded twice."""
    h = _fill(header, "suite", collector_public_key.suite)
    h = _fill(h, "collector_key_id", collector_public_key.key_id)
    h = _fill(h, "signing_key_id", signing_key_id(signing_key))
    h = _fill(h, "records", records)
    _check_header(h)
    hjson = h.to_json()
    if len(hjson) > MAX_HEADER:
        raise EnvelopeError("oversized", f"header is {len(hjson)} bytes, limit {MAX_HEADER}")
    if len(body) > MAX_BODY_BYTES:
        raise EnvelopeError("oversized", f"records are {len(body)} bytes, limit {MAX_BODY_BYTES}")
    compressed = zstandard.ZstdCompressor(level=level).compress(body)
    ct = hpke_suite(h.suite).encrypt(compressed, collector_public_key.key,
                                     info=HPKE_INFO_PREFIX + hjson)
    signed = MAGIC + struct.pack(">H", len(hjson)) + hjson + struct.pack(">I", len(ct)) + ct
    total = len(signed) + SIG_LEN
    if total > max_size:
        raise EnvelopeError("oversized", f"sealed batch is {total} bytes, limit {max_size}")
    return signed + signing_key.sign(SIGNATURE_CONTEXT + signed)


@dataclass(frozen=True, slots=True)
class Frame:
    """A batch split by its framing, its header parsed and schema-checked but not yet
    authenticated. `split` makes one; `peek_header` reads its header, and `verify`
    takes it, so the header of a batch is parsed once however many looks it gets."""

    header: Header
    header_json: bytes
    ciphertext: bytes
    signed: bytes
    signature: bytes


def split(data: bytes, *, max_size: int = MAX_BATCH_BYTES) -> Frame:
    """The batch's parts after checking only the framing and the header's schema,
    or `EnvelopeError` (`malformed`, `oversized`)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EnvelopeError("malformed", "a batch must be bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise EnvelopeError("oversized", f"batch is {len(data)} bytes, limit {max_size}")
    if len(data) < 4 + 2 + 4 + SIG_LEN or data[:4] != MAGIC:
        raise EnvelopeError("malformed", "not a privtel v1 batch (bad magic or too short)")
    (hlen,) = struct.unpack_from(">H", data, 4)
    if hlen > MAX_HEADER:
        raise EnvelopeError("malformed", f"header length {hlen} exceeds {MAX_HEADER}")
    hjson = data[6:6 + hlen]
    if len(data) < 6 + hlen + 4 + SIG_LEN:
        raise EnvelopeError("malformed", "batch is truncated")
    (clen,) = struct.unpack_from(">I", data, 6 + hlen)
    end = 6 + hlen + 4 + clen
    if end + SIG_LEN != len(data):
        raise EnvelopeError("malformed", "batch length does not match its framing (truncated?)")
    return Frame(_header_from_json(hjson), hjson, data[6 + hlen + 4:end], data[:end],
                 data[end:])


def peek_header(data: bytes | Frame, *, max_size: int = MAX_BATCH_BYTES) -> Header:
    """The header as claimed, unauthenticated: for routing and quarantine only."""
    return (data if isinstance(data, Frame) else split(data, max_size=max_size)).header


AgentKeys = Mapping[str, ed25519.Ed25519PublicKey | Collection[ed25519.Ed25519PublicKey]]


def _agent_key(agent_keys: AgentKeys, h: Header) -> ed25519.Ed25519PublicKey:
    known = agent_keys.get(h.agent_id)
    if known is None:
        raise EnvelopeError("unknown_agent", f"agent {h.agent_id!r} is not registered")
    candidates: Iterable[ed25519.Ed25519PublicKey] = (
        [known] if isinstance(known, ed25519.Ed25519PublicKey) else known)
    for k in candidates:
        if signing_key_id(k) == h.signing_key_id:
            return k
    raise EnvelopeError("bad_signature", f"agent {h.agent_id!r} has no registered key "
                        f"{h.signing_key_id}")


def _decompress(data: bytes, limit: int) -> bytes:
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as r:
            out = r.read(limit + 1)
    except zstandard.ZstdError:
        raise EnvelopeError("malformed", "body is not a valid zstd frame") from None
    if len(out) > limit:
        raise EnvelopeError("oversized", f"records decompress to more than {limit} bytes")
    return out


@dataclass(frozen=True, slots=True)
class Verified:
    """A batch whose signature verified: its header is now authenticated, its body
    still sealed. What the collector decides before it decrypts (tenant binding,
    residency) it decides on this."""

    header: Header
    header_json: bytes
    ciphertext: bytes


def verify(data: bytes | Frame, agent_keys: AgentKeys, *,
           max_size: int = MAX_BATCH_BYTES) -> Verified:
    """Framing, known agent and signature, or `EnvelopeError`; nothing is decrypted.
    Given the `Frame` a caller already split (to route on the claimed header), the
    batch is not split and its header not parsed again."""
    f = data if isinstance(data, Frame) else split(data, max_size=max_size)
    h = f.header
    vk = _agent_key(agent_keys, h)
    try:
        vk.verify(f.signature, SIGNATURE_CONTEXT + f.signed)
    except InvalidSignature:
        raise EnvelopeError("bad_signature", f"signature of agent {h.agent_id!r} does not "
                            "verify") from None
    return Verified(h, f.header_json, f.ciphertext)


def open_verified(v: Verified, collector_keys: Mapping[str, CollectorPrivateKey], *,
                  max_body: int = MAX_BODY_BYTES) -> list[Record]:
    """Decrypt and decode a verified batch, or raise `EnvelopeError`.

    Record ids must be unique within the batch: a repeated id would make the
    store refuse the batch on every delivery (a poison batch), so it is refused
    here, once, as `invalid_record`."""
    h = v.header
    ck = collector_keys.get(h.collector_key_id)
    if ck is None:
        raise EnvelopeError("unknown_key", f"no collector key {h.collector_key_id}")
    if ck.suite != h.suite:
        raise EnvelopeError("unknown_key", f"collector key {h.collector_key_id} is for suite "
                            f"{ck.suite}, batch says {h.suite}")
    try:
        compressed = hpke_suite(h.suite).decrypt(v.ciphertext, ck.key,
                                                 info=HPKE_INFO_PREFIX + v.header_json)
    except Exception as e:  # the Rust binding raises InvalidTag or ValueError; both mean "no"
        raise EnvelopeError("decrypt_failed", f"HPKE open failed ({type(e).__name__})") from None
    body = _decompress(compressed, max_body)
    try:
        records = decode(body)
    except RecordError as e:
        raise EnvelopeError("invalid_record", str(e)) from None
    if len(records) != h.records:
        raise EnvelopeError("invalid_record", f"header says {h.records} records, body has "
                            f"{len(records)}")
    if any(r.tenant != h.tenant for r in records):
        raise EnvelopeError("invalid_record", "a record's tenant differs from the header's")
    if len({r.id for r in records}) != len(records):
        raise EnvelopeError("invalid_record", "a record id appears more than once in the batch")
    return records


def open_sealed(data: bytes, agent_keys: AgentKeys,
                collector_keys: Mapping[str, CollectorPrivateKey], *,
                max_size: int = MAX_BATCH_BYTES,
                max_body: int = MAX_BODY_BYTES) -> tuple[Header, list[Record]]:
    """Verify, decrypt and decode a batch, or raise `EnvelopeError` with the first failed check.

    `agent_keys` maps agent id to its Ed25519 public key (or several, during a
    rotation); `collector_keys` maps key id to the collector's private keys, so
    batches sealed to a retired key still open while they drain from spools.
    """
    v = verify(data, agent_keys, max_size=max_size)
    return v.header, open_verified(v, collector_keys, max_body=max_body)


def check_fresh(h: Header, *, now: float | None = None, max_age_s: float,
                max_skew_s: float = 300.0) -> None:
    """Reject a batch created outside the accepted window (`too_old`), future included."""
    now = time.time() if now is None else now
    if h.created < now - max_age_s:
        raise EnvelopeError("too_old", f"batch created {now - h.created:.0f} s ago, window is "
                            f"{max_age_s:.0f} s")
    if h.created > now + max_skew_s:
        raise EnvelopeError("too_old", f"batch created {h.created - now:.0f} s in the future "
                            f"(clock skew beyond {max_skew_s:.0f} s)")
