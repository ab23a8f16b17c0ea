"""The identifier classes: one table, one keyed token form per class.

A person can be identified by more than an address. Each class below says how a
value is brought to one canonical spelling before it is keyed, so that the
token an analyst sees in a record field is the token they see inside a log
line (`user=adaeze` in a field and `Accepted publickey for adaeze` in text give
the same `tk-...`). Addresses and MACs keep their structure-preserving
pseudonyms (an address of the same family, a MAC); every other class gets the
keyed token `tk-<key id 6>-<80-bit HMAC-SHA256>` of its canonical value.

`docs/privacy.md` has the same table for people.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _same(v: str) -> str:
    return v.strip()


def _lower(v: str) -> str:
    return v.strip().lower()


def _host(v: str) -> str:
    return v.strip().rstrip(".")


def _digits(v: str) -> str:
    """E.164 when the finder already normalised it, else the digits with a leading +."""
    s = v.strip()
    plus = s.startswith("+")
    d = "".join(c for c in s if c.isdigit())
    return ("+" if plus else "") + d


@dataclass(frozen=True, slots=True)
class IdClass:
    name: str
    form: str  # what the pseudonymiser writes in its place
    found_by: str  # where the finder looks (docs)
    canonical: Callable[[str], str]


CLASSES: dict[str, IdClass] = {c.name: c for c in (
    IdClass("ip", "address of the same family (Crypto-PAn prefix mode by default)",
            "fields *_ip/*_addr/...; any textual IPv4/IPv6, glued to letters, "
            "percent- or HTML-encoded", _same),
    IdClass("mac", "MAC of 48 bits (Crypto-PAn over the MAC key), colon form",
            "fields *_mac; colon, dash, dot, aabb-ccdd-eeff, bare 12 hex, unpadded", _lower),
    IdClass("user", "tk- token of the name as written",
            "fields user/username/login; log grammars (grammars/*.toml)", _same),
    IdClass("email", "tk- token of the lower-cased address",
            "fields *email; any addr-spec in text", _lower),
    IdClass("phone", "tk- token of the E.164 number",
            "fields *phone; E.164 and national forms (phonenumbers)", _digits),
    IdClass("host", "tk- token of the name as written, trailing dot dropped",
            "fields hostname/sys_name/device; grammars (rhost=, getaddrinfo for, "
            "syslog header); names holding an address (ip-10-9-8-7...)", _host),
    IdClass("person", "tk- token of the text",
            "sys_contact/contact fields (split into person, email, phone)", _same),
)}
ALL = tuple(CLASSES)
TEXT_CLASSES = ("user", "email", "phone", "host", "person")  # keyed tokens


def canonical(cls: str, value: str) -> str:
    return CLASSES[cls].canonical(value)


def parse_classes(text: str) -> frozenset[str]:
    """`ip,mac,user` (or `all`) as a set of class names; unknown names are errors."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names == {"all"}:
        return frozenset(ALL)
    unknown = sorted(names - set(ALL))
    if unknown or not names:
        raise ValueError(f"unknown identifier class {', '.join(unknown) or '(none)'}; "
                         f"known: {', '.join(ALL)}")
    return frozenset(names)
