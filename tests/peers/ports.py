"""Free loopback ports for peers started by tests (the demo's helper, one place)."""

from __future__ import annotations

import socket

from privtel.demo.run import free_port


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


__all__ = ["free_port", "free_udp_port"]
