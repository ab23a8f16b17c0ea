"""`privtel ropa`: the record of processing (GDPR Art. 30 style) for one tenant, read off
the configuration and retention policy actually in force rather than written by hand,
so the register cannot drift from what the collector does. What the configuration does
not say is printed as "not configured", never guessed.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

import orjson

from collector import config as collector_config
from collector.auth import MATRIX, NEEDS_TOTP
from pipelines.pseudonym import PrivacyPolicy
from pipelines.record import Kind
from pipelines.retention import OPERATIONAL, Policy, default_policy, parse_policy
from privtel.commands.transfers import flows

NOT_CONFIGURED = "not configured"

# What each record kind carries, and which of its fields can identify a person
# (by the pseudonymiser's field classes): the "categories of personal data".
CATEGORIES: dict[str, tuple[str, tuple[str, ...]]] = {
    Kind.METRIC.value: ("interface and host counters of the client's devices (traffic, "
                        "errors, CPU, memory)", ("identifier",)),
    Kind.HEALTH.value: ("whether each device answered a poll, and why not", ("identifier",)),
    Kind.EVENT.value: ("SNMP traps and security events: sender, varbinds", ("ip", "text")),
    Kind.LOG.value: ("device and syslog lines, which may name addresses, MACs, logins, host "
                     "names, e-mail addresses and phone numbers", ("ip", "mac", "identifier",
                                                                   "text")),
    Kind.INVENTORY.value: ("device description, model, serial, software version, contact "
                           "and location", ("identifier", "text", "geo")),
}
SUBJECTS = ("the client's staff and end users whose addresses, logins, devices or contact "
            "details appear in network telemetry")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("ropa", help="print the record of processing for a tenant from "
                              "the live configuration and retention policy")
    p.add_argument("--tenant", required=True)
    p.add_argument("--collector-config", required=True, type=Path, metavar="FILE")
    p.add_argument("--policy", type=Path, metavar="FILE",
                   help="retention policy (default: the collector config's, else built-in)")
    p.add_argument("--agent-config", type=Path, action="append", default=[], metavar="FILE",
                   help="an agent config of the tenant, for its pseudonymisation settings "
                   "(repeatable; default: the built-in pseudonymisation defaults)")
    p.add_argument("--format", choices=("md", "json"), default="md")
    p.set_defaults(func=ropa_cmd)


def _raw(path: Path) -> dict[str, Any]:
    """The config as plain TOML, for tables newer than the strict loader knows about."""
    return tomllib.loads(path.read_text("utf-8"))


def _tenant_table(raw: dict[str, Any], tenant: str) -> dict[str, Any]:
    t = raw.get("tenants", {})
    if isinstance(t, dict):
        found = t.get(tenant)
        return found if isinstance(found, dict) else {}
    if isinstance(t, list):
        for entry in t:
            if isinstance(entry, dict) and tenant in (entry.get("name"), entry.get("tenant")):
                return entry
    return {}


def _period(days: float | None) -> str:
    return "until contract end" if days is None else f"{days:g} days"


def _key_state(paths: tuple[Path, ...]) -> str:
    """Whether the collector's private key files are encrypted PKCS#8, read off the files."""
    states = set()
    for p in paths:
        try:
            head = p.read_bytes()[:64]
        except OSError:
            states.add("unknown (file not readable here)")
            continue
        states.add("encrypted PKCS#8" if b"ENCRYPTED PRIVATE KEY" in head
                   else "not encrypted (file mode 0600 only)")
    return "; ".join(sorted(states))


def _sqlite_state(path: Path) -> str:
    try:
        mode = f"mode {path.stat().st_mode & 0o777:04o}"
    except OSError:
        mode = "file not present here"
    return f"SQLite file ({mode}), not encrypted by privtel"


def _privacy(agent_configs: list[Path]) -> dict[str, str]:
    from agents import config as agent_config

    if not agent_configs:
        return dict(PrivacyPolicy().modes)
    modes: dict[str, set[str]] = {}
    for path in agent_configs:
        cfg = agent_config.load(path)
        for cls, mode in cfg.privacy.modes.items():
            modes.setdefault(cls, set()).add(mode)
    return {cls: ", ".join(sorted(m)) for cls, m in sorted(modes.items())}


