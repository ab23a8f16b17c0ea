"""Per-device SNMP options, read strictly from a device's `[devices.snmp]` table.

    [devices.snmp]
    version = "2c"                 # "1", "2c" or "3"
    credential = "core-snmp"       # secrets from the credential store (see below)
    community = "public"           # v1/v2c only
    user = "noc"                   # v3 only (else the credential's username)
    auth_protocol = "sha256"       # none, md5, sha, sha224, sha256, sha384, sha512
    auth_key = "..."               # at least 8 characters (RFC 3414)
    priv_protocol = "aes"          # none, des, 3des, aes, aes192, aes256, aes192c, aes256c
    priv_key = "..."
    context = ""                   # v3 context name
    max_repetitions = 25
    timeout_s = 2.0                # per request attempt
    retries = 1
    profiles = []                  # empty: choose by sysObjectID
    engine = "auto"                # auto (fast path where it applies), pysnmp, fast

`credential` names an entry of the encrypted credential store: its
`snmp_community` (v1/v2c) or `snmp_auth_key`/`snmp_priv_key` (v3) replace the
inline keys, which are then refused once the agent config names a store
(`[credentials] file`). Inline keys remain for configs without a store; the
file is refused unless mode 0600. Secrets never appear in errors or logs
(ConfigError names the key only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agents.credentials import ConfigSecrets
from agents.snmp.profiles import Profile, default_profiles
from pipelines.config import Section

AUTH_PROTOCOLS = ("none", "md5", "sha", "sha224", "sha256", "sha384", "sha512")
PRIV_PROTOCOLS = ("none", "des", "3des", "aes", "aes192", "aes256", "aes192c", "aes256c")
ENGINES = ("auto", "pysnmp", "fast")


@dataclass(frozen=True, slots=True)
class SnmpOptions:
    version: str = "2c"
    community: str = field(default="public", repr=False)
    user: str = ""
    auth_protocol: str = "none"
    auth_key: str = field(default="", repr=False)
    priv_protocol: str = "none"
    priv_key: str = field(default="", repr=False)
    context: str = ""
    max_repetitions: int = 25
    timeout_s: float = 2.0
    retries: int = 1
    profiles: tuple[str, ...] = ()
    engine: str = "auto"

    @property
    def security_level(self) -> str:
        if self.auth_protocol == "none":
            return "noAuthNoPriv"
        return "authNoPriv" if self.priv_protocol == "none" else "authPriv"

    @property
    def deadline_s(self) -> float:
        """The most one request may take, retries included: what the poller waits at most."""
        return self.timeout_s * (self.retries + 1) + 0.5


def parse_options(s: Section, secrets: ConfigSecrets | None = None,
                  profiles: Mapping[str, Profile] | None = None) -> SnmpOptions:
    """`profiles` are those the device's `profiles = [...]` may name: the agent's
    (built-in plus its configured dirs); unset, the built-in ones plus
    `$PRIVTEL_SNMP_PROFILE_DIR`."""
    version = s.str("version", "2c", choices=("1", "2c", "3"))
    v3 = version == "3"
    if secrets is not None:
        for key in ("community", "auth_key", "priv_key"):
            secrets.refuse_inline(s, key)
    community = s.str("community", None)
    user = s.str("user", None)
    auth = s.str("auth_protocol", None, choices=AUTH_PROTOCOLS)
    auth_key = s.str("auth_key", None)
    priv = s.str("priv_protocol", None, choices=PRIV_PROTOCOLS)
    priv_key = s.str("priv_key", None)
    context = s.str("context", None)
    cred_name = s.str("credential", None)
    if cred_name is not None:
        if community is not None or auth_key is not None or priv_key is not None:
            raise s.error("credential", "is set, so community, auth_key and priv_key must "
                          "not be: the secrets come from the credential store")
        src = secrets if secrets is not None else ConfigSecrets()
        if not v3:
            community = src.secret(s, "credential", cred_name, "snmp_community")
        else:
            user = user or src.get(s, "credential", cred_name).username
            if auth not in (None, "none"):
                auth_key = src.secret(s, "credential", cred_name, "snmp_auth_key")
            if priv not in (None, "none"):
                priv_key = src.secret(s, "credential", cred_name, "snmp_priv_key")
    opts = SnmpOptions(
        version=version,
        community=community if community is not None else "public",
        user=user or "",
        auth_protocol=auth or "none",
        auth_key=auth_key or "",
        priv_protocol=priv or "none",
        priv_key=priv_key or "",
        context=context or "",
        max_repetitions=s.int("max_repetitions", 25, lo=1, hi=200),
        timeout_s=s.float("timeout_s", 2.0, lo=0.05, hi=60),
        retries=s.int("retries", 1, lo=0, hi=10),
        profiles=tuple(s.str_list("profiles", [])),
        engine=s.str("engine", "auto", choices=ENGINES),
    )
    if v3:
        if community is not None:
            raise s.error("community", "is for versions 1 and 2c; version 3 uses user and keys")
        if not opts.user:
            raise s.error("user", "is required for version 3")
        if opts.auth_protocol != "none" and len(opts.auth_key) < 8:
            raise s.error("auth_key", "must be at least 8 characters (RFC 3414)")
        if opts.auth_protocol == "none" and auth_key:
            raise s.error("auth_key", "is set but auth_protocol is none")
        if opts.priv_protocol != "none":
            if opts.auth_protocol == "none":
                raise s.error("priv_protocol", "needs an auth_protocol (USM has no privNoAuth)")
            if len(opts.priv_key) < 8:
                raise s.error("priv_key", "must be at least 8 characters (RFC 3414)")
        elif priv_key:
            raise s.error("priv_key", "is set but priv_protocol is none")
    else:
        for name, v in (("user", user), ("auth_protocol", auth), ("auth_key", auth_key),
                        ("priv_protocol", priv), ("priv_key", priv_key), ("context", context)):
            if v is not None:
                raise s.error(name, f"is for version 3 only, not version {version}")
        if not opts.community:
            raise s.error("community", "must not be empty")
    if opts.profiles:
        known = default_profiles() if profiles is None else profiles
        for name in opts.profiles:
            if name not in known:
                raise s.error("profiles", f"unknown profile {name!r} (known: "
                                          f"{', '.join(sorted(known))})")
    if opts.engine == "fast" and (version == "1" or opts.priv_protocol in ("3des", "aes192c",
                                                                           "aes256c")):
        raise s.error("engine", "the fast path speaks v2c and v3 with des/aes/aes192/aes256 "
                      "only; use auto or pysnmp")
    s.done()
    return opts
