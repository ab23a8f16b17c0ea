"""The collector's config file: strict TOML, refused if others can read it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from collector.outputs.remote_write import RemoteWriteConfig
from collector.store.errors import StoreError
from collector.store.registry import resolve_url
from pipelines.config import ConfigError, Section, listen_address, parse_toml, require_private
from pipelines.envelope import MAX_BATCH_BYTES
from pipelines.names import RULE, is_name
from pipelines.record import Kind


@dataclass(frozen=True, slots=True)
class AgentEntry:
    """A known agent: the only publishers whose batches are accepted."""

    agent_id: str
    tenant: str
    public_key: Path
    sites: frozenset[str] | None = None  # None: any site (say which in production)
    kinds: frozenset[str] | None = None  # None: every record kind

    def allows(self, site: str, kind: str) -> bool:
        """What the collector decides itself: an agent reports only its own sites and kinds."""
        return ((self.sites is None or site in self.sites)
                and (self.kinds is None or kind in self.kinds))


REGION_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")
DEFAULT_MAX_SEQUENCE_JUMP = 1_000_000


@dataclass(frozen=True, slots=True)
class TenantEntry:
    """What the collector knows of a tenant from its own config: where its data may
    be processed (`regions`, None when the tenant names none) and its jurisdiction."""

    name: str
    regions: frozenset[str] | None = None
    jurisdiction: str | None = None
    home: str | None = None  # where its data comes from: the origin of a transfer


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`[metrics]`: the NOC exposition. `worker_id` (default: the metrics listen
    address) names this worker in the store's device assignment; it must differ
    between workers and stay the same across restarts."""

    naming: str = "privtel"
    worker_id: str | None = None
    silence_factor: float = 3.0
    default_heartbeat_interval_s: float = 60.0
    worker_lease_s: float = 30.0
    forget_after_days: float = 30.0


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    file: str
    store_url: str
    metrics_listen: tuple[str, int]
    mqtt_url: str
    mqtt_protocol: str
    shared_group: str | None
    client_id: str | None
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    private_keys: tuple[Path, ...]
    agents: tuple[AgentEntry, ...]
    retention_policy: Path | None
    purge_interval_s: float
    max_batch_bytes: int
    replay_window_s: float
    key_passphrase_file: Path | None = None   # unlocks encrypted private_keys (and receipt_key)
    receipt_key: Path | None = None   # Ed25519; None: no end-to-end receipts
    region: str | None = None                 # residency: None enforces nothing
    tenants: Mapping[str, TenantEntry] = field(default_factory=dict)
    max_sequence_jump: int = DEFAULT_MAX_SEQUENCE_JUMP
    audit_key_file: Path | None = None        # HMAC key of the store's audit chain
    safeguards: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def tenant_regions(self) -> dict[str, frozenset[str]]:
        return {t.name: t.regions for t in self.tenants.values() if t.regions is not None}

    def jurisdictions(self) -> dict[str, str]:
        return {t.name: t.jurisdiction for t in self.tenants.values()
                if t.jurisdiction is not None}
    metrics: MetricsConfig = MetricsConfig()
    remote_write: tuple[RemoteWriteConfig, ...] = ()


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def _opt(base: Path, value: str | None) -> Path | None:
    return None if value is None else _resolve(base, value)


def load(path: str | os.PathLike[str]) -> CollectorConfig:
    p = Path(path)
    require_private(str(p), p.stat().st_mode)
    return parse(p.read_text(), str(p), base=p.parent)