def build(tenant: str, cfg: collector_config.CollectorConfig, raw: dict[str, Any],
          policy: Policy, policy_file: str, privacy: dict[str, str]) -> dict[str, Any]:
    """The record as data; `render_md` and JSON both print exactly this."""
    scope = policy.scopes.get(tenant)
    t_raw = _tenant_table(raw, tenant)
    jurisdiction = (t_raw.get("jurisdiction") or policy.jurisdiction_for(tenant)
                    or NOT_CONFIGURED)
    services = sorted({s for s in ([scope.service] if scope else []) + [
        v for _, v in (scope.sites if scope else ())] if s})
    jur = None if jurisdiction == NOT_CONFIGURED else jurisdiction
    processing = []
    each_service: list[str | None] = [*services] or [None]
    for kind in (k.value for k in Kind):
        for svc in each_service:
            rule = policy.resolve(kind, tenant, jur, svc)
            klass = policy.classes[rule.klass] if rule else policy.default
            processing.append({
                "kind": kind, "service": svc or NOT_CONFIGURED, "class": klass.name,
                "purpose": klass.purpose or NOT_CONFIGURED,
                "legal_basis": rule.legal_basis if rule else klass.legal_basis,
                "retention": _period(klass.days)})
    region = cfg.region
    entry = cfg.tenants.get(tenant)
    allowed = sorted(entry.regions) if entry is not None and entry.regions else None
    transfers = [f for f in flows(Path(cfg.file), []) if f["tenant"] == tenant]
    recipients = [{"recipient": "provider NOC (Prometheus exposition)",
                   "where": f"{cfg.metrics_listen[0]}:{cfg.metrics_listen[1]}",
                   "data": "device metrics and health, by device pseudonym"},
                  {"recipient": "query/DSR API users by role",
                   "where": "privtel api serve",
                   "data": "; ".join(f"{role}: {', '.join(sorted(a.value for a in acts))}"
                                     for role, acts in MATRIX.items())}]
    recipients += [{"recipient": f"output {o.name}", "where": f"remote_write {o.url}",
                    "data": "device metrics after commit, by device pseudonym"}
                   for o in cfg.remote_write]
    tls = cfg.mqtt_url.startswith("mqtts://")
    store = "postgresql" if cfg.store_url.startswith(("postgresql://", "postgres://")) \
        else "sqlite"
    return {
        "tenant": tenant,
        "sources": {"collector_config": cfg.file, "policy": policy_file},
        "agents": sorted(a.agent_id for a in cfg.agents if a.tenant == tenant),
        "jurisdiction": jurisdiction,
        "services": services or [NOT_CONFIGURED],
        "data_subjects": SUBJECTS,
        "categories": [{"kind": k, "data": d, "personal_data_classes": list(c)}
                       for k, (d, c) in CATEGORIES.items()],
        "processing": processing,
        "retention": {
            "classes": {c.name: {"period": _period(c.days), "legal_basis": c.legal_basis,
                                 "purpose": c.purpose or NOT_CONFIGURED}
                        for c in policy.classes.values()},
            "operational": {n: ({"period": _period(o.days), "legal_basis": o.legal_basis}
                                if (o := policy.operational.get(n)) else NOT_CONFIGURED)
                            for n in OPERATIONAL},
        },
        "regions": {"collector": region or NOT_CONFIGURED,
                    "tenant_allowed": allowed if allowed else NOT_CONFIGURED},
        "transfers": transfers or NOT_CONFIGURED,
        "recipients": recipients,
        "security": {
            "in_transit": ("MQTT over TLS" + (" with client certificates" if cfg.cert_file
                                              else "") if tls else "MQTT without TLS")
            + "; every batch HPKE-encrypted to the collector and Ed25519-signed by the agent",
            "at_rest": f"store {store}: " + (
                _sqlite_state(Path(cfg.store_url[len("sqlite:///"):])) if store == "sqlite"
                else "PostgreSQL; encryption at rest is the database server's, not verified "
                "by privtel"),
            "collector_private_keys": _key_state(cfg.private_keys),
            "mfa_actions": sorted(a.value for a in NEEDS_TOTP),
            "roles": sorted(MATRIX),
            "pseudonymisation": privacy,
            "audit": "hash-chained audit log in the store",
        },
    }


