"""Retention by service type and jurisdiction: the shipped policies, resolved for
every jurisdiction x service x kind, and `privtel retention check` coverage."""

from __future__ import annotations

import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest

from collector.retention import RetentionService
from pipelines.config import ConfigError
from pipelines.record import Kind, Record
from pipelines.retention import DAY, OPERATIONAL, SERVICES, parse_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("retention*.toml"))
MULTI = ROOT / "deploy" / "examples" / "retention-jurisdictions.toml"
LAW = {"ng": "NDPA 2023", "za": "POPIA", "ke": "Kenya DPA 2019", "gh": "Act 843",
       "eu": "(GDPR", "uk": "UK GDPR"}


def _load(path: Path):
    return parse_policy(path.read_text("utf-8"), str(path))


def _expected(service: str | None, kind: str) -> str:
    """The multi-jurisdiction policy's intent, written out independently of the file."""
    if kind in ("metric", "health"):
        return "metrics"
    if kind == "inventory":
        return "inventory"
    if service == "dispatch_support":
        return "dispatch"
    if kind == "log":
        return "security_logs" if service == "security_monitoring" else "logs"
    return "security_events"


def rec(kind: Kind, tenant: str, site: str = "hq") -> Record:
    return Record(kind=kind, tenant=tenant, site=site, device="d1", name="x",
                  fields={"v": 1}, ts=1_700_000_000.0)


def test_every_shipped_policy_is_found():
    assert MULTI in EXAMPLES and len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_shipped_policy_resolves_every_jurisdiction_service_and_kind(path):
    policy = _load(path)
    assert policy.gaps == []
    jurisdictions = policy.jurisdictions()
    assert set(policy.tenants.values()) <= jurisdictions
    for jur, service, kind in product(sorted(jurisdictions), (*SERVICES, None),
                                      [k.value for k in Kind]):
        rule = policy.resolve(kind, "some-tenant", jur, service)
        assert rule is not None, (jur, service, kind)
        assert rule.legal_basis.strip(), (jur, service, kind)
        assert rule.klass in policy.classes


def test_multi_jurisdiction_policy_gives_each_combination_its_class_and_law():
    policy = _load(MULTI)
    assert policy.jurisdictions() == set(LAW)
    for jur, service, kind in product(sorted(LAW), (*SERVICES, None), [k.value for k in Kind]):
        rule = policy.resolve(kind, "some-tenant", jur, service)
        assert rule is not None
        assert rule.jurisdiction == jur, (jur, service, kind)
        assert rule.klass == _expected(service, kind), (jur, service, kind)
        assert LAW[jur] in rule.legal_basis, (jur, service, kind, rule.legal_basis)
    # a jurisdiction the policy does not name gets the shortest class, not a longer one
    stray = policy.resolve("log", "t", "zz", "security_monitoring")
    assert stray is not None and stray.klass == policy.default.name
    assert set(policy.operational) == set(OPERATIONAL)
    for o in policy.operational.values():
        assert o.days and o.legal_basis.strip()


def test_service_comes_from_tenant_and_site():
    policy = _load(MULTI)
    assert policy.service_for("lagos-telco") == "managed_network"
    assert policy.service_for("lagos-telco", "soc") == "security_monitoring"
    assert policy.service_for("lagos-telco", "dispatch") == "dispatch_support"
    assert policy.service_for("nobody") is None
    now = 1_800_000_000.0
    soc = policy.tag(rec(Kind.LOG, "lagos-telco", "soc"), now=now)
    hq = policy.tag(rec(Kind.LOG, "lagos-telco", "hq"), now=now)
    assert soc.retention_class == "security_logs" and "NDPA 2023" in soc.legal_basis
    assert soc.expires_at == pytest.approx(1_700_000_000.0 + 180 * DAY)
    assert hq.retention_class == "logs"
    # an explicit service argument wins over the lookup
    forced = policy.tag(rec(Kind.LOG, "lagos-telco", "hq"), service="dispatch_support", now=now)
    assert forced.retention_class == "dispatch"