def parse(text: str, file: str, base: Path = Path(".")) -> CollectorConfig:
    root = parse_toml(text, file)
    c = root.section("collector", required=True)
    try:
        store_url = resolve_url(c.str("store"), base)
    except StoreError:
        raise c.error("store", "must be sqlite:///PATH or postgresql://...") from None
    metrics_listen = listen_address(c, "metrics_listen", "127.0.0.1:9108")
    retention_policy = _opt(base, c.str("retention_policy", None))
    purge_interval_s = c.float("purge_interval_s", 3600.0, lo=1)
    max_batch_bytes = c.int("max_batch_bytes", MAX_BATCH_BYTES, lo=1024, hi=256 * 1024 * 1024)
    replay_window_s = c.float("replay_window_s", 8 * 86400.0, lo=1)
    region = c.str("region", None)
    if region is not None and not REGION_RE.match(region):
        raise c.error("region", f"must match {REGION_RE.pattern}")
    max_sequence_jump = c.int("max_sequence_jump", DEFAULT_MAX_SEQUENCE_JUMP, lo=1)
    audit_key_file = _opt(base, c.str("audit_key", None))
    c.done()

    x = root.section("metrics")
    metrics = MetricsConfig(
        naming=x.str("naming", "privtel", choices=("privtel", "snmp_exporter")),
        worker_id=x.str("worker_id", None),
        silence_factor=x.float("silence_factor", 3.0, lo=1, hi=1000),
        default_heartbeat_interval_s=x.float("default_heartbeat_interval_s", 60.0, lo=1,
                                             hi=86400),
        worker_lease_s=x.float("worker_lease_s", 30.0, lo=1, hi=3600),
        forget_after_days=x.float("forget_after_days", 30.0, lo=1, hi=3650))
    x.done()

    m = root.section("mqtt")
    mqtt_url = m.str("url", "mqtt://127.0.0.1:1883")
    if not mqtt_url.startswith(("mqtt://", "mqtts://")):
        raise m.error("url", "must start with mqtt:// or mqtts://")
    mqtt_protocol = m.str("protocol", "5", choices=("5", "3.1.1"))
    shared_group = m.str("shared_group", None)
    if shared_group is not None and mqtt_protocol != "5":
        raise m.error("shared_group", "shared subscriptions need MQTT protocol 5")
    client_id = m.str("client_id", None)
    ca_file = _opt(base, m.str("ca_file", None))
    cert_file = _opt(base, m.str("cert_file", None))
    key_file = _opt(base, m.str("key_file", None))
    m.done()

    k = root.section("keys", required=True)
    private_keys = tuple(_resolve(base, v) for v in k.str_list("private_keys"))
    if not private_keys:
        raise k.error("private_keys", "must name at least one collector private key file")
    key_passphrase_file = _opt(base, k.str("passphrase_file", None))
    receipt_key = _opt(base, k.str("receipt_key", None))
    k.done()

    agents = []
    seen: set[str] = set()
    for a in root.sections("agents"):
        agent_id, tenant = a.str("id"), a.str("tenant")
        for what, v in (("id", agent_id), ("tenant", tenant)):
            if not is_name(v):
                raise a.error(what, RULE)
        sites = a.str_list("sites", None)
        if sites is not None and (not sites or not all(is_name(x) for x in sites)):
            raise a.error("sites", f"must list one or more site names that each {RULE}")
        kinds = a.str_list("kinds", None)
        known = {k.value for k in Kind}
        if kinds is not None and (not kinds or not set(kinds) <= known):
            raise a.error("kinds", f"must list record kinds among {', '.join(sorted(known))}")
        entry = AgentEntry(agent_id, tenant, _resolve(base, a.str("public_key")),
                           None if sites is None else frozenset(sites),
                           None if kinds is None else frozenset(kinds))
        if entry.agent_id in seen:
            raise a.error("id", f"duplicate agent id {entry.agent_id!r}")
        seen.add(entry.agent_id)
        agents.append(entry)
        a.done()
    tenants = _tenants(root)
    safeguards = _safeguards(root)
    remote_write = _outputs(root.section("outputs"), base)
    root.done()
    if not agents:
        raise ConfigError(file, "agents", "at least one [[agents]] entry is required")
    return CollectorConfig(
        file=file, store_url=store_url, metrics_listen=metrics_listen, mqtt_url=mqtt_url,
        mqtt_protocol=mqtt_protocol, shared_group=shared_group, client_id=client_id,
        ca_file=ca_file, cert_file=cert_file, key_file=key_file, private_keys=private_keys,
        agents=tuple(agents), retention_policy=retention_policy,
        purge_interval_s=purge_interval_s, max_batch_bytes=max_batch_bytes,
        replay_window_s=replay_window_s, key_passphrase_file=key_passphrase_file,
        region=region, tenants=tenants, max_sequence_jump=max_sequence_jump,
        audit_key_file=audit_key_file, safeguards=safeguards,
        metrics=metrics,
        remote_write=remote_write,
        receipt_key=receipt_key,
    )