def render_md(r: dict[str, Any]) -> str:
    out = [f"# Record of processing: tenant {r['tenant']}", "",
           f"Generated from {r['sources']['collector_config']} and {r['sources']['policy']}.",
           "", f"- Jurisdiction: {r['jurisdiction']}",
           f"- Services: {', '.join(r['services'])}",
           f"- Agents: {', '.join(r['agents']) or 'none'}",
           f"- Data subjects: {r['data_subjects']}", "", "## Categories of data", "",
           "| kind | data | personal data classes |", "| --- | --- | --- |"]
    out += [f"| {c['kind']} | {c['data']} | {', '.join(c['personal_data_classes'])} |"
            for c in r["categories"]]
    out += ["", "## Purposes, legal bases and retention", "",
            "| kind | service | class | purpose | legal basis | retention |",
            "| --- | --- | --- | --- | --- | --- |"]
    out += [f"| {p['kind']} | {p['service']} | {p['class']} | {p['purpose']} | "
            f"{p['legal_basis']} | {p['retention']} |" for p in r["processing"]]
    out += ["", "## Retention per class", "", "| class | period | legal basis |",
            "| --- | --- | --- |"]
    out += [f"| {n} | {c['period']} | {c['legal_basis']} |"
            for n, c in r["retention"]["classes"].items()]
    for n, o in r["retention"]["operational"].items():
        out.append(f"| {n} | {o['period']} | {o['legal_basis']} |" if isinstance(o, dict)
                   else f"| {n} | {o} | |")
    regions = r["regions"]
    allowed = regions["tenant_allowed"]
    out += ["", "## Regions and transfers", "", f"- Collector region: {regions['collector']}",
            "- Tenant's allowed regions: "
            + (", ".join(allowed) if isinstance(allowed, list) else str(allowed))]
    transfers = r["transfers"]
    out += ([f"- Transfer: {orjson.dumps(t).decode()}" for t in transfers]
            if isinstance(transfers, list) else [f"- Transfers: {transfers}"])
    out += ["", "## Recipients", ""]
    out += [f"- {x['recipient']} ({x['where']}): {x['data']}" for x in r["recipients"]]
    s = r["security"]
    out += ["", "## Security measures", "", f"- In transit: {s['in_transit']}",
            f"- At rest: {s['at_rest']}",
            f"- Collector private keys: {s['collector_private_keys']}",
            f"- Second factor (TOTP) required for: {', '.join(s['mfa_actions'])}",
            f"- Roles: {', '.join(s['roles'])}", f"- Audit: {s['audit']}",
            "- Pseudonymisation: " + "; ".join(f"{k} {v}" for k, v in
                                                s["pseudonymisation"].items())]
    return "\n".join(out) + "\n"


def ropa_cmd(args: argparse.Namespace) -> int:
    cfg = collector_config.load(args.collector_config)
    raw = _raw(args.collector_config)
    policy_path = args.policy or cfg.retention_policy
    policy = (default_policy() if policy_path is None
              else parse_policy(Path(policy_path).read_text("utf-8"), str(policy_path)))
    known = {a.tenant for a in cfg.agents} | set(policy.tenants)
    if args.tenant not in known:
        raise ValueError(f"tenant {args.tenant!r} is in neither {cfg.file} nor the policy")
    record = build(args.tenant, cfg, raw, policy,
                   str(policy_path) if policy_path else "<built-in default policy>",
                   _privacy(args.agent_config))
    if args.format == "json":
        print(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_md(record), end="")
    return 0

