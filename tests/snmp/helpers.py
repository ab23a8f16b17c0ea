"""Small builders shared by the SNMP tests."""

from __future__ import annotations

from typing import Any

from peers.snmpd import SnmpPeer, V3User

from agents.pollers import Device
from agents.snmp.options import SnmpOptions

_AUTH = {"MD5": "md5", "SHA": "sha", "SHA-224": "sha224", "SHA-256": "sha256",
         "SHA-384": "sha384", "SHA-512": "sha512"}
_PRIV = {"DES": "des", "AES": "aes", "AES-128": "aes", "AES-192": "aes192", "AES-256": "aes256"}


FAST_PROFILES = ("system", "if-mib")


def v3_options(u: V3User, **kw: Any) -> SnmpOptions:
    kw.setdefault("profiles", FAST_PROFILES)
    # generous: a loaded CI box must not turn a live agent into a timeout
    kw.setdefault("timeout_s", 5.0)
    return SnmpOptions(version="3", community="", user=u.name,
                       auth_protocol=_AUTH[u.auth] if u.auth else "none",
                       auth_key=u.auth_key if u.auth else "",
                       priv_protocol=_PRIV[u.priv] if u.priv else "none",
                       priv_key=u.priv_key if u.priv else "", **kw)


def device(peer: SnmpPeer | None, name: str = "r1", *, port: int | None = None,
           options: SnmpOptions | None = None, **kw: Any) -> Device:
    """A device at the peer; only the system and IF-MIB profiles unless told otherwise."""
    kw.setdefault("profiles", FAST_PROFILES)
    if options is None:  # generous: a loaded CI box must not turn a live agent into a timeout
        kw.setdefault("timeout_s", 5.0)
    return Device(name=name, address="127.0.0.1",
                  port=port if port is not None else peer.port,  # type: ignore[union-attr]
                  protocol="snmp", interval_s=60, tenant="acme", site="lab",
                  options=options or SnmpOptions(**kw))


def by_name(records: list[Any], name: str) -> list[Any]:
    return [r for r in records if r.name == name]
