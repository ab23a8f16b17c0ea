"""Retention policy: which class, legal basis and expiry each record gets.

A policy maps (record kind, tenant, jurisdiction, service) patterns to named
classes; the service is the contract a record is collected under
(managed_network, security_monitoring, dispatch_support), because the
provider's retention periods differ by service as well as by jurisdiction.
The most specific matching rule wins (a named value beats "*"). Validation
refuses a policy where two equally specific rules could both match one record
and disagree, because then the stored expiry would depend on rule order, which
nobody reviewing the file can see. Anything no rule matches falls to the most
restrictive class and is counted, so a missing rule shortens retention rather
than silently extending it.

    version = 1
    strict = false                # true: gaps are errors, not warnings
    default_class = "unclassified"  # optional; must be (one of) the shortest

    [classes.metrics]
    days = 395
    legal_basis = "legitimate interest: network operations (GDPR 6(1)(f))"
    purpose = "capacity planning"   # optional; shown in the record of processing
    [classes.inventory]
    until = "contract_end"        # no fixed expiry; removed at offboarding
    legal_basis = "contract (GDPR 6(1)(b))"

    [[rules]]
    kind = ["metric", "health"]   # a kind, a list of kinds, or "*"
    tenant = "*"                  # likewise
    jurisdiction = "*"            # likewise
    service = "*"                 # likewise; one of SERVICES
    class = "metrics"
    legal_basis = "..."           # optional, overrides the class's

    [tenants.acme]
    jurisdiction = "eu"
    service = "managed_network"   # optional: the tenant's contract
    sites = { soc1 = "security_monitoring" }   # optional: per-site service

    [operational.audit_log]       # records about records: see OPERATIONAL
    days = 2190
    legal_basis = "..."

A record's service is looked up from its tenant and site here (`service_for`),
so the lookup stays a pure function of the policy in force.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations, product
from typing import NamedTuple

from pipelines.config import ConfigError, Section, parse_toml
from pipelines.names import NAME_RE, is_name
from pipelines.names import PATTERN as NAME_PATTERN
from pipelines.record import Kind, Record

ANY = "*"
DAY = 86400.0
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_JUR_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")
_KINDS = tuple(k.value for k in Kind)
SERVICES = ("managed_network", "security_monitoring", "dispatch_support")
OPERATIONAL = ("audit_log", "parked_batches", "quarantined_batches", "dsr_records",
               "agent_quarantine")
"""What the purge service keeps besides telemetry records, each with its own period."""
_CACHE_MAX = 65536
_MISS = object()


class Tag(NamedTuple):
    retention_class: str
    legal_basis: str
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class RetentionClass:
    name: str
    days: float | None
    legal_basis: str
    purpose: str = ""

    @property
    def seconds(self) -> float | None:
        return None if self.days is None else self.days * DAY


@dataclass(frozen=True, slots=True)
class Rule:
    where: str
    kind: str
    tenant: str
    jurisdiction: str
    klass: str
    legal_basis: str
    service: str = ANY

    @property
    def pattern(self) -> tuple[str, str, str, str]:
        return self.kind, self.tenant, self.jurisdiction, self.service

    @property
    def specificity(self) -> int:
        return sum(v != ANY for v in self.pattern)

    def matches(self, kind: str, tenant: str, jurisdiction: str | None,
                service: str | None = None) -> bool:
        return (self.kind in (ANY, kind) and self.tenant in (ANY, tenant)
                and (self.jurisdiction == ANY or self.jurisdiction == jurisdiction)
                and (self.service == ANY or self.service == service))

    def describe(self) -> str:
        return _describe(self.pattern)


def _describe(pattern: tuple[str, ...]) -> str:
    """Service is named only when set, so policies without services read as before."""
    return " ".join(f"{n}={v}" for n, v in zip(_DIMS, pattern, strict=True)
                    if n != "service" or v != ANY)


_DIMS = ("kind", "tenant", "jurisdiction", "service")


@dataclass(frozen=True, slots=True)
class TenantScope:
    """Where a tenant's records fall: its jurisdiction, its contract's service, and
    sites that run under another service than the tenant's."""

    jurisdiction: str
    service: str | None = None
    sites: tuple[tuple[str, str], ...] = ()

    def service_for(self, site: str | None) -> str | None:
        for name, svc in self.sites:
            if name == site:
                return svc
        return self.service


