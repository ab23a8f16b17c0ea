"""Broker URLs, parsed in one place: `mqtt://host[:port]` and `mqtts://host[:port]`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class BrokerUrlError(ValueError):
    """The URL names no supported scheme or no host."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme.endswith("s")


def parse_broker_url(url: str) -> BrokerAddress:
    """Scheme, host and port (the scheme's default when absent); `BrokerUrlError` otherwise."""
    u = urlsplit(url)
    if u.scheme not in DEFAULT_PORTS or not u.hostname:
        raise BrokerUrlError(f"broker url must be mqtt://host[:port] or mqtts://host[:port], "
                             f"not {url!r}")
    try:
        port = u.port
    except ValueError:
        raise BrokerUrlError(f"broker url has a bad port: {url!r}") from None
    return BrokerAddress(u.scheme, u.hostname, port or DEFAULT_PORTS[u.scheme])
