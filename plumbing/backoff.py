"""Reconnect and retry delays: exponential with full jitter, never above the cap.

Full jitter (a uniform draw between 0 and the capped exponential bound) spreads
a crowd of agents that lost the broker together, and because the draw is
taken *inside* the cap, the longest wait after a peer comes back is the cap
itself, as the log line says, never half as much again.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """`next()` gives the delay before the next attempt; `reset()` after a success."""

    def __init__(self, initial_s: float = 0.5, cap_s: float = 30.0, *,
                 rand: Callable[[], float] = random.random) -> None:
        if initial_s <= 0 or cap_s < initial_s:
            raise ValueError("backoff needs 0 < initial_s <= cap_s")
        self.initial_s, self.cap_s = initial_s, cap_s
        self._rand = rand
        self.attempt = 0

    def bound(self, attempt: int) -> float:
        """The largest delay the `attempt`-th retry (from 0) may draw."""
        return min(self.cap_s, self.initial_s * 2.0 ** min(attempt, 62))

    def next(self) -> float:
        delay = self.bound(self.attempt) * self._rand()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
