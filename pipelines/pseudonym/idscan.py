"""Finding identifiers other than bare addresses in free text.

What is found: the values the log grammars point at (`grammar.py`), e-mail
addresses, phone numbers (E.164 and the national forms of the provider's
countries, checked by `phonenumbers`), host names that spell out an address
(`ip-10-9-8-7.ec2.internal`, `dsl-198-51-100-7.isp.net`), names the site
already knows (`known.py`), and percent- or HTML-encoded addresses, which are
decoded in place so the address scanner (`scan.py`) replaces them.

Why cheap prefilters: most log lines carry no identifier beyond addresses, and
the scrubber must keep up with 100,000 lines/s on one core. So every grammar
rule has a literal anchor, all anchors are found by one trie-shaped regex
before any rule's regex runs, e-mails need an `@`, encodings a `%` or `&#`,
phone numbers a run of seven digits (a byte-level test), and an
address-shaped octet run only becomes a host name when letters are glued to
it by `-` or `.` (a separator-led regex). Each prefilter is a necessary
condition of what it guards, never a heuristic: a line it passes over has
nothing the full scan would have found.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from re import _parser  # type: ignore[attr-defined]
from typing import Any, NamedTuple
from urllib.parse import unquote

import phonenumbers

from pipelines.pseudonym.grammar import Rule, builtin_grammars
from pipelines.pseudonym.scan import parse_mac

REGIONS = ("NG", "GH", "KE", "ZA", "GB", "US")
TOKEN = re.compile(r"tk-[0-9a-f]{6}-[0-9a-f]{20}")
NOT_A_VALUE = frozenset({"", "-", "--", "(null)", "null", "none", "n/a", "unknown", "?"})

EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+-]*@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,}(?![\w-])")
OCTETS = re.compile(r"(?<!\d)(\d{1,3})([-.])(\d{1,3})\2(\d{1,3})\2(\d{1,3})(?!\d)")
PHONE = re.compile(
    r"(?<![\w+.:/=-])(?:"
    r"(?:\+|00)[1-9][\d ()-]{6,17}\d"  # international, E.164 with separators
    r"|\(?0\d{1,4}\)?[ -]?\d{2,4}(?:[ -]?\d{2,4}){1,3}"  # national trunk prefix 0
    r"|\(?[2-9]\d{2}\)?[ .-]\d{3}[ .-]\d{4}"  # North American
    r")(?![\w.:/]|-\d)")
# A necessary condition for an OCTETS run that `hits` turns into a host name: a
# dash-spelt run, or a dotted one with a letter, `_`, `.` or `-` glued to either
# end. It leads with a separator, which sre finds by a fast C scan, where OCTETS
# (leading with a lookbehind) tries every position of every line in Python's
# regex loop; most lines hold only bare addresses and fail it at once.
OCTETS_GATE = re.compile(
    r"-\d{1,3}-\d{1,3}-\d"
    r"|\.\d{1,3}\.\d{1,3}\.\d{1,3}[A-Za-z_.-]"
    r"|\.(?:(?<=[A-Za-z_.-]\d\.)|(?<=[A-Za-z_.-]\d\d\.)|(?<=[A-Za-z_.-]\d\d\d\.))"
    r"\d{1,3}\.\d{1,3}\.\d")
ENCODED = re.compile(
    r"(?:[0-9A-Fa-f]{0,4}(?:%2[Ee]|%3[Aa]|&#0*46;|&#0*58;|&#[xX]0*2[eE];|&#[xX]0*3[aA];"
    r"|&period;|&colon;|[.:])){3,}[0-9A-Fa-f]{1,4}")
_HOSTCH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_ADDRLIKE = re.compile(r"^[0-9A-Fa-f:.%\[\]]+$")


class Hit(NamedTuple):
    start: int
    end: int
    cls: str
    value: str  # canonical where the finder normalises (E.164 for phones)
    learn: bool = False


class PublicNames:
    """The privacy policy's allowlist: names that identify no one (`pool.ntp.org`,
    `*.windowsupdate.com`). Empty by default, so every name is replaced."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        exact, suffixes = set(), []
        for n in names:
            n = n.strip().lower().rstrip(".")
            if n.startswith("*."):
                suffixes.append(n[1:])
            elif n:
                exact.add(n)
        self.exact, self.suffixes = frozenset(exact), tuple(suffixes)

    def __bool__(self) -> bool:
        return bool(self.exact or self.suffixes)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        v = value.lower().rstrip(".")
        return v in self.exact or v.endswith(self.suffixes) if self.suffixes else v in self.exact


