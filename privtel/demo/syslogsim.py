"""The demo's devices also log: syslog lines like real ones, with the personal data
such lines really carry (login names, client addresses, MACs, laptop names), sent to
the agent's listener over UDP and TCP, so a newcomer sees them arrive pseudonymised."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Sequence

USERS = ("alice.martin", "bob", "carol.nguyen", "dave.okafor", "netops")
CLIENTS = ("laptop-alice", "iphone-bob", "desk-carol-01", "printer-3f")

SYSLOG_TOML = """
[syslog]
[[syslog.listeners]]
protocol = "udp"
address = "127.0.0.1"
port = {udp}
[[syslog.listeners]]
protocol = "tcp"
address = "127.0.0.1"
port = {tcp}
"""


def _stamp(now: float) -> str:
    t = time.gmtime(now)
    return time.strftime("%b ", t) + f"{t.tm_mday:2d}" + time.strftime(" %H:%M:%S", t)


def line_of(device: str, rnd: random.Random, now: float) -> str:
    """One RFC 3164 line of a simulated device: login, flap, config change or DHCP lease."""
    user, client = rnd.choice(USERS), rnd.choice(CLIENTS)
    ip = f"10.{rnd.randrange(1, 40)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
    mac = ":".join(f"{rnd.randrange(256):02x}" for _ in range(6))
    head = f"{_stamp(now)} {device}"
    return rnd.choice((
        f"<38>{head} sshd[{rnd.randrange(1000, 9999)}]: Accepted password for {user} from "
        f"{ip} port {rnd.randrange(1024, 65535)} ssh2",
        f"<37>{head} sshd[{rnd.randrange(1000, 9999)}]: Failed password for invalid user "
        f"{user} from {ip} port {rnd.randrange(1024, 65535)} ssh2",
        f"<187>{head} %LINK-3-UPDOWN: Interface GigabitEthernet0/{rnd.randrange(1, 48)}, "
        f"changed state to {rnd.choice(('down', 'up'))}",
        f"<189>{head} %SYS-5-CONFIG_I: Configured from console by {user} on vty0 ({ip})",
        f"<30>{head} dhcpd[812]: DHCPACK on {ip} to {mac} ({client}) via "
        f"vlan{rnd.randrange(10, 99)}",
    ))


class SyslogSim:
    """Sends a line per device every `interval_s`, alternating UDP and TCP; `sent` counts."""

    def __init__(self, devices: Sequence[str], udp_port: int, tcp_port: int, *,
                 interval_s: float = 1.0, seed: int = 14) -> None:
        self.devices, self.udp_port, self.tcp_port = list(devices), udp_port, tcp_port
        self.interval_s, self.rnd = interval_s, random.Random(seed)
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SyslogSim:
        self._task = asyncio.create_task(self._run(), name="demo-syslog")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        writer: asyncio.StreamWriter | None = None
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            while True:
                for i, dev in enumerate(self.devices):
                    line = line_of(dev, self.rnd, time.time()).encode()
                    if i % 2 == 0:
                        udp.sendto(line, ("127.0.0.1", self.udp_port))
                        self.sent += 1
                        continue
                    try:
                        if writer is None:
                            writer = (await asyncio.wait_for(
                                asyncio.open_connection("127.0.0.1", self.tcp_port), 5))[1]
                        writer.write(line + b"\n")
                        await asyncio.wait_for(writer.drain(), 5)
                        self.sent += 1
                    except (OSError, TimeoutError):
                        writer = None
                await asyncio.sleep(self.interval_s)
        finally:
            udp.close()
            if writer is not None:
                writer.close()