class Policy:
    """A validated policy. `tag` is the hot path (cached per kind/tenant/jurisdiction/
    service); `unmatched` counts, per kind, the records that fell to the default class.
    `tenants` maps a tenant to its jurisdiction (kept a plain mapping for callers
    that predate services); `scopes` has the whole `TenantScope`."""

    def __init__(self, file: str, classes: dict[str, RetentionClass], rules: list[Rule],
                 default: RetentionClass, tenants: dict[str, str], gaps: list[str], *,
                 scopes: dict[str, TenantScope] | None = None,
                 operational: dict[str, RetentionClass] | None = None) -> None:
        self.file, self.classes, self.rules = file, classes, rules
        self.default, self.tenants, self.gaps = default, tenants, gaps
        self.scopes = scopes if scopes is not None else {
            t: TenantScope(j) for t, j in tenants.items()}
        self.operational = operational or {}
        self.unmatched: Counter[str] = Counter()
        self._cache: dict[tuple[str, str, str | None, str | None], object] = {}

    def jurisdiction_for(self, tenant: str) -> str | None:
        return self.tenants.get(tenant)

    def service_for(self, tenant: str, site: str | None = None) -> str | None:
        """The service a tenant's record (from `site`) is collected under, or None
        when the policy does not say: then only service = "*" rules match it."""
        scope = self.scopes.get(tenant)
        return None if scope is None else scope.service_for(site)

    def jurisdictions(self) -> set[str]:
        """Jurisdictions some rule names: the ones this policy has an answer for."""
        return {r.jurisdiction for r in self.rules if r.jurisdiction != ANY}

    def resolve(self, kind: str, tenant: str, jurisdiction: str | None,
                service: str | None = None) -> Rule | None:
        best: Rule | None = None
        for rule in self.rules:
            if rule.matches(kind, tenant, jurisdiction, service) and (
                    best is None or rule.specificity > best.specificity):
                best = rule
        return best

    def tag(self, record: Record, jurisdiction: str | None = None, *,
            service: str | None = None, now: float | None = None) -> Tag:
        """Expiry counts from the record's time, but never from a future one, so an
        agent with a fast clock cannot stretch retention."""
        jur = jurisdiction if jurisdiction is not None else self.tenants.get(record.tenant)
        svc = service if service is not None else self.service_for(record.tenant, record.site)
        # Kind is a StrEnum: it hashes and compares as its value, so it keys the
        # cache without the cost of `.value` on every record.
        key = (record.kind, record.tenant, jur, svc)
        hit = self._cache.get(key, _MISS)
        if hit is _MISS:
            rule = self.resolve(record.kind.value, record.tenant, jur, svc)
            if rule is None:
                hit = None
            else:
                klass = self.classes[rule.klass]
                hit = (klass.name, rule.legal_basis, klass.seconds)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = hit
        if hit is None:
            self.unmatched[record.kind.value] += 1
            name, basis, seconds = self.default.name, self.default.legal_basis, self.default.seconds
        else:
            name, basis, seconds = hit  # type: ignore[misc]
        if seconds is None:
            return Tag(name, basis, None)
        if now is None:
            now = time.time()
        ts = record.ts
        return Tag(name, basis, (ts if ts < now else now) + seconds)


def _values(s: Section, name: str, pattern: re.Pattern[str], what: str,
            choices: tuple[str, ...] = ()) -> list[str]:
    raw = s.raw(name, ANY)
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise s.error(name, f"must be {what}, a non-empty list of them, or \"*\"")
    for x in items:
        if x == ANY:
            if len(items) > 1:
                raise s.error(name, "\"*\" cannot be combined with other values")
            continue
        if choices and x not in choices:
            raise s.error(name, f"{x!r} is not {what}; {what.split()[-1]}s: "
                          f"{', '.join(choices)}")
        if not pattern.match(x):
            raise s.error(name, f"{x!r} is not a valid {what}")
    if len(set(items)) != len(items):
        raise s.error(name, "lists a value twice")
    return items


