"""`[syslog]` in the agent config, read strictly.

    [syslog]
    max_message_size = 8192      # bytes; longer messages are cut and flagged
    rate_limit = 0               # messages/s per sender, 0 = no limit; excess is shed
    rate_burst = 0               # bucket size; 0 = one second of rate_limit
    receive_buffer = 4194304     # UDP SO_RCVBUF bytes
    unknown = "accept"           # or "drop": senders that are no configured device
    timezone = "UTC"             # zone of RFC 3164 stamps (they carry none)
    queue = 20000                # records read but not yet spooled; TCP/TLS wait beyond
    max_connections = 1024       # TCP + TLS
    [[syslog.listeners]]
    protocol = "udp"             # udp | tcp | tls
    address = "0.0.0.0"          # "::" for IPv6 (and IPv4 too, dual stack)
    port = 5514                  # default 5514 for udp/tcp, 6514 for tls
    [syslog.tls]                 # needed by a tls listener
    cert_file = "syslog.crt"
    key_file = "syslog.key"      # mode 0600
    client_ca_file = "clients.pem"   # optional: then a client certificate is required

Without listeners, UDP and TCP on 0.0.0.0:5514.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipelines.config import ConfigError, Section
from pipelines.record import MAX_STRING

PROTOCOLS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"udp": 5514, "tcp": 5514, "tls": 6514}


@dataclass(frozen=True, slots=True)
class Listener:
    protocol: str
    address: str
    port: int
    name: str


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class SyslogConfig:
    listeners: tuple[Listener, ...]
    max_message_size: int = 8192
    rate_limit: float = 0.0
    rate_burst: float = 0.0
    receive_buffer: int = 4 << 20
    unknown: str = "accept"
    timezone: str = "UTC"
    queue: int = 20_000
    max_connections: int = 1024
    tls: TlsFiles | None = None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _file(base: Path, s: Section, name: str, required: bool) -> Path | None:
    v = s.str(name) if required else s.str(name, None)
    if v is None:
        return None
    p = Path(v)
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise s.error(name, "is not a readable file")
    return p


def parse_syslog_config(s: Section, base: Path = Path(".")) -> SyslogConfig:
    """Read `[syslog]`; errors name the key."""
    size = s.int("max_message_size", 8192, lo=480, hi=MAX_STRING)
    rate = s.float("rate_limit", 0.0, lo=0.0, hi=10_000_000.0)
    burst = s.float("rate_burst", 0.0, lo=0.0, hi=100_000_000.0)
    rcvbuf = s.int("receive_buffer", 4 << 20, lo=4096, hi=1 << 30)
    unknown = s.str("unknown", "accept", choices=("accept", "drop"))
    tz = s.str("timezone", "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise s.error("timezone", f"is no known time zone (like UTC or Europe/Paris): "
                      f"{tz!r}") from None
    queue = s.int("queue", 20_000, lo=100, hi=10_000_000)
    max_conn = s.int("max_connections", 1024, lo=1, hi=100_000)
    listeners: list[Listener] = []
    names: set[str] = set()
    for ls in s.sections("listeners"):
        proto = ls.str("protocol", choices=PROTOCOLS)
        address = ls.str("address", "0.0.0.0")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ls.error("address", "must be an IP address to bind") from None
        port = ls.int("port", DEFAULT_PORTS[proto], lo=0, hi=65535)
        name = ls.str("name", f"{proto}-{port}")
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ls.error("name", "must be letters, digits, '-', '_' or '.'")
        if name in names:
            raise ls.error("name", f"duplicate listener name {name!r}")
        names.add(name)
        ls.done()
        listeners.append(Listener(proto, address, port, name))
    if not listeners:
        listeners = [Listener(p, "0.0.0.0", DEFAULT_PORTS[p], f"{p}-{DEFAULT_PORTS[p]}")
                     for p in ("udp", "tcp")]
    tls = None
    if "tls" in s:
        t = s.section("tls")
        cert, key = _file(base, t, "cert_file", True), _file(base, t, "key_file", True)
        ca = _file(base, t, "client_ca_file", False)
        t.done()
        assert cert is not None and key is not None
        tls = TlsFiles(cert, key, ca)
    s.done()
    if any(ln.protocol == "tls" for ln in listeners) and tls is None:
        raise ConfigError(s.file, s.key("tls"), "a tls listener needs [syslog.tls] with "
                          "cert_file and key_file")
    return SyslogConfig(tuple(listeners), size, rate, burst or rate, rcvbuf, unknown, tz,
                        queue, max_conn, tls)
