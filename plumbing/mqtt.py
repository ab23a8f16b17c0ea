"""The MQTT batch transport (aiomqtt, QoS 1, TLS), both sides of `plumbing.transport`.

Agent side: a clean session on purpose; the spool, not the broker, is the
agent's session state, and after a reconnect everything not yet acknowledged
is simply published again from the spool. The same connection subscribes to
the `listen` topics (the agent's receipt topic) at the start of each session;
a receipt published while the agent was away is lost with the clean session,
and the batch it was for is resent after the receipt timeout.

Collector side: a persistent session (MQTT 5 session expiry, or 3.1.1
`clean_session=False`) so batches published while the collector is away wait
at the broker, and acknowledgement after commit. Why a subclass for that:
aiomqtt 2.5 queues each message for the application and lets paho-mqtt
acknowledge it on receipt, with no switch to defer that (aiomqtt issue #345;
its PR #346 is unmerged). paho-mqtt 2.x itself supports application
acknowledgement (``manual_ack_set`` / ``ack``), so `_AckAfterCommitClient`
turns that on for the wrapped paho client and exposes `ack(message)`: the one
place privtel reaches below aiomqtt's public API.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plumbing.broker import parse_broker_url
from plumbing.tls import tls_context
from plumbing.transport import (
    BatchSender,
    Delivery,
    Incoming,
    ReceiverOptions,
    SenderOptions,
    TlsFiles,
    TransportError,
)


def _check_protocol(protocol: str) -> aiomqtt.ProtocolVersion:
    if protocol not in ("5", "3.1.1"):
        raise ValueError(f"protocol must be '5' or '3.1.1', not {protocol!r}")
    return aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311


def _tls(tls: bool, files: TlsFiles) -> ssl.SSLContext | None:
    return tls_context(files.ca_file, files.cert_file, files.key_file) if tls else None


class _AckAfterCommitClient(aiomqtt.Client):
    """aiomqtt client whose QoS 1 messages are acknowledged by `ack`, not on receipt."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client.manual_ack_set(True)

    def ack(self, message: aiomqtt.Message) -> None:
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)


class _Sender:
    def __init__(self, client: aiomqtt.Client, timeout_s: float) -> None:
        self._client, self._timeout = client, timeout_s

    async def send(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        try:
            await self._client.publish(topic, payload, qos=1, retain=retain,
                                       timeout=self._timeout)
        except aiomqtt.MqttError as e:
            raise TransportError(f"publish failed: {type(e).__name__}") from e

    async def incoming(self) -> AsyncIterator[Incoming]:
        try:
            async for m in self._client.messages:
                yield Incoming(str(m.topic), bytes(m.payload))
        except aiomqtt.MqttError as e:
            raise TransportError(f"connection lost: {type(e).__name__}") from e
        raise TransportError("the broker closed the message stream")


class MqttSender:
    """The agent's side: one QoS 1 publisher session per `session()`."""

    def __init__(self, url: str, options: SenderOptions) -> None:
        self.address = parse_broker_url(url)
        self.options = options
        self._version = _check_protocol(options.protocol)
        self._tls = _tls(self.address.tls, options.tls)

    def _client(self) -> aiomqtt.Client:
        o = self.options
        v5 = o.protocol == "5"
        client = aiomqtt.Client(
            self.address.host, self.address.port, identifier=o.client_id,
            protocol=self._version, clean_session=None if v5 else True,
            keepalive=o.keepalive_s, timeout=o.timeout_s, tls_context=self._tls,
            max_inflight_messages=o.inflight, logger=logging.getLogger("privtel.mqtt.agent"))
        client.pending_calls_threshold = o.inflight + 1
        return client

    @asynccontextmanager
    async def session(self) -> AsyncIterator[BatchSender]:
        try:
            async with self._client() as client:
                for topic in self.options.listen:
                    await client.subscribe(topic, qos=1, timeout=self.options.timeout_s)
                yield _Sender(client, self.options.timeout_s)
        except aiomqtt.MqttError as e:
            raise TransportError(f"broker connection failed or lost: {type(e).__name__}") from e


@dataclass(frozen=True, slots=True)
class _Delivery:
    topic: str
    payload: bytes
    _client: _AckAfterCommitClient
    _message: aiomqtt.Message

    def ack(self) -> None:
        self._client.ack(self._message)


class MqttReceiver:
    """The collector's side: a persistent, subscribed session per `session()`."""

    def __init__(self, url: str, options: ReceiverOptions) -> None:
        self.address = parse_broker_url(url)
        self.options = options
        self._version = _check_protocol(options.protocol)
        self._tls = _tls(self.address.tls, options.tls)
        self._live: _Sender | None = None

    def sender(self) -> BatchSender | None:
        """Publish on the live session (the collector's receipts); None between sessions."""
        return self._live

    def _client(self) -> _AckAfterCommitClient:
        o = self.options
        v5 = o.protocol == "5"
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = o.session_expiry_s
        return _AckAfterCommitClient(
            self.address.host, self.address.port, identifier=o.client_id,
            protocol=self._version, clean_session=None if v5 else False,
            clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=props,
            keepalive=o.keepalive_s, timeout=o.timeout_s, tls_context=self._tls,
            logger=logging.getLogger("privtel.mqtt.ingest"))

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncIterator[Delivery]]:
        try:
            async with self._client() as client:
                await client.subscribe(self.options.subscription, qos=1,
                                       timeout=self.options.timeout_s)
                self._live = _Sender(client, self.options.timeout_s)
                try:
                    yield self._deliveries(client)
                finally:
                    self._live = None
        except aiomqtt.MqttError as e:
            raise TransportError(f"broker connection failed or lost: {type(e).__name__}") from e

    @staticmethod
    async def _deliveries(client: _AckAfterCommitClient) -> AsyncIterator[Delivery]:
        try:
            async for m in client.messages:
                yield _Delivery(str(m.topic), bytes(m.payload), client, m)
        except aiomqtt.MqttError as e:
            raise TransportError(f"connection lost: {type(e).__name__}") from e
        raise TransportError("the broker closed the message stream")
