"""Recordings that move: snmpsim's `numeric` variation module on the counters.

A recorded walk answers the same counters forever, so every rate is zero. This
rewrites a recording's interface counters and sysUpTime into `numeric`
variations (value = recorded value + rate x seconds since snmpsim started),
with rates chosen per interface from its speed so utilisation, packet, error
and discard ratios differ between interfaces (one busy, one erroring, one
discarding), and turns the oper status of one admin-up interface per device
into a flap (down about a quarter of each two-minute period).
"""

from __future__ import annotations

IF_TABLE = "1.3.6.1.2.1.2.2.1."
IF_X_TABLE = "1.3.6.1.2.1.31.1.1.1."
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
# (in, out) utilisation by the interface's position on its device, cycled
UTILISATION = ((0.12, 0.04), (0.55, 0.21), (0.93, 0.36), (0.02, 0.3), (0.3, 0.81))
ERRORING, DISCARDING = 1, 2        # positions with a visible error / discard ratio
BYTES_PER_PACKET = 700
NOMINAL_BPS = 10_000_000           # for an interface that reports no speed
FLAP = "function=sin,rate=0.05,offset=1.3,initial=0,min=1,max=2"

# column -> (direction, what); what: octets, pkts, nucast, errors, discards
_IF_COLS = {10: ("in", "octets"), 11: ("in", "pkts"), 12: ("in", "nucast"),
            13: ("in", "discards"), 14: ("in", "errors"), 16: ("out", "octets"),
            17: ("out", "pkts"), 18: ("out", "nucast"), 19: ("out", "discards"),
            20: ("out", "errors")}
_IFX_COLS = {2: ("in", "nucast"), 3: ("in", "nucast"), 4: ("out", "nucast"),
             5: ("out", "nucast"), 6: ("in", "octets"), 7: ("in", "pkts"),
             8: ("in", "nucast"), 9: ("in", "nucast"), 10: ("out", "octets"),
             11: ("out", "pkts"), 12: ("out", "nucast"), 13: ("out", "nucast")}


def _split(line: str) -> tuple[str, str, str] | None:
    parts = line.split("|", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def _speeds(rows: list[tuple[str, str, str]]) -> dict[str, float]:
    """bits/s by ifIndex: ifHighSpeed (Mbit/s) where set, else ifSpeed."""
    speed: dict[str, float] = {}
    for oid, tag, value in rows:
        if not value.isdigit() or tag != "66":
            continue
        if oid.startswith(IF_TABLE + "5."):
            speed.setdefault(oid[len(IF_TABLE) + 2:], float(value))
        elif oid.startswith(IF_X_TABLE + "15.") and int(value):
            speed[oid[len(IF_X_TABLE) + 3:]] = float(value) * 1e6
    return speed


def rate(position: int, speed_bps: float, direction: str, what: str) -> float:
    """Per-second increase of one counter of the interface at `position`."""
    u_in, u_out = UTILISATION[position % len(UTILISATION)]
    octets = (speed_bps or NOMINAL_BPS) / 8 * (u_in if direction == "in" else u_out)
    pkts = octets / BYTES_PER_PACKET
    if what == "octets":
        return octets
    if what == "pkts":
        return pkts
    if what == "nucast":
        return pkts / 40
    if what == "errors":
        return pkts * (0.02 if position == ERRORING and direction == "in" else 0.0001)
    return pkts * (0.06 if position == DISCARDING and direction == "out" else 0.0002)


def moving(text: str) -> str:
    """The recording `text` with counters, sysUpTime and one oper status varied."""
    lines = text.splitlines()
    rows = [r for r in map(_split, lines) if r is not None]
    indexes: list[str] = []
    admin_up: list[str] = []
    for oid, _, value in rows:
        if oid.startswith(IF_TABLE + "1."):
            indexes.append(oid[len(IF_TABLE) + 2:])
        elif oid.startswith(IF_TABLE + "7.") and value == "1":
            admin_up.append(oid[len(IF_TABLE) + 2:])
    position = {ix: n for n, ix in enumerate(indexes)}
    speeds = _speeds(rows)
    flapping = admin_up[-1] if len(admin_up) > 1 else None
    out = []
    for line in lines:
        row = _split(line)
        if row is None:
            out.append(line)
            continue
        oid, tag, value = row
        out.append(_vary(oid, tag, value, position, speeds, flapping) or line)
    return "\n".join(out) + "\n"


def _vary(oid: str, tag: str, value: str, position: dict[str, int], speeds: dict[str, float],
          flapping: str | None) -> str | None:
    if oid == SYS_UPTIME and tag == "67" and value.isdigit():
        return f"{oid}|67:numeric|rate=100,initial={value}"
    if tag not in ("65", "70", "2") or not value.isdigit():
        return None
    for table, cols in ((IF_TABLE, _IF_COLS), (IF_X_TABLE, _IFX_COLS)):
        if not oid.startswith(table):
            continue
        col, _, ix = oid[len(table):].partition(".")
        if table == IF_TABLE and col == "8" and ix == flapping and tag == "2":
            return f"{oid}|2:numeric|{FLAP}"
        if tag == "2" or not col.isdigit() or int(col) not in cols or ix not in position:
            return None
        direction, what = cols[int(col)]
        r = rate(position[ix], speeds.get(ix, 0.0), direction, what)
        return f"{oid}|{tag}:numeric|rate={r:.4f},initial={value},wrap=1"
    return None
