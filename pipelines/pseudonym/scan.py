"""Finding addresses in free text: IPv4, IPv6 in every textual form, MACs.

One scanner serves both the scrubber (replace what it finds) and the leak
guard (report what it finds), so the guard can never miss a form the scrubber
knows, nor the other way round.

A loose candidate pattern finds runs that might be an address; Python's own
parser then decides. Candidates are loose on purpose (a trailing colon or dot
of the sentence, a port glued on, a zone id) and a candidate that does not
parse is searched again from its second character, so an address hiding in a
longer run (``ab:10.1.2.3``) is still found.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

_HEX = "0-9A-Fa-f"
_V4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_V4_END = r"(?![0-9]|\.\d+\.\d|\.\d+[A-Za-z_])"
CANDIDATES = re.compile(
    rf"(?=[{_HEX}:])(?:"
    # the common case, not inside a word: one lookbehind rejects most positions fast
    rf"(?<![0-9A-Za-z.])(?:"
    rf"(?P<v6>(?=[{_HEX}:.]*::|(?:[{_HEX}]{{0,4}}:){{5}})"
    rf"[{_HEX}]{{0,4}}:[{_HEX}:.]{{1,50}}(?:%[\w.\-]+)?)"
    # an IPv4 may be followed by a tcpdump-style ".port" or by letters (`10.9.8.5ms`),
    # but not by more dotted numbers (an SNMP OID such as 1.3.6.1.4.1.9 is not one)
    rf"|(?P<v4>{_V4}){_V4_END}"
    rf"|(?P<mac>[{_HEX}]{{1,2}}(?:-[{_HEX}]{{1,2}}){{5}}"
    rf"|[{_HEX}]{{4}}(?P<msep>[.\-])[{_HEX}]{{4}}(?P=msep)[{_HEX}]{{4}}|[{_HEX}]{{12}})"
    rf"(?![\w\-])"
    rf")"
    # glued to a letter: `IP10.9.8.5`, `addr2001:db8::1` (at least three colons, so
    # `std::vector` and clock times stay text); `v1.2.3.4` is a version
    rf"|(?<=[A-Za-z_])(?:"
    rf"(?<!\b[vV])(?P<v4g>{_V4}){_V4_END}"
    rf"|(?P<v6g>[{_HEX}]{{1,4}}(?::[{_HEX}]{{0,4}}){{3,7}}(?:%[\w.\-]+)?)"
    rf")"
    rf")"
)
_DOT_PORT = re.compile(r"^(.+)\.(\d{1,5})$")
_MAC_COLON = re.compile(rf"^[{_HEX}]{{1,2}}(?::[{_HEX}]{{1,2}}){{5}}$")


@dataclass(frozen=True, slots=True)
class Found:
    """One address in text. `value` is an ipaddress object or the MAC as an int."""

    kind: str  # "v4", "v6", "mac"
    value: ipaddress.IPv4Address | ipaddress.IPv6Address | int
    text: str  # the address as it appeared (without zone or trailing punctuation)
    style: str = ""  # MAC separator style: ":", "-", "."


def parse_v4(text: str) -> ipaddress.IPv4Address | None:
    """Dotted quad, tolerating leading zeros (devices print them; ipaddress refuses them)."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for p in parts:
        if not p.isdigit() or len(p) > 3:
            return None
        o = int(p)
        if o > 255:
            return None
        value = (value << 8) | o
    return ipaddress.IPv4Address(value)


def parse_mac(text: str) -> tuple[int, str] | None:
    """A MAC in any common spelling: `aa:bb:..`, `aa-bb-..`, unpadded octets
    (`0:1b:..`), `aabb.ccdd.eeff`, `aabb-ccdd-eeff`, or 12 bare hex digits with at
    least one letter (12 decimal digits are far more often a counter)."""
    t = text.lower()
    style = next((c for c in ":-." if c in t), "")
    parts = t.split(style) if style else [t]
    if len(parts) == 6 and all(1 <= len(p) <= 2 for p in parts):
        digits = "".join(p.zfill(2) for p in parts)
    elif len(parts) == 3 and style in ".-" and all(len(p) == 4 for p in parts):
        digits = "".join(parts)
    elif len(parts) == 1 and len(t) == 12 and not t.isdigit():
        digits = t
    else:
        return None
    if not all(c in "0123456789abcdef" for c in digits):
        return None
    return int(digits, 16), style


