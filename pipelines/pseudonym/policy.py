"""Field classes and the privacy policy that says what happens to each class.

Every record field has a class. Known names are declared here (the record
contract in docs/architecture.md); name patterns catch the usual spellings
(`*_addr`, `*_ip`, `*_mac`, `*_lat`); the agent config may declare more; and a
string field nobody declared is scrubbed as free text, so adding a field can
never slip a raw address past the pseudonymiser.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipelines.config import Section
from pipelines.pseudonym.classes import ALL as _ALL
from pipelines.pseudonym.errors import PolicyError
from pipelines.pseudonym.geo import MIN_GRID_KM


class FieldClass(StrEnum):
    IP = "ip"
    MAC = "mac"
    GEO_LAT = "geo_lat"
    GEO_LON = "geo_lon"
    GEO_PLACE = "geo_place"
    IDENTIFIER = "identifier"
    USER = "user"
    EMAIL = "email"
    PHONE = "phone"
    PERSON = "person"
    TEXT = "text"
    MEASUREMENT = "measurement"
    PUBLIC = "public"


C = FieldClass
DECLARED: dict[str, FieldClass] = {
    # device.health
    "up": C.MEASUREMENT, "reason": C.PUBLIC, "protocol": C.PUBLIC,
    "poll_duration_s": C.MEASUREMENT, "uptime_s": C.MEASUREMENT,
    # snmp.system
    "sys_descr": C.TEXT, "sys_object_id": C.PUBLIC, "sys_name": C.IDENTIFIER,
    "sys_contact": C.PERSON, "sys_location": C.GEO_PLACE,
    # if
    "if_index": C.MEASUREMENT, "if_descr": C.TEXT, "if_name": C.TEXT, "if_alias": C.TEXT,
    "in_octets": C.MEASUREMENT, "out_octets": C.MEASUREMENT,
    "in_errors": C.MEASUREMENT, "out_errors": C.MEASUREMENT,
    "in_discards": C.MEASUREMENT, "out_discards": C.MEASUREMENT,
    "oper_status": C.MEASUREMENT, "admin_status": C.MEASUREMENT, "speed_bps": C.MEASUREMENT,
    # host.*
    "cpu_util_pct": C.MEASUREMENT, "mem_used_bytes": C.MEASUREMENT,
    "mem_total_bytes": C.MEASUREMENT,
    # ssh.inventory, ENTITY-MIB: serials are kept for RMA work (scanned as text); set
    # `[privacy.fields] serial = "identifier"` to token them
    "serial": C.TEXT, "model": C.TEXT, "sw_version": C.TEXT, "device_type": C.PUBLIC,
    # common identifiers, logs, geo
    "hostname": C.IDENTIFIER, "host": C.IDENTIFIER, "user": C.USER,
    "username": C.USER, "contact": C.PERSON, "email": C.EMAIL, "phone": C.PHONE,
    "message": C.TEXT, "line": C.TEXT, "msg": C.TEXT,
    "lat": C.GEO_LAT, "latitude": C.GEO_LAT, "lon": C.GEO_LON, "lng": C.GEO_LON,
    "longitude": C.GEO_LON, "location": C.GEO_PLACE,
    # written by the pseudonymiser itself
    "pkid": C.PUBLIC, "geo_precision_km": C.PUBLIC, "geo_level": C.PUBLIC,
}
_PATTERNS: tuple[tuple[re.Pattern[str], FieldClass], ...] = (
    (re.compile(r"^(?:.*_)?(?:ip|ipv4|ipv6|addr|address|ip_addr|nexthop|next_hop|peer)$"),
     C.IP),
    (re.compile(r"^(?:.*_)?mac$"), C.MAC),
    (re.compile(r"^(?:.*_)?(?:lat|latitude)$"), C.GEO_LAT),
    (re.compile(r"^(?:.*_)?(?:lon|lng|longitude)$"), C.GEO_LON),
    (re.compile(r"^(?:.*_)?location$"), C.GEO_PLACE),
    (re.compile(r"^(?:.*_)?hostname$"), C.IDENTIFIER),
    (re.compile(r"^(?:.*_)?(?:user|username|login)$"), C.USER),
    (re.compile(r"^(?:.*_)?(?:email|e_mail|mail)$"), C.EMAIL),
    (re.compile(r"^(?:.*_)?(?:phone|mobile|msisdn)$"), C.PHONE),
    (re.compile(r"^(?:.*_)?contact$"), C.PERSON),
)

ALL_CLASSES = frozenset(_ALL)
IP_MODES = ("prefix", "token", "ipcrypt", "ipcrypt-pfx", "ipcrypt-ndx")
MODES: dict[str, tuple[str, ...]] = {
    "ip": IP_MODES,
    "text_ip": IP_MODES,
    "mac": ("prefix", "token"),
    "identifier": ("token",),
    "text": ("scrub", "token", "drop"),
    "geo": ("generalise", "drop"),
}
_DEFAULT_MODES = {"ip": "prefix", "text_ip": "prefix", "mac": "prefix",
                  "identifier": "token", "text": "scrub", "geo": "generalise"}


def classify(name: str, overrides: dict[str, FieldClass] | None = None) -> FieldClass | None:
    """The declared class of a field name, or None (then the value's type decides)."""
    if overrides and name in overrides:
        return overrides[name]
    c = DECLARED.get(name)
    if c is not None:
        return c
    for pattern, cls in _PATTERNS:
        if pattern.match(name):
            return cls
    return None


@dataclass(frozen=True, slots=True)
class PrivacyPolicy:
    """What the pseudonymiser does per field class. The defaults pseudonymise everything."""

    modes: dict[str, str] = field(default_factory=lambda: dict(_DEFAULT_MODES))
    preserve_prefix_v4: int = 32
    preserve_prefix_v6: int = 128
    passthrough: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    geo_grid_km: float = 10.0
    place_level: str = "region"
    cache_size: int = 65536
    fields: dict[str, FieldClass] = field(default_factory=dict)
    classes: frozenset[str] = ALL_CLASSES
    public_names: tuple[str, ...] = ()
    quarantine_retention_days: float = 7.0

    def __post_init__(self) -> None:
        for cls, mode in self.modes.items():
            if cls not in MODES:
                raise PolicyError(f"no field class {cls!r} has modes "
                                  f"(known: {', '.join(MODES)})")
            if mode not in MODES[cls]:
                raise PolicyError(f"mode for {cls} must be one of {', '.join(MODES[cls])}, "
                                  f"not {mode!r}")
        for cls in MODES:
            self.modes.setdefault(cls, _DEFAULT_MODES[cls])
        if not 0 <= self.preserve_prefix_v4 <= 32:
            raise PolicyError("preserve_prefix_v4 must be between 0 and 32")
        if not 0 <= self.preserve_prefix_v6 <= 128:
            raise PolicyError("preserve_prefix_v6 must be between 0 and 128")
        if not self.geo_grid_km >= MIN_GRID_KM:
            raise PolicyError(f"geo_grid_km must be at least {MIN_GRID_KM} km")
        if self.place_level not in ("region", "country"):
            raise PolicyError("place_level must be region or country")
        if self.cache_size < 16:
            raise PolicyError("cache_size must be at least 16")
        unknown = sorted(set(self.classes) - set(ALL_CLASSES))
        if unknown:
            raise PolicyError(f"unknown identifier class {', '.join(unknown)}")
        if not self.quarantine_retention_days > 0:
            raise PolicyError("quarantine_retention_days must be more than 0")

    @classmethod
    def from_section(cls, section: Section) -> PrivacyPolicy:
        """The optional `[privacy]` table of the agent config; unknown keys are errors.

        ```toml
        [privacy]
        preserve_prefix_v4 = 24          # keep /24 structure, no structure below
        preserve_prefix_v6 = 64
        passthrough = ["127.0.0.0/8"]    # default: none, everything is pseudonymised
        geo_grid_km = 10.0               # at least 1
        place_level = "region"           # or "country"
        cache_size = 65536
        public_names = []                # names that identify no one, kept in clear:
                                         # e.g. ["pool.ntp.org", "*.windowsupdate.com"]
        quarantine_retention_days = 7    # the leak guard's quarantine is purged after
        [privacy.modes]
        ip = "prefix"                    # prefix | token | ipcrypt | ipcrypt-pfx | ipcrypt-ndx
        text_ip = "prefix"               # addresses found inside free text
        mac = "prefix"                   # prefix | token
        text = "scrub"                   # scrub | token | drop
        geo = "generalise"               # generalise | drop
        [privacy.fields]
        serial = "identifier"            # declare the class of extra fields
        ```
        """
        m = section.section("modes")
        modes = {}
        for name, choices in MODES.items():
            modes[name] = m.str(name, _DEFAULT_MODES[name], choices=choices)
        m.done()
        raw_fields = section.raw("fields", {})
        if not isinstance(raw_fields, dict):
            raise section.error("fields", "must be a table of field name = class")
        classes = tuple(c.value for c in FieldClass)
        fields: dict[str, FieldClass] = {}
        for name, value in raw_fields.items():
            if not isinstance(value, str) or value not in classes:
                raise section.error(f"fields.{name}", f"must be one of {', '.join(classes)}")
            fields[name] = FieldClass(value)
        nets = []
        for i, text in enumerate(section.str_list("passthrough", [])):
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise section.error(f"passthrough[{i}]", "is not an address range "
                                    "like 127.0.0.0/8") from None
        kwargs: dict[str, Any] = dict(
            modes=modes,
            preserve_prefix_v4=section.int("preserve_prefix_v4", 32, lo=0, hi=32),
            preserve_prefix_v6=section.int("preserve_prefix_v6", 128, lo=0, hi=128),
            passthrough=tuple(nets),
            geo_grid_km=section.float("geo_grid_km", 10.0, lo=MIN_GRID_KM, hi=20000.0),
            place_level=section.str("place_level", "region", choices=("region", "country")),
            cache_size=section.int("cache_size", 65536, lo=16, hi=10_000_000),
            fields=fields,
            public_names=tuple(section.str_list("public_names", [])),
            quarantine_retention_days=section.float("quarantine_retention_days", 7.0,
                                                    lo=0.01, hi=3650.0),
        )
        section.done()
        return cls(**kwargs)