def _intersection(a: Rule, b: Rule) -> tuple[str, ...] | None:
    out = []
    for x, y in zip(a.pattern, b.pattern, strict=True):
        if x != ANY and y != ANY and x != y:
            return None
        out.append(y if x == ANY else x)
    return tuple(out)


def _check_overlaps(file: str, rules: list[Rule]) -> None:
    patterns = {r.pattern for r in rules}
    for a, b in combinations(rules, 2):
        if a.pattern == b.pattern:
            raise ConfigError(file, b.where, f"overlaps {a.where}: both cover {a.describe()}; "
                              "keep one rule per combination")
        if a.specificity != b.specificity or (a.klass, a.legal_basis) == (b.klass, b.legal_basis):
            continue
        meet = _intersection(a, b)
        if meet is not None and meet not in patterns:
            raise ConfigError(
                file, b.where,
                f"overlaps {a.where}: a record with {_describe(meet)} "
                f"matches both, which are equally specific and give {a.klass!r} and "
                f"{b.klass!r}; add a rule for exactly that combination to decide")


def _find_gaps(policy: Policy) -> list[str]:
    gaps = []
    scopes: list[tuple[str, TenantScope | None, str]] = [(ANY, None, "every tenant")]
    for t, ts in sorted(policy.scopes.items()):
        services = sorted({ts.service_for(None)} | {v for _, v in ts.sites}, key=str)
        scopes += [(t, TenantScope(ts.jurisdiction, svc),
                    f"tenant {t} (jurisdiction {ts.jurisdiction}"
                    + (f", service {svc})" if svc else ")")) for svc in services]
    for (tenant, sc, label), kind in product(scopes, _KINDS):
        rule = (policy.resolve(kind, tenant, sc.jurisdiction, sc.service) if sc is not None
                else next((r for r in policy.rules if r.kind in (ANY, kind) and r.tenant == ANY
                           and r.jurisdiction == ANY and r.service == ANY), None))
        if rule is None:
            gaps.append(f"no rule covers kind={kind} for {label}; those records get "
                        f"the default class {policy.default.name!r}")
    return gaps


def _klass(c: Section, name: str, days: float | None) -> RetentionClass:
    basis = c.str("legal_basis")
    if not basis.strip():
        raise c.error("legal_basis", "must not be empty")
    purpose = c.str("purpose", "")
    c.done()
    return RetentionClass(name, days, basis, purpose)


def _scope(t: Section) -> TenantScope:
    jur = t.str("jurisdiction")
    if not _JUR_RE.match(jur):
        raise t.error("jurisdiction", f"{jur!r} must match [a-z][a-z0-9_-]{{0,31}}")
    service = t.str("service", None, choices=SERVICES)
    raw = t.raw("sites", {})
    if not isinstance(raw, dict) or not all(
            isinstance(v, str) and v in SERVICES for v in raw.values()):
        raise t.error("sites", f"must map site names to a service: {', '.join(SERVICES)}")
    t.done()
    return TenantScope(jur, service, tuple(sorted(raw.items())))


def _tables(s: Section, name: str) -> Iterator[tuple[str, Section]]:
    raw = s.raw(name, {})
    if not isinstance(raw, dict):
        raise s.error(name, f"must be a table, not {type(raw).__name__}")
    for key, value in raw.items():
        if not isinstance(value, dict):
            raise s.error(f"{name}.{key}", f"must be a table, not {type(value).__name__}")
        yield key, Section(value, s.file, s.key(f"{name}.{key}"))


