"""The collector's config file: strict TOML, refused if others can read it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from collector.store.errors import StoreError
from collector.store.registry import resolve_url
from pipelines.config import ConfigError, listen_address, parse_toml, require_private
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
    c.done()

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
        receipt_key=receipt_key,
    )