def _phone(candidate: str) -> str | None:
    """The E.164 form of a real phone number, or None (a counter, a date, a serial)."""
    digits = sum(c.isdigit() for c in candidate)
    if not 7 <= digits <= 15 or parse_mac(candidate) is not None:
        return None  # a MAC of decimal digits is the address scanner's
    s = candidate
    if s.startswith("00"):
        s = "+" + s[2:]
    try:
        if s.startswith("+"):
            n = phonenumbers.parse(s, None)
            ok = phonenumbers.is_possible_number(n) and digits >= 9
            return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164) \
                if ok else None
        for region in REGIONS:
            n = phonenumbers.parse(s, region)
            if phonenumbers.is_valid_number(n):
                return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
    except phonenumbers.NumberParseException:
        return None
    return None


# Phone prefilter. A PHONE match is a hit only with 7 to 15 digits (`_phone`), and
# between its digits stand only ` ()-+`, or `.` in the North American form. So
# on ASCII text with the separators deleted and every other character but a
# digit made `x`, a hit needs seven zeros in a row, or a dotted North American
# shape; a line of addresses, clock times and ports has neither. One C
# translate and one `in` instead of the PHONE scan, whose leading lookbehind
# makes sre try every digit of every line.
_PHONE_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_PHONE_SEPARATORS = b" ()-+"
_PHONE_DOTTED = re.compile(r"\.(?:\d{3}[ .-]\d{4}|(?<=\d\d\d\.)\d{4})")


def _may_hold_phone(text: str) -> bool:
    """False only when no PHONE match in `text` can be a phone number (see above)."""
    if not text.isascii():
        return True  # `\d` is any Unicode digit: leave those to the full scan
    if b"0000000" in text.encode().translate(_PHONE_DIGITS, _PHONE_SEPARATORS):
        return True
    return "." in text and _PHONE_DOTTED.search(text) is not None


