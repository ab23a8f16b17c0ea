"""The agent's config file: strict TOML, refused if others can read it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from agents.credentials import ConfigSecrets
from agents.pollers import REGISTRY, Device, PollerContext
from agents.protocols import load_builtin
from agents.snmp.traps import TrapConfig, parse_trap_config
from agents.spool import SpoolConfig
from agents.syslog.config import SyslogConfig, parse_syslog_config
from pipelines.config import ConfigError, Section, listen_address, parse_toml, require_private
from pipelines.names import PATTERN as NAME_PATTERN
from pipelines.names import BadName, check_name, is_name
from pipelines.pseudonym import PrivacyPolicy


@dataclass(frozen=True, slots=True)
class MqttConfig:
    url: str = "mqtt://127.0.0.1:1883"
    protocol: str = "5"
    client_id: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Route:
    """A broker in a region (`[[mqtt.routes]]`)."""

    region: str
    url: str


@dataclass(frozen=True, slots=True)
class Residency:
    """Where this site's data is collected (`region`) and where the tenant's
    contract lets it be processed and stored (`allowed_regions`)."""

    region: str | None = None
    allowed_regions: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    route: Route | None = None  # the one in use


@dataclass(frozen=True, slots=True)
class KeysConfig:
    signing_key: Path
    collector_public_key: Path
    tenant_key: Path
    tenant_key_epoch: int = 1
    tenant_key_rotate_days: int | None = None
    passphrase_file: Path | None = None   # unlocks signing_key when it is encrypted
    suppression_public_key: Path | None = None  # verifies objections' suppression lists
    collector_receipt_key: Path | None = None   # Ed25519 public; None: PUBACK frees batches


@dataclass(frozen=True, slots=True)
class AgentConfig:
    file: str
    agent_id: str
    tenant: str
    site: str
    state_dir: Path
    keys: KeysConfig
    mqtt: MqttConfig
    devices: tuple[Device, ...]
    pollers: PollerContext
    batch_max_records: int = 500
    batch_max_age_s: float = 5.0
    max_concurrent_polls: int = 64
    suite: str = "x25519"
    metrics_listen: tuple[str, int] | None = None
    residency: Residency = Residency()
    heartbeat_interval_s: float = 60.0
    # the optional sections, parsed once at load; consumers read these, never the raw tables
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    privacy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    traps: TrapConfig | None = field(default=None, repr=False)  # may hold resolved secrets
    syslog: SyslogConfig | None = None


def _path(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() else base / p


def _residency(root: Section, m: Section) -> Residency:
    """`[[mqtt.routes]]` (region, url) and `[residency]` (region, allowed_regions): the
    route used is the one in the site's own region if the tenant allows it (no
    transfer), else the first allowed one in file order; none allowed is an error,
    as a tenant's data must never go to a region its contract forbids."""
    r = root.section("residency")
    region = r.str("region", None)
    allowed = tuple(r.str_list("allowed_regions", []))
    r.done()
    routes = []
    for rs in m.sections("routes"):
        url = rs.str("url")
        if not url.startswith(("mqtt://", "mqtts://")):
            raise rs.error("url", "must start with mqtt:// or mqtts://")
        routes.append(Route(rs.str("region"), url))
        rs.done()
    if not routes:
        return Residency(region, allowed)
    if "url" in m:
        raise m.error("url", "give either url or [[mqtt.routes]], not both")
    if not allowed:
        raise r.error("allowed_regions", "is required with [[mqtt.routes]]: the regions "
                      "the tenant's contract allows its data to be processed in")
    ok = [x for x in routes if x.region in allowed]
    if not ok:
        raise m.error("routes", f"no route goes to a region the tenant allows "
                      f"({', '.join(allowed)}); routes: "
                      f"{', '.join(x.region for x in routes)}")
    chosen = next((x for x in ok if x.region == region), ok[0])
    return Residency(region, allowed, tuple(routes), chosen)


def load(path: str | os.PathLike[str]) -> AgentConfig:
    p = Path(path)
    require_private(str(p), p.stat().st_mode)
    return parse(p.read_text(), str(p), base=p.parent)


