"""Small signed control messages from the collector side to agents (receipts,
suppression lists): ``MAGIC || payload || signature``, the payload orjson with a
version field, the signature Ed25519 over ``context || payload``. One framing
and one check for every kind, each with its own magic and context so a message
of one kind can never pass as another.
"""

from __future__ import annotations

from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

SIG_LEN = 64


class SignedMessageError(ValueError):
    """A message that cannot be trusted; the text says why, never what it held."""


def sign(magic: bytes, context: bytes, doc: dict[str, Any],
         key: ed25519.Ed25519PrivateKey) -> bytes:
    payload = orjson.dumps(doc)
    return magic + payload + key.sign(context + payload)


def verify(data: bytes, magic: bytes, context: bytes, version: int,
           key: ed25519.Ed25519PublicKey, what: str) -> dict[str, Any]:
    """The payload of a well-framed, well-signed message of `version`, as a dict."""
    if len(data) < len(magic) + SIG_LEN + 2 or not data.startswith(magic):
        raise SignedMessageError(f"not a privtel {what}")
    payload, sig = data[len(magic):-SIG_LEN], data[-SIG_LEN:]
    try:
        key.verify(sig, context + payload)
    except InvalidSignature:
        raise SignedMessageError(f"bad {what} signature") from None
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise SignedMessageError(f"malformed {what}: JSONDecodeError") from None
    if not isinstance(doc, dict) or doc.get("v") != version:
        v = doc.get("v") if isinstance(doc, dict) else None
        raise SignedMessageError(f"{what} version {v!r} is not {version}")
    return doc