def _trie(words: Iterable[str]) -> str:
    """A regex matching exactly the non-empty `words`, as a trie: `(?:ab(?:c|d)?|x)`."""
    root: dict[str, Any] = {}
    for w in words:
        node = root
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        alts = [re.escape(ch) + build(sub) for ch, sub in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:  # a word ends here; the longer ones are optional
            return body + "?" if len(alts) > 1 else "(?:" + body + ")?"
        return body

    return build(root)


def _overlaps(a: str, b: str) -> bool:
    """Whether `b` can start inside an occurrence of `a`: inside it, or overlapping its end."""
    return b in a or any(a.endswith(b[:i]) for i in range(1, len(b)))


def _at_start(rx: re.Pattern[str]) -> bool:
    """Whether every match of `rx` starts at the text's (or, multiline, a line's) start.
    Read from the standard library's own regex parser (private); should it change,
    the answer is False, which only means the rule is tried everywhere, as before."""
    try:
        first = _parser.parse(rx.pattern, rx.flags).data[:1]
        return bool(first) and first[0] == (_parser.AT, _parser.AT_BEGINNING)
    except Exception:
        return False


def _addrhost(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    """The host name around an octet run, when letters are joined to it by `-`/`.`."""
    s, e = m.span()
    if not ((s and text[s - 1] in _HOSTCH) or (e < len(text) and text[e] in _HOSTCH)):
        return None  # a bare address: the address scanner's
    ws, we = s, e
    while ws and text[ws - 1] in _HOSTCH:
        ws -= 1
    while we < len(text) and text[we] in _HOSTCH:
        we += 1
    while we > e and text[we - 1] in ".-":
        we -= 1
    rest = text[ws:s] + text[e:we]
    if not any(c.isalpha() for c in rest) or not any(c in ".-" for c in rest):
        return None  # `IP10.9.8.5`, `10.9.8.5ms`: an address glued to a word
    if TOKEN.fullmatch(text[ws:we]) or rest.startswith("tk-") \
            or parse_mac(text[ws:we]) is not None:
        return None
    return ws, we


class Finder:
    """Grammars plus patterns, for one set of classes and one allowlist."""

    def __init__(self, rules: list[Rule] | None = None,
                 classes: Iterable[str] = ("user", "email", "phone", "host"),
                 public: PublicNames | None = None) -> None:
        self.classes = frozenset(classes)
        self.public = public or PublicNames()
        by_anchor: dict[str, list[Rule]] = {}
        always: list[Rule] = []
        for r in builtin_grammars() if rules is None else rules:
            if any(c in self.classes for _, c in r.groups):
                for a in r.anchors:
                    by_anchor.setdefault(a, []).append(r)
                if not r.anchors:
                    always.append(r)
        self._always = tuple(always)
        # rules anchored at the start (the syslog header): on a one-line text
        # `match` tries position 0 only, where `finditer` would try every position
        self._at_start = frozenset(id(r) for r in always if _at_start(r.regex))
        self._anchored = {a: tuple(rs) for a, rs in by_anchor.items()}
        # every anchor in one regex, as a trie (anchors sharing a prefix share its
        # branch, so sre tries one branch per first character, not one per anchor):
        # one C-level scan per line finds which grammars may apply
        self._anchor_rx = re.compile(_trie(by_anchor)) if by_anchor else None
        # findall reports non-overlapping anchors only: one inside or overlapping a
        # reported one (`for user ` in `session opened for user `) is its shadow,
        # tested with `in` when the reported one is there
        self._shadows = {a: tuple(b for b in by_anchor if b != a and _overlaps(a, b))
                         for a in by_anchor}
        self._rule_sets: dict[frozenset[str], tuple[Rule, ...]] = {}
        self._phones: dict[str, str | None] = {}
        self._kept: dict[tuple[str, str], bool] = {}
        self.guard_memo: dict[str, list[str]] = {}  # the leak guard's, see leakguard.py
        self.value_memo: dict[str, Any] = {}  # the leak guard's, see leakguard.py
        self._email = "email" in self.classes
        self._phone_on = "phone" in self.classes
        self._host = "host" in self.classes

    def _keep(self, cls: str, value: str) -> bool:
        """Values that are not raw identifiers: placeholders, our own tokens,
        addresses and MACs (the address scanner's), allowlisted public names.
        Remembered per value: the same header host comes on every line."""
        k = self._kept.get((cls, value))
        if k is None:
            k = value.lower() in NOT_A_VALUE or TOKEN.fullmatch(value) is not None or (
                cls == "host" and (_ADDRLIKE.match(value) is not None
                                   or parse_mac(value.strip("()[]")) is not None)) or (
                bool(self.public) and value in self.public)
            if len(self._kept) > 65536:
                self._kept.clear()
            self._kept[(cls, value)] = k
        return k

    def _rules_for(self, text: str, reported: list[str]) -> tuple[Rule, ...]:
        """The rules to run on `text`, given the anchors `findall` reported in it:
        those anchors, their shadows that are in the text too, in rule order."""
        present = set(reported)
        shadows = self._shadows
        for a in reported:
            for b in shadows[a]:
                if b not in present and b in text:
                    present.add(b)
        key = frozenset(present)
        rules = self._rule_sets.get(key)
        if rules is None:
            chosen = dict.fromkeys(self._always)  # a rule under two anchors runs once
            for anchor, rs in self._anchored.items():
                if anchor in present:
                    chosen.update(dict.fromkeys(rs))
            rules = self._rule_sets[key] = tuple(chosen)
            if len(self._rule_sets) > 4096:
                self._rule_sets.clear()
        return rules

    def hits(self, text: str) -> list[Hit]:
        """Every identifier in `text`, in order, without overlaps (first wins)."""
        found: list[Hit] = []
        rules: tuple[Rule, ...] | list[Rule] = self._always
        if self._anchor_rx is not None:
            present = self._anchor_rx.findall(text)
            if present:
                rules = self._rules_for(text, present)
        classes = self.classes
        one_line = "\n" not in text
        at_start = self._at_start
        for rule in rules:
            if one_line and id(rule) in at_start:
                first = rule.regex.match(text)
                matches: Iterable[re.Match[str]] = () if first is None else (first,)
            else:
                matches = rule.regex.finditer(text)
            for m in matches:
                for name, cls in rule.groups:
                    v = m.group(name)
                    if v is None or cls not in classes:
                        continue
                    v = v.rstrip(".,;:")
                    if not self._keep(cls, v):
                        s = m.start(name)
                        found.append(Hit(s, s + len(v), cls, v, rule.learn))
        if self._email and "@" in text:
            for m in EMAIL.finditer(text):
                if not self._keep("email", m.group()):
                    found.append(Hit(m.start(), m.end(), "email", m.group().lower()))
        if self._host and OCTETS_GATE.search(text) is not None:
            n = len(text)
            for m in OCTETS.finditer(text):
                s, e = m.span()
                if not ((s and text[s - 1] in _HOSTCH) or (e < n and text[e] in _HOSTCH)):
                    continue  # a bare address, the common case: the address scanner's
                if any(int(g) > 255 for g in m.group(1, 3, 4, 5)):
                    inner = OCTETS.search(text, s + 1)  # `300-10-9-8-7`: look inside once
                    if inner is None or any(int(g) > 255 for g in inner.group(1, 3, 4, 5)):
                        continue
                    m = inner
                span = _addrhost(text, m)
                if span is not None and _in_mac(text, span):
                    continue  # `01-57-97-29-70-a0` is a MAC (the address scanner's), not a host
                if span is not None and not self._keep("host", text[span[0]:span[1]]):
                    found.append(Hit(span[0], span[1], "host", text[span[0]:span[1]]))
        if self._phone_on and _may_hold_phone(text):
            for m in PHONE.finditer(text):
                c = m.group()
                if "-" in c and _in_mac(text, (m.start() + c.startswith("("), m.end())):
                    continue  # `(01-57-97-29-70-a0` is a MAC, not a phone number
                e164 = self._phones.get(c, "")
                if e164 == "":
                    e164 = self._phones[c] = _phone(c)
                    if len(self._phones) > 65536:
                        self._phones.clear()
                if e164 is not None:
                    found.append(Hit(m.start(), m.end(), "phone", e164))
        if len(found) > 1:
            found.sort(key=lambda h: (h.start, -h.end))
            keep, end = [], -1
            for h in found:
                if h.start >= end:
                    keep.append(h)
                    end = h.end
            found = keep
        return found

    def rewrite(self, text: str, token: Callable[[str, str], str],
                learn: Callable[[str, str], None] | None = None) -> str:
        """`text` with every hit replaced by `token(class, value)`; encoded
        addresses decoded in place for the address scanner that runs next."""
        if "%" in text or "&" in text:
            text = ENCODED.sub(_decode, text)
        found = self.hits(text)
        if not found:
            return text
        out, pos = [], 0
        for h in found:
            out.append(text[pos:h.start])
            out.append(token(h.cls, h.value))
            if h.learn and learn is not None:
                learn(h.cls, h.value)
            pos = h.end
        out.append(text[pos:])
        return "".join(out)


def _decode(m: re.Match[str]) -> str:
    s = m.group()
    if "%" not in s and "&" not in s:
        return s
    return unquote(html.unescape(s))


_MAC_DASHED = re.compile(r"(?<![0-9A-Fa-f-])(?:[0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2}(?![0-9A-Fa-f-])")


def _in_mac(text: str, span: tuple[int, int]) -> bool:
    """The span lies inside a dash-spelt MAC (the address scanner's to replace)."""
    return any(m.start() <= span[0] and span[1] <= m.end()
               for m in _MAC_DASHED.finditer(text, max(0, span[0] - 17), span[1] + 17))