def test_collector_tagging_splits_a_run_by_site(tmp_path):
    svc = RetentionService(None, policy_path=MULTI)
    out = svc.tag([rec(Kind.LOG, "lagos-telco", "hq"), rec(Kind.LOG, "lagos-telco", "soc"),
                   rec(Kind.LOG, "lagos-telco", "dispatch"), rec(Kind.LOG, "cape-retail")],
                  now=1_800_000_000.0)
    assert [t.retention_class for t in out] == ["logs", "security_logs", "dispatch",
                                               "security_logs"]
    assert "POPIA" in out[3].legal_basis


BASE = """
version = 1
[classes.long]
days = 100
legal_basis = "b"
[classes.short]
days = 10
legal_basis = "b"
"""


@pytest.mark.parametrize("extra, key, why", [
    ('[[rules]]\nkind = "log"\nservice = "catering"\nclass = "long"\n', "rules[0].service",
     "'catering' is not a service; services: managed_network"),
    ('[tenants.t1]\njurisdiction = "ng"\nservice = "x"\n', "tenants.t1.service", "must be one of"),
    ('[tenants.t1]\njurisdiction = "ng"\nsites = { a = "nope" }\n', "tenants.t1.sites",
     "must map site names to a service"),
    ('[operational.forever]\ndays = 1\nlegal_basis = "b"\n', "operational.forever",
     "operational retention covers audit_log"),
    ('[operational.audit_log]\nlegal_basis = "b"\n', "operational.audit_log.days", ""),
    ('[[rules]]\nkind = "log"\nservice = "security_monitoring"\nclass = "long"\n'
     '[[rules]]\nkind = "log"\njurisdiction = "ng"\nclass = "short"\n', "rules[1]",
     "kind=log tenant=* jurisdiction=ng service=security_monitoring matches both"),
])
def test_bad_service_and_operational_settings_are_refused(extra, key, why):
    with pytest.raises(ConfigError) as e:
        parse_policy(BASE + extra, "p.toml")
    assert str(e.value).startswith(f"p.toml: {key}")
    assert why in str(e.value)


def test_policy_without_services_still_matches_records_of_any_service():
    p = parse_policy(BASE + '[[rules]]\nkind = "*"\nclass = "long"\n'
                     '[tenants.t1]\njurisdiction = "ke"\nservice = "dispatch_support"\n')
    assert p.tag(rec(Kind.LOG, "t1"), now=1_800_000_000.0).retention_class == "long"


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "privtel", "retention", "check", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_check_reports_every_uncovered_jurisdiction_a_tenant_config_names(tmp_path):
    ok = _check("--policy", str(MULTI))
    assert ok.returncode == 0, ok.stderr
    assert "uncovered" not in ok.stdout
    assert "audit_log            2190 days" in ok.stdout
    tenants = tmp_path / "collector.toml"
    tenants.write_text('[[tenants]]\nname = "kigali"\njurisdiction = "rw"\n'
                       '[[tenants]]\nname = "kampala"\njurisdiction = "ug"\n'
                       '[[tenants]]\nname = "kampala2"\njurisdiction = "ug"\n'
                       '[[tenants]]\nname = "lagos"\njurisdiction = "ng"\n')
    more = tmp_path / "more.toml"
    more.write_text('[tenants.abuja]\njurisdiction = "ng"\n[tenants.dakar]\n'
                    'jurisdiction = "sn"\n')
    bad = _check("--policy", str(MULTI), "--tenants", str(tenants), "--tenants", str(more))
    assert bad.returncode == 1
    lines = [ln.strip() for ln in bad.stdout.splitlines() if "uncovered" in ln]
    assert sorted(lines) == [
        "uncovered jurisdiction 'rw': no rule names it; named by tenant(s) kigali",
        "uncovered jurisdiction 'sn': no rule names it; named by tenant(s) dakar",
        "uncovered jurisdiction 'ug': no rule names it; named by tenant(s) kampala, kampala2",
    ]


def test_check_reports_the_policys_own_uncovered_tenant(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text(BASE + '[[rules]]\nkind = "*"\njurisdiction = "eu"\nclass = "long"\n'
                 '[[rules]]\nkind = "*"\nclass = "short"\n'
                 '[tenants.t1]\njurisdiction = "gh"\n')
    r = _check("--policy", str(p))
    assert r.returncode == 1
    assert "uncovered jurisdiction 'gh': no rule names it; named by tenant(s) t1" in r.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text("[tenants\n")
    r = _check("--policy", str(MULTI), "--tenants", str(broken))
    assert r.returncode == 2 and str(broken) in r.stderr
