"""Which device sent a message: by sender address, else by the host name in it.

When several devices share the sender's address (behind one NAT address, or a
relay), the host name in the message picks among all devices, and failing
that the first device configured at the address is taken.

So a device's logs and its polls share one site-local name, and so one
pseudonymous device id, site and tenant. A sender that is no configured device
is either dropped or accepted under its own address as device name, which the
pseudonymiser turns into a keyed token like every device name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from agents.pollers import Device

MAX_TRACKED = 65536


def canonical_address(addr: str) -> str:
    """IPv4-mapped IPv6 senders (a dual-stack socket) as plain IPv4; v6 compressed."""
    if ":" not in addr:
        return addr
    try:
        a = ipaddress.IPv6Address(addr.split("%", 1)[0])
    except ValueError:
        return addr
    return str(a.ipv4_mapped) if a.ipv4_mapped is not None else str(a)


class Senders:
    """Device lookup plus the distinct senders seen, known and unknown (bounded)."""

    def __init__(self, devices: Sequence[Device], site: str, unknown: str) -> None:
        self.site, self.accept_unknown = site, unknown == "accept"
        self.known: set[str] = set()
        self.unknown: set[str] = set()
        self.set_devices(devices)

    def set_devices(self, devices: Sequence[Device]) -> None:
        by_addr: dict[str, Device] = {}
        by_name: dict[str, Device] = {}
        shared: set[str] = set()
        for d in devices:
            for a in {canonical_address(d.address), d.address.lower()}:
                if a in by_addr:
                    shared.add(a)
                by_addr.setdefault(a, d)
            by_name.setdefault(d.name.lower(), d)
            by_name.setdefault(d.name.lower().split(".", 1)[0], d)
        self._by_addr, self._by_name, self._shared = by_addr, by_name, shared
        self._cache: dict[tuple[str, str | None], tuple[str, str] | None] = {}

    def lookup(self, addr: str, hostname: str | None) -> tuple[str, str] | None:
        """(device name, site), or None when the sender is unknown and dropped."""
        key = (addr, hostname)
        hit = self._cache.get(key, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        d = self._by_addr.get(addr)
        if (d is None or addr in self._shared) and hostname:
            low = hostname.lower()
            d = self._by_name.get(low) or self._by_name.get(low.split(".", 1)[0]) or d
        out: tuple[str, str] | None
        if d is not None:
            out = (d.name, d.site)
            _track(self.known, addr)
        else:
            out = (addr, self.site) if self.accept_unknown else None
            _track(self.unknown, addr)
        if len(self._cache) >= MAX_TRACKED:
            self._cache.clear()
        self._cache[key] = out
        return out


def _track(seen: set[str], addr: str) -> None:
    if len(seen) < MAX_TRACKED:
        seen.add(addr)
