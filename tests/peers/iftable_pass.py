"""A net-snmp `pass_persist` helper serving a synthetic IF-MIB of N interfaces.

snmpd on a test box has one or two real interfaces; production devices have
hundreds. This script lets a real snmpd (its BER, GETBULK and access control,
not ours) serve a large ifTable/ifXTable. Values are deterministic functions of
the index so a test can compute what it should read; 64-bit counters exceed
2**32 so a poller that silently keeps the 32-bit column is caught.

Usage (from snmpd.conf): pass_persist .1.3.6.1.2.1.2 python3 iftable_pass.py N
and the same for .1.3.6.1.2.1.31.
"""

from __future__ import annotations

import bisect
import sys

IF_TABLE = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IF_X_TABLE = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
IF_NUMBER = (1, 3, 6, 1, 2, 1, 2, 1, 0)


def hc_in(i: int) -> int:
    return 2**33 + i * 1_000_003


def hc_out(i: int) -> int:
    return 2**34 + i * 2_000_029


def rows(n: int) -> list[tuple[tuple[int, ...], str, str]]:
    out: list[tuple[tuple[int, ...], str, str]] = [(IF_NUMBER, "integer", str(n))]
    for i in range(1, n + 1):
        mac = " ".join(f"{b:02x}" for b in (0x02, 0, 0, (i >> 16) & 255, (i >> 8) & 255, i & 255))
        cols: dict[int, tuple[str, str]] = {
            1: ("integer", str(i)), 2: ("string", f"eth{i - 1}"), 3: ("integer", "6"),
            4: ("integer", "1500"), 5: ("gauge", "1000000000"), 6: ("octet", mac),
            7: ("integer", "1"), 8: ("integer", "1" if i % 7 else "2"),
            9: ("timeticks", str(i * 100)),
            10: ("counter", str(hc_in(i) % 2**32)), 11: ("counter", str(i * 11)),
            12: ("counter", str(i * 12)), 13: ("counter", str(i % 5)),
            14: ("counter", str(i % 3)), 15: ("counter", "0"),
            16: ("counter", str(hc_out(i) % 2**32)), 17: ("counter", str(i * 17)),
            18: ("counter", str(i * 18)), 19: ("counter", str(i % 4)),
            20: ("counter", str(i % 2)), 21: ("gauge", "0"), 22: ("objectid", ".0.0"),
        }
        for c, (t, v) in cols.items():
            out.append(((*IF_TABLE, c, i), t, v))
        xcols: dict[int, tuple[str, str]] = {
            1: ("string", f"eth{i - 1}"), 2: ("counter", str(i * 2)), 3: ("counter", str(i * 3)),
            4: ("counter", str(i * 4)), 5: ("counter", str(i * 5)),
            6: ("counter64", str(hc_in(i))), 7: ("counter64", str(i * 11)),
            8: ("counter64", str(i * 2)), 9: ("counter64", str(i * 3)),
            10: ("counter64", str(hc_out(i))), 11: ("counter64", str(i * 17)),
            12: ("counter64", str(i * 4)), 13: ("counter64", str(i * 5)),
            14: ("integer", "1"), 15: ("gauge", "1000"), 16: ("integer", "2"),
            17: ("integer", "1"), 18: ("string", f"uplink {i}"), 19: ("timeticks", "0"),
        }
        for c, (t, v) in xcols.items():
            out.append(((*IF_X_TABLE, c, i), t, v))
    out.sort()
    return out


def parse(oid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in oid.strip().strip(".").split(".") if x)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    table = rows(n)
    keys = [r[0] for r in table]
    index = {r[0]: r for r in table}
    out = sys.stdout
    for line in sys.stdin:
        cmd = line.strip().lower()
        if cmd == "ping":
            out.write("PONG\n")
        elif cmd in ("get", "getnext"):
            oid = parse(sys.stdin.readline())
            hit = None
            if cmd == "get":
                hit = index.get(oid)
            else:
                pos = bisect.bisect_right(keys, oid)
                hit = table[pos] if pos < len(table) else None
            if hit is None:
                out.write("NONE\n")
            else:
                out.write("." + ".".join(map(str, hit[0])) + f"\n{hit[1]}\n{hit[2]}\n")
        elif cmd == "set":
            sys.stdin.readline()
            sys.stdin.readline()
            out.write("not-writable\n")
        elif not cmd:
            break
        out.flush()


if __name__ == "__main__":
    main()