def _tenants(root: Section) -> dict[str, TenantEntry]:
    """`[tenants.NAME]` tables, or `[[tenants]]` with `name` (the shape `privtel ropa`
    and `retention check` read too): `regions` and `jurisdiction`, both optional."""
    raw = root.raw("tenants", {})
    if isinstance(raw, dict):
        section = root.section("tenants")
        tables = [(name, section.section(name)) for name in raw]
    elif isinstance(raw, list):
        tables = []
        for t in root.sections("tenants"):
            tables.append((t.str("name"), t))
    else:
        raise root.error("tenants", "must be [tenants.NAME] tables or [[tenants]] entries")
    out: dict[str, TenantEntry] = {}
    for name, t in tables:
        if not is_name(name):
            raise ConfigError(root.file, "tenants", f"tenant name {name!r}: {RULE}")
        if name in out:
            raise t.error("name", f"tenant {name!r} is listed twice")
        regions = t.str_list("regions", None)
        if regions is not None and not all(REGION_RE.match(r) for r in regions):
            raise t.error("regions", f"each region must match {REGION_RE.pattern}")
        jurisdiction = t.str("jurisdiction", None)
        home = t.str("home", None)
        if home is not None and not REGION_RE.match(home):
            raise t.error("home", f"must match {REGION_RE.pattern}")
        t.done()
        out[name] = TenantEntry(name, None if regions is None else frozenset(regions),
                                jurisdiction, home)
    return out


def _safeguards(root: Section) -> dict[tuple[str, str], str]:
    """`[[safeguards]]`: the legal basis (contract clause, adequacy decision) of each
    cross-border flow from one region to another, for the DPO's transfer register."""
    out: dict[tuple[str, str], str] = {}
    for s in root.sections("safeguards"):
        src, dst, basis = s.str("from"), s.str("to"), s.str("basis")
        for what, v in (("from", src), ("to", dst)):
            if not REGION_RE.match(v):
                raise s.error(what, f"must match {REGION_RE.pattern}")
        if not basis.strip():
            raise s.error("basis", "must name the safeguard")
        s.done()
        out[(src, dst)] = basis
    return out


def _outputs(o: Section, base: Path) -> tuple[RemoteWriteConfig, ...]:
    """`[[outputs.remote_write]]` tables; names are unique as they label the metrics."""
    out: list[RemoteWriteConfig] = []
    for i, w in enumerate(o.sections("remote_write")):
        url = w.str("url")
        if not url.startswith(("http://", "https://")):
            raise w.error("url", "must start with http:// or https://")
        name = w.str("name", "remote_write" if i == 0 else f"remote_write_{i}")
        if not is_name(name) or name in {c.name for c in out}:
            raise w.error("name", f"must be unique among outputs and {RULE}")
        headers = w.raw("headers", {})
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise w.error("headers", "must be a table of strings")
        if any(k.lower() == "authorization" for k in headers):
            raise w.error("headers", "put credentials in bearer_token_file, not in the config")
        per_send = w.int("max_samples_per_send", 2000, lo=1, hi=100_000)
        cfg = RemoteWriteConfig(
            url=url, name=name, timeout_s=w.float("timeout_s", 10.0, lo=0.1, hi=300),
            max_samples_per_send=per_send,
            batch_send_deadline_s=w.float("batch_send_deadline_s", 0.2, lo=0.0, hi=60),
            queue_size=w.int("queue_size", 200_000, lo=per_send, hi=50_000_000),
            max_retries=w.int("max_retries", 10, lo=0, hi=1000),
            shards=w.int("shards", 4, lo=1, hi=64),
            backoff_max_s=w.float("backoff_max_s", 5.0, lo=0.1, hi=600),
            headers=dict(headers), bearer_token_file=_opt(base, w.str("bearer_token_file", None)),
            ca_file=_opt(base, w.str("ca_file", None)),
            cert_file=_opt(base, w.str("cert_file", None)),
            key_file=_opt(base, w.str("key_file", None)))
        if url.startswith("http://") and (cfg.bearer_token_file or cfg.cert_file):
            raise w.error("url", "credentials and client certificates need https://")
        w.done()
        out.append(cfg)
    o.done()
    return tuple(out)
