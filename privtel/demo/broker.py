"""An embedded MQTT 3.1.1 broker (amqtt) so the demo needs nothing installed."""

from __future__ import annotations

import logging
from types import TracebackType

from amqtt.broker import Broker


class EmbeddedBroker:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        })

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def __aenter__(self) -> EmbeddedBroker:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        await self._broker.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._broker.shutdown()