def format_mac(value: int, style: str) -> str:
    h = f"{value:012x}"
    if style == ".":
        return f"{h[0:4]}.{h[4:8]}.{h[8:12]}"
    return style.join(h[i:i + 2] for i in range(0, 12, 2))


def _v6(text: str) -> ipaddress.IPv6Address | None:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


Replace = Callable[[Found], str]


class Memo(Protocol):
    """A cache of candidate text -> (replacement, pseudonyms it contains)."""

    hot: dict[str, Any]

    def get(self, k: str) -> Any: ...

    def put(self, k: str, v: Any) -> None: ...


def rewrite(text: str, replace: Replace, memo: Memo | None = None,
            made: list[str] | None = None) -> str:
    """`text` with every address found replaced by `replace(found)`.

    With a memo, a candidate seen before (the same address written the same
    way) is answered from it without parsing: the warm path of log scrubbing.
    `made`, with a memo, collects the pseudonyms the replacements contain.
    """
    if not text:
        return text

    def resolve(s: str, g: str | None, rep: Replace) -> str:
        if g == "v4" or g == "v4g":
            a = parse_v4(s)
            return rep(Found("v4", a, s)) if a is not None else s
        if g == "mac":
            mac = parse_mac(s)
            return rep(Found("mac", mac[0], s, mac[1])) if mac else s
        return _candidate(s, rep)  # v6 and v6g

    if memo is None:
        return CANDIDATES.sub(lambda m: resolve(m.group(), m.lastgroup, replace), text)

    def sub(m: re.Match[str]) -> str:
        s = m.group()
        hit = memo.hot.get(s)  # the hot generation inline: this is the warm path
        if hit is None:
            hit = memo.get(s)
        if hit is not None:
            if made is not None:
                made.extend(hit[1])
            return hit[0]  # type: ignore[no-any-return]
        new: list[str] = []

        def rep(f: Found) -> str:
            r = replace(f)
            new.append(r)
            return r

        out = resolve(s, m.lastgroup, rep)
        memo.put(s, (out, new))
        if made is not None:
            made.extend(new)
        return out

    return CANDIDATES.sub(sub, text)


def _candidate(s: str, replace: Replace) -> str:
    colons = s.count(":")
    dots = s.count(".")
    if colons < 7 and dots < 3 and colons not in (5, 6) and "::" not in s:
        return s  # a clock time, a ratio, a label: too few parts for any address
    addr_text, _, zone = s.partition("%")
    zone = "%" + zone if zone else ""
    core = addr_text
    tail = ""
    while core and core[-1] in ".:" and not core.endswith("::"):
        tail = core[-1] + tail
        core = core[:-1]
    if "." in core:
        head, _, last = core.rpartition(":")
        v4 = parse_v4(last)
        if v4 is not None and head:
            a = _v6(head + ":" + str(v4))
            if a is not None:
                return replace(Found("v6", a, core)) + tail + zone
        dp = _DOT_PORT.match(core)  # tcpdump writes "2001:db8::1.443"
        if dp is not None:
            a = _v6(dp.group(1))
            if a is not None:
                return replace(Found("v6", a, dp.group(1))) + "." + dp.group(2) + tail + zone
    else:
        a = _v6(core)
        if a is not None:
            return replace(Found("v6", a, core)) + tail + zone
        if _MAC_COLON.match(core):
            mac = parse_mac(core)
            if mac:
                return replace(Found("mac", mac[0], core, ":")) + tail + zone
    if dots >= 3 or "::" in s or colons >= 7:
        return s[0] + rewrite(s[1:], replace)
    return s


def find(text: str) -> Iterator[Found]:
    """Every address in `text`, in order."""
    out: list[Found] = []

    def keep(f: Found) -> str:
        out.append(f)
        return f.text

    rewrite(text, keep)
    return iter(out)