def parse(text: str, file: str, base: Path = Path(".")) -> AgentConfig:
    load_builtin()
    root = parse_toml(text, file)
    a = root.section("agent", required=True)
    agent_id = a.str("id")
    tenant = a.str("tenant")
    site = a.str("site")
    state_dir = _path(base, a.str("state_dir"))
    batch_max_records = a.int("batch_max_records", 500, lo=1, hi=100_000)
    batch_max_age_s = a.float("batch_max_age_s", 5.0, lo=0.01, hi=3600)
    max_conc = a.int("max_concurrent_polls", 64, lo=1, hi=10_000)
    suite = a.str("suite", "x25519", choices=("x25519", "mlkem768-x25519"))
    metrics_listen = listen_address(a, "metrics_listen", None)
    heartbeat_interval_s = a.float("heartbeat_interval_s", 60.0, lo=0.1, hi=86400)
    a.done()
    for what, v in (("agent.id", agent_id), ("agent.tenant", tenant), ("agent.site", site)):
        try:
            check_name(v)
        except BadName as e:
            raise ConfigError(file, what, str(e)) from None

    k = root.section("keys", required=True)
    keys = KeysConfig(
        signing_key=_path(base, k.str("signing_key")),  # type: ignore[arg-type]
        collector_public_key=_path(base, k.str("collector_public_key")),  # type: ignore[arg-type]
        tenant_key=_path(base, k.str("tenant_key")),  # type: ignore[arg-type]
        tenant_key_epoch=k.int("tenant_key_epoch", 1, lo=0),
        tenant_key_rotate_days=k.int("tenant_key_rotate_days", None, lo=1, hi=3650),
        passphrase_file=_path(base, k.str("passphrase_file", None)),
        suppression_public_key=_path(base, k.str("suppression_public_key", None)),
        collector_receipt_key=_path(base, k.str("collector_receipt_key", None)),
    )
    k.done()

    m = root.section("mqtt")
    residency = _residency(root, m)
    mqtt = MqttConfig(
        url=residency.route.url if residency.route else m.str("url", "mqtt://127.0.0.1:1883"),
        protocol=m.str("protocol", "5", choices=("5", "3.1.1")),
        client_id=m.str("client_id", None),
        ca_file=_path(base, m.str("ca_file", None)),
        cert_file=_path(base, m.str("cert_file", None)),
        key_file=_path(base, m.str("key_file", None)),
        keepalive_s=m.int("keepalive_s", 30, lo=5, hi=3600),
        timeout_s=m.float("timeout_s", 10.0, lo=0.1, hi=300),
    )
    if not mqtt.url.startswith(("mqtt://", "mqtts://")):
        raise m.error("url", "must start with mqtt:// or mqtts://")
    m.done()

    pollers = _poller_context(root, base, state_dir)  # type: ignore[arg-type]
    devices = []
    names: set[str] = set()
    for d in root.sections("devices"):
        protocol = d.str("protocol", "snmp", choices=tuple(sorted(REGISTRY)) or ("snmp",))
        spec = REGISTRY.get(protocol)
        if spec is None:
            raise d.error("protocol", f"no poller for {protocol!r} is installed")
        name = d.str("name")
        if name in names:
            raise d.error("name", f"duplicate device name {name!r}")
        names.add(name)
        dev_site = d.str("site", site)
        if not is_name(dev_site):
            raise d.error("site", f"must match {NAME_PATTERN}")
        devices.append(Device(
            name=name,
            address=d.str("address"),
            port=d.int("port", spec.default_port, lo=1, hi=65535),
            protocol=protocol,
            interval_s=d.float("interval_s", 60.0, lo=1, hi=86400),
            tenant=tenant,
            site=dev_site,
            options=spec.parse_options(d.section(protocol), pollers),
        ))
        d.done()

    extra = {}
    for name in ("privacy", "spool", "traps", "syslog"):
        if name in root:
            extra[name] = root.raw(name)
    root.done()
    spool = SpoolConfig.parse(Section(extra.get("spool", {}), file, "spool"), base=base)
    privacy = PrivacyPolicy.from_section(Section(extra.get("privacy", {}), file, "privacy"))
    # trap credentials resolve here, where the credential store is known
    traps = None if "traps" not in extra else parse_trap_config(
        Section(extra["traps"], file, "traps"),
        ConfigSecrets(pollers.credentials_file, pollers.credentials_key_file))
    syslog = None if "syslog" not in extra else parse_syslog_config(
        Section(extra["syslog"], file, "syslog"), base=base)
    return AgentConfig(
        file=file, agent_id=agent_id, tenant=tenant, site=site,
        state_dir=state_dir,  # type: ignore[arg-type]
        keys=keys, mqtt=mqtt, devices=tuple(devices), pollers=pollers,
        batch_max_records=batch_max_records, batch_max_age_s=batch_max_age_s,
        max_concurrent_polls=max_conc, suite=suite, metrics_listen=metrics_listen,
        residency=residency,
        heartbeat_interval_s=heartbeat_interval_s,
        spool=spool, privacy=privacy, traps=traps, syslog=syslog,
    )


def _poller_context(root: Section, base: Path, state_dir: Path) -> PollerContext:
    """The optional `[credentials]`, `[ssh]` and `[snmp]` tables: where pollers find
    what is not per device. Left out, each falls back as `PollerContext` says."""
    c = root.section("credentials")
    if "key" in c:
        raise c.error("key", "a key must not sit in the config file; put it in a file "
                      "of its own (mode 0600) and name it with key_file")
    cred_file = _path(base, c.str("file", None))
    key_file = _path(base, c.str("key_file", None))
    c.done()
    if key_file is not None and cred_file is None:
        raise c.error("key_file", "is set but file is not; name the credentials file too")
    if key_file is not None and key_file == cred_file:
        raise c.error("key_file", "must not be the credentials file itself: the key is "
                      "kept apart from what it protects")

    s = root.section("ssh")
    known_hosts = _path(base, s.str("known_hosts", None))
    max_concurrent = s.int("max_concurrent", 16, lo=1, hi=1024)
    s.done()

    n = root.section("snmp")
    dirs = []
    for i, d in enumerate(n.str_list("profile_dirs", [])):
        p = _path(base, d)
        if not d or p is None or not p.is_dir():
            raise ConfigError(n.file, f"{n.key('profile_dirs')}[{i}]",
                              f"{d!r} is not a directory")
        dirs.append(p)
    n.done()
    return PollerContext(state_dir=state_dir, credentials_file=cred_file,
                         credentials_key_file=key_file, ssh_known_hosts=known_hosts,
                         ssh_max_concurrent=max_concurrent, snmp_profile_dirs=tuple(dirs))
