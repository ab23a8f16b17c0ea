"""The batch transport seam, both sides: sealed batches out of the agent, into the collector.

A transport is chosen by the scheme of its URL (`mqtt://`, `mqtts://`; see
`SENDERS` / `RECEIVERS`). The contract a transport must keep:

- `BatchSender.send(topic, payload)` returns only once the broker (or peer)
  took responsibility for the batch (MQTT: QoS 1 PUBACK); the agent deletes a
  batch from its spool only then. Any failure raises `TransportError`.
- A sender session opened with `SenderOptions.listen` topics also receives what
  is published there (the agent's end-to-end receipts): `BatchSender.incoming()`
  yields each as an `Incoming` message, at most once, with no acknowledgement of
  its own (a lost message is made good by the sender resending its batch). It
  raises `TransportError` when the connection is lost, like `send`.
- `ReceiveTransport.sender()` is the publishing side of the receiver's live
  session (None between sessions): the collector sends its receipts on the
  connection it receives on, so one collector identity is one client (a broker
  that makes the certificate identity the client id, as the shipped Mosquitto
  config does, would make a second connection take the first one's session).
- `BatchReceiver.session()` yields deliveries; a delivery is acknowledged by
  `ack()` and only by it, which the collector calls after the store commit.
  A delivery never acknowledged is delivered again (to this worker's
  persistent session or another member of its share group).
- Sessions are async context managers: leaving one disconnects; connection
  problems raise `TransportError` so the caller can back off and reconnect.

A new transport is one module with a sender and a receiver class and one line
in each registry (see `plumbing/mqtt.py`, registered at the end of this file).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit


class TransportError(Exception):
    """The connection failed or was lost, or a send was not acknowledged."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class SenderOptions:
    client_id: str
    protocol: str = "5"
    keepalive_s: int = 30
    timeout_s: float = 10.0
    tls: TlsFiles = TlsFiles()
    inflight: int = 20
    listen: tuple[str, ...] = ()  # topics subscribed in each session (QoS 1), for `incoming`


@dataclass(frozen=True, slots=True)
class ReceiverOptions:
    client_id: str
    subscription: str
    protocol: str = "5"
    keepalive_s: int = 30
    timeout_s: float = 10.0
    tls: TlsFiles = TlsFiles()
    session_expiry_s: int = 7 * 86400


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes


class BatchSender(Protocol):
    async def send(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...

    def incoming(self) -> AsyncIterator[Incoming]: ...


class Delivery(Protocol):
    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...

    def ack(self) -> None: ...


class SendTransport(Protocol):
    def session(self) -> AbstractAsyncContextManager[BatchSender]: ...


class ReceiveTransport(Protocol):
    def session(self) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]: ...

    def sender(self) -> BatchSender | None: ...


SENDERS: dict[str, Callable[[str, SenderOptions], SendTransport]] = {}
RECEIVERS: dict[str, Callable[[str, ReceiverOptions], ReceiveTransport]] = {}


def _scheme(url: str, registry: dict[str, object]) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in registry:
        known = ", ".join(f"{s}://" for s in sorted(registry))
        raise ValueError(f"no batch transport for {url!r}; known: {known}")
    return scheme


def open_sender(url: str, options: SenderOptions) -> SendTransport:
    """The agent side of the transport named by `url`'s scheme; `ValueError` if none is."""
    return SENDERS[_scheme(url, SENDERS)](url, options)  # type: ignore[arg-type]


def open_receiver(url: str, options: ReceiverOptions) -> ReceiveTransport:
    """The collector side of the transport named by `url`'s scheme; `ValueError` if none is."""
    return RECEIVERS[_scheme(url, RECEIVERS)](url, options)  # type: ignore[arg-type]


def _register_builtin() -> None:
    from plumbing import mqtt

    for scheme in ("mqtt", "mqtts"):
        SENDERS[scheme] = mqtt.MqttSender
        RECEIVERS[scheme] = mqtt.MqttReceiver


_register_builtin()