def from_section(s: Section) -> Policy:
    """Build and validate a policy; every error names the file, the key and why."""
    s.int("version", 1, lo=1, hi=1)
    strict = s.bool("strict", False)
    classes: dict[str, RetentionClass] = {}
    for name, c in _tables(s, "classes"):
        if not _NAME_RE.match(name):
            raise s.error(f"classes.{name}", "class names must match [a-z][a-z0-9_]{0,31}")
        until = c.str("until", None, choices=("contract_end",))
        days = c.float("days", None, lo=0.01, hi=36500)
        if (until is None) == (days is None):
            raise c.error("days", "give exactly one of days = N or until = \"contract_end\"")
        classes[name] = _klass(c, name, days)
    if not classes:
        raise s.error("classes", "define at least one retention class")

    operational: dict[str, RetentionClass] = {}
    for name, c in _tables(s, "operational"):
        if name not in OPERATIONAL:
            raise s.error(f"operational.{name}",
                          f"unknown; operational retention covers {', '.join(OPERATIONAL)}")
        operational[name] = _klass(c, name, c.float("days", lo=0.01, hi=36500))

    scopes: dict[str, TenantScope] = {}
    for tenant, t in _tables(s, "tenants"):
        if not is_name(tenant):
            raise s.error(f"tenants.{tenant}", f"tenant names must match {NAME_PATTERN}")
        scopes[tenant] = _scope(t)
    tenants = {t: sc.jurisdiction for t, sc in scopes.items()}

    rules: list[Rule] = []
    for i, r in enumerate(s.sections("rules")):
        kinds = _values(r, "kind", _NAME_RE, "a record kind", _KINDS)
        tens = _values(r, "tenant", NAME_RE, "a tenant")
        jurs = _values(r, "jurisdiction", _JUR_RE, "a jurisdiction")
        svcs = _values(r, "service", _NAME_RE, "a service", SERVICES)
        klass = r.str("class")
        if klass not in classes:
            raise r.error("class", f"unknown class {klass!r}; classes: {', '.join(classes)}")
        basis = r.str("legal_basis", classes[klass].legal_basis)
        if not basis.strip():
            raise r.error("legal_basis", "must not be empty")
        r.done()
        where = f"rules[{i}]"
        rules += [Rule(where, k, t, j, klass, basis, v)
                  for k, t, j, v in product(kinds, tens, jurs, svcs)]
    _check_overlaps(s.file, rules)

    shortest = min(classes.values(), key=lambda c: float("inf") if c.days is None else c.days)
    name = s.str("default_class", None)
    if name is None:
        default = shortest
    elif name not in classes:
        raise s.error("default_class", f"unknown class {name!r}; classes: {', '.join(classes)}")
    else:
        default = classes[name]
        if default.days is None or (shortest.days is not None and default.days > shortest.days):
            raise s.error("default_class", f"{name!r} keeps records longer than {shortest.name!r};"
                          " the default must be the most restrictive class")
    if default.days is None:
        raise s.error("classes", "the default (shortest) class needs a fixed period in days")
    s.done()
    policy = Policy(s.file, classes, rules, default, tenants, [], scopes=scopes,
                    operational=operational)
    policy.gaps = _find_gaps(policy)
    if strict and policy.gaps:
        raise ConfigError(s.file, "rules", f"strict policy has gaps: {policy.gaps[0]}"
                          + (f" (and {len(policy.gaps) - 1} more)" if len(policy.gaps) > 1 else ""))
    return policy


def parse_policy(text: str, file: str = "<retention policy>") -> Policy:
    return from_section(parse_toml(text, file))


DEFAULT_POLICY_TOML = """\
version = 1
default_class = "unclassified"

[classes.metrics]
days = 395
legal_basis = "legitimate interest: operating the managed network (GDPR 6(1)(f))"

[classes.security_events]
days = 365
legal_basis = "legitimate interest: network and information security (GDPR 6(1)(f), recital 49)"

[classes.logs]
days = 90
legal_basis = "legitimate interest: troubleshooting (GDPR 6(1)(f))"

[classes.inventory]
until = "contract_end"
legal_basis = "contract: the managed-network service agreement (GDPR 6(1)(b))"

[classes.unclassified]
days = 30
legal_basis = "legitimate interest, minimal default for data without a rule (GDPR 5(1)(e))"

[[rules]]
kind = ["metric", "health"]
class = "metrics"

[[rules]]
kind = "event"
class = "security_events"

[[rules]]
kind = "log"
class = "logs"

[[rules]]
kind = "inventory"
class = "inventory"
"""


def default_policy() -> Policy:
    return parse_policy(DEFAULT_POLICY_TOML, "<built-in default policy>")
