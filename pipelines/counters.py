"""Counter arithmetic for SNMP: wraps, 64/32-bit fallback, reboots, derived rates.

Pure functions over two samples of the same counter. A rate is only reported
when it can be trusted: a 32-bit counter that went down wrapped once (unless
that implies an impossible speed); a 64-bit counter that went down was reset;
a device whose sysUpTime went backwards rebooted, so every counter on it
restarted and the interval has no rate; a switch between the 64- and 32-bit
columns is a discontinuity too. "No rate" is None, never a made-up number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MOD32 = 2**32
MOD64 = 2**64
UPTIME_WRAP_S = MOD32 / 100  # sysUpTime is TimeTicks (1/100 s) in 32 bits: ~497 days


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of a counter: value, its width, when, and the device uptime then."""

    value: int | None
    bits: int
    ts: float
    uptime_s: float | None = None


def delta(prev: int, cur: int, bits: int) -> int | None:
    """Increase from prev to cur for a counter of `bits`; None when it was reset."""
    if bits not in (32, 64):
        raise ValueError(f"counter width must be 32 or 64, not {bits}")
    if cur >= prev:
        return cur - prev
    if bits == 32:
        return cur + MOD32 - prev
    return None  # a 64-bit counter does not wrap in any device's lifetime: it was reset


def rebooted(prev_uptime_s: float | None, cur_uptime_s: float | None, elapsed_s: float) -> bool:
    """sysUpTime went backwards: the device (or its agent) restarted.

    sysUpTime itself wraps after ~497 days; a drop that matches a wrap within
    the elapsed wall time is not a reboot.
    """
    if prev_uptime_s is None or cur_uptime_s is None:
        return False
    if cur_uptime_s >= prev_uptime_s:
        return False
    wrapped = cur_uptime_s + UPTIME_WRAP_S - prev_uptime_s
    return not (0 <= wrapped <= elapsed_s * 2 + 1)


def rate(prev: Sample, cur: Sample, *, max_per_s: float | None = None) -> float | None:
    """Per-second increase between two samples, or None when it cannot be trusted.

    `max_per_s` (e.g. interface speed in bytes/s with headroom) rejects a
    32-bit "wrap" that is really a counter reset.
    """
    if prev.value is None or cur.value is None or prev.bits != cur.bits:
        return None
    dt = cur.ts - prev.ts
    if dt <= 0:
        return None
    if rebooted(prev.uptime_s, cur.uptime_s, dt):
        return None
    d = delta(prev.value, cur.value, cur.bits)
    if d is None:
        return None
    r = d / dt
    if max_per_s is not None and r > max_per_s:
        return None
    return r


def rates(prev: Mapping[str, object], cur: Mapping[str, object], names: Iterable[str], *,
          prev_ts: float, cur_ts: float, bits: int, prev_bits: int | None = None,
          prev_uptime_s: float | None = None, cur_uptime_s: float | None = None,
          max_per_s: Mapping[str, float] | None = None) -> dict[str, float | None]:
    """`<name>_per_s` for each counter field in `names`, from two records' fields."""
    out: dict[str, float | None] = {}
    for n in names:
        a, b = prev.get(n), cur.get(n)
        pa = Sample(a if isinstance(a, int) else None, prev_bits or bits, prev_ts, prev_uptime_s)
        pb = Sample(b if isinstance(b, int) else None, bits, cur_ts, cur_uptime_s)
        r = rate(pa, pb, max_per_s=(max_per_s or {}).get(n))
        out[f"{n}_per_s"] = None if r is None else round(r, 6)
    return out
