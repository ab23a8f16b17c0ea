"""Subject files: a data subject named by any identifier class, one per line.

    ip:10.1.2.3      net:10.1.2.0/24      user:adaeze       email:a@b.ng
    mac:00:1b:63:84:45:e6                 host:iphone-de-chinedu
    phone:+2348035550147                  # comments and blank lines are ignored

Parsing and forward pseudonymisation are pure, so the collector, the API and
the command line share them; the raw values never leave the caller's memory
(errors name the line, never the value).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pipelines.pseudonym.classes import CLASSES, canonical
from pipelines.pseudonym.core import Pseudonymiser
from pipelines.pseudonym.errors import PseudonymError
from pipelines.pseudonym.idscan import _phone
from pipelines.pseudonym.scan import format_mac, parse_mac, parse_v4

SUBJECT_CLASSES = ("ip", "net", "user", "email", "mac", "host", "phone", "person")


@dataclass(frozen=True, slots=True)
class Subject:
    cls: str  # one of SUBJECT_CLASSES
    value: str  # canonical raw value (never logged)

    def __repr__(self) -> str:
        return f"Subject({self.cls})"


@dataclass(frozen=True, slots=True)
class Pseudonymous:
    cls: str
    value: str  # what the store holds for this subject: pseudonym, network or token


def parse_subject(line: str, where: str = "") -> Subject:
    cls, sep, value = line.strip().partition(":")
    cls, value = cls.strip().lower(), value.strip()
    if not sep or cls not in SUBJECT_CLASSES or not value:
        raise PseudonymError(f"{where}: expected CLASS:VALUE with CLASS one of "
                             f"{', '.join(SUBJECT_CLASSES)}")
    if cls == "ip":
        a = parse_v4(value)
        if a is None:
            try:
                a = ipaddress.IPv6Address(value)  # type: ignore[assignment]
            except ValueError:
                raise PseudonymError(f"{where}: not an IPv4 or IPv6 address") from None
        return Subject("ip", str(a))
    if cls == "net":
        try:
            return Subject("net", str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise PseudonymError(f"{where}: not a network like 10.1.2.0/24") from None
    if cls == "mac":
        m = parse_mac(value)
        if m is None:
            raise PseudonymError(f"{where}: not a MAC address")
        return Subject("mac", format_mac(m[0], ":"))
    if cls == "phone":
        e164 = _phone(value)
        if e164 is None:
            raise PseudonymError(f"{where}: not a phone number (E.164 or a national form "
                                 "of NG, GH, KE, ZA, GB, US)")
        return Subject("phone", e164)
    if cls == "email" and "@" not in value:
        raise PseudonymError(f"{where}: not an e-mail address")
    return Subject(cls, canonical(cls, value))


def parse_subjects(text: str, source: str = "subjects") -> list[Subject]:
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if s:
            out.append(parse_subject(s, f"{source}: line {i}"))
    return out


def forward(subjects: list[Subject], p: Pseudonymiser) -> list[Pseudonymous]:
    """What each subject looks like in the store, under the tenant key of `p`."""
    out = []
    for s in subjects:
        if s.cls == "ip":
            out.append(Pseudonymous("ip", p.ip(s.value)))
        elif s.cls == "net":
            if p.policy.modes["ip"] not in ("prefix", "ipcrypt-pfx"):
                raise PseudonymError("net: subjects need a prefix-preserving ip mode "
                                     "(prefix or ipcrypt-pfx)")
            net = ipaddress.ip_network(s.value)
            first = p.ip(str(net.network_address))
            out.append(Pseudonymous("net", str(ipaddress.ip_network(
                f"{first}/{net.prefixlen}", strict=False))))
        elif s.cls == "mac":
            out.append(Pseudonymous("mac", p.mac(s.value)))
        elif s.cls in CLASSES:
            out.append(Pseudonymous(s.cls, p.id_token(s.cls, s.value)))
    return out
