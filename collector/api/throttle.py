"""Slowing down guessing: failed TOTP codes per token, bad tokens per client.

A token is 256 random bits, so nobody guesses one; a TOTP code is six digits,
so whoever has stolen a dpo or admin token could try codes until one fits.
Each token therefore gets `totp_failures` wrong codes per `totp_window_s`
(5 per 15 minutes by default). Three codes are valid at any moment, so that
still leaves about a 1% chance per week of guessing without pause: the limit
buys time, and every failure and refusal in the audit log is what gets the
token revoked before the odds add up. Each client
address gets `token_failures` refused tokens per `token_window_s`, which mostly
keeps a scanner from filling the audit log at full speed.

The window slides: a key is locked while it holds `limit` failures younger
than the window, and `Retry-After` is when the oldest of them ages out. A
locked key is refused before its code or token is looked at, so a right guess
during the lockout gets nowhere. TOTP attempts also hold a slot while they are
being checked, so a burst of parallel guesses cannot all slip in before the
first failure is counted. A good code clears the token's failures; a good
token does not clear its client's, so one valid token cannot launder a scan.

The state lives in this process only: with several API processes behind one
address, each keeps its own counts. Client addresses are kept only as an HMAC
under a key made at start-up and never stored, and IPv6 clients are counted
per /64, the block one subscriber usually holds.
"""

from __future__ import annotations

import ipaddress
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.digest import HmacSha256

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    totp_failures: int = 5
    totp_window_s: float = 900.0
    token_failures: int = 20
    token_window_s: float = 60.0
    max_keys: int = 100_000  # per kind; beyond it the oldest keys are forgotten

    def __post_init__(self) -> None:
        if min(self.totp_failures, self.token_failures, self.max_keys) < 1:
            raise ValueError("throttle limits must be at least 1")
        if min(self.totp_window_s, self.token_window_s) <= 0:
            raise ValueError("throttle windows must be positive")


class Throttled(Exception):
    """Refused without checking; `retry_after` is whole seconds until one more try."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class Window:
    """Failures per key within a sliding window. Keys are opaque strings; the
    caller decides what identifies an attacker (a token id, a client digest)."""

    def __init__(self, limit: int, window_s: float, clock: Clock, *, reserve: bool,
                 max_keys: int) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self.reserve, self.max_keys = reserve, max_keys
        self._fails: dict[str, deque[float]] = {}
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.get(key)
        if q is None:
            return deque(maxlen=self.limit)
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._fails[key]
        return q

    def admit(self, key: str) -> None:
        """Raise Throttled if `key` has used up its window; otherwise let one attempt
        through (holding a slot until `done` when this window reserves)."""
        with self._lock:
            now = self.clock()
            q = self._recent(key, now)
            pending = self._pending.get(key, 0)
            if len(q) + pending >= self.limit:
                wait = q[0] + self.window_s - now if len(q) >= self.limit else 1.0
                raise Throttled(max(1, math.ceil(wait)))
            if self.reserve:
                self._pending[key] = pending + 1

    def done(self, key: str, ok: bool | None) -> None:
        """The attempt's outcome: True clears the key's failures, False counts one,
        None (no attempt was really made, e.g. no code sent) only frees the slot."""
        with self._lock:
            if self.reserve:
                left = self._pending.get(key, 0) - 1
                if left > 0:
                    self._pending[key] = left
                else:
                    self._pending.pop(key, None)
            if ok is True:
                self._fails.pop(key, None)
            elif ok is False:
                now = self.clock()
                q = self._recent(key, now)
                q.append(now)
                self._fails[key] = q
                self._evict(now)

    def _evict(self, now: float) -> None:
        """Over the cap, forget expired keys, then the oldest, down to 90% of it, so
        the sweep runs once per tenth of the cap in new keys, not on every one."""
        if len(self._fails) <= self.max_keys:
            return
        for k in [k for k, q in self._fails.items() if q[-1] <= now - self.window_s]:
            del self._fails[k]
        keep = self.max_keys * 9 // 10
        while len(self._fails) > keep:
            del self._fails[next(iter(self._fails))]

    def __len__(self) -> int:
        return len(self._fails)


class Throttle:
    """The API's two windows: `totp` keyed by token id, `token` keyed by client."""

    def __init__(self, limits: ThrottleLimits | None = None, clock: Clock = time.monotonic
                 ) -> None:
        self.limits = limits = limits or ThrottleLimits()
        self.totp = Window(limits.totp_failures, limits.totp_window_s, clock, reserve=True,
                           max_keys=limits.max_keys)
        self.token = Window(limits.token_failures, limits.token_window_s, clock,
                            reserve=False, max_keys=limits.max_keys)
        self._mac = HmacSha256(os.urandom(32))

    def client_key(self, host: str | None) -> str:
        """An opaque, per-process name for a client address (IPv6 by its /64)."""
        text = host or "-"
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
                text = str(ipaddress.IPv6Network((addr, 64), strict=False))
            elif isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                text = str(addr.ipv4_mapped)
        return self._mac.hex(text.encode())[:32]
