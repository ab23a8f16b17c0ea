"""Retention policy parsing, validation and tagging (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from collector_kit import rec

from pipelines.config import ConfigError
from pipelines.record import Kind
from pipelines.retention import DAY, default_policy, parse_policy

DATA = Path(__file__).parent / "testdata"

BASE = """
[classes.metrics]
days = 395
legal_basis = "li: operations"
[classes.logs]
days = 90
legal_basis = "li: troubleshooting"
[classes.short]
days = 7
legal_basis = "li: minimal"
"""


def test_default_policy_tags_by_kind():
    p = default_policy()
    now = 1_750_000_000.0
    r = rec(0, ts=now - 100)
    t = p.tag(r, now=now)
    assert t.retention_class == "metrics"
    assert t.expires_at == pytest.approx(now - 100 + 395 * DAY)
    inv = p.tag(rec(0, kind=Kind.INVENTORY, name="snmp.system"), now=now)
    assert inv == ("inventory", p.classes["inventory"].legal_basis, None)
    assert p.gaps == []


def test_future_timestamp_does_not_stretch_expiry():
    p = default_policy()
    now = 1_750_000_000.0
    t = p.tag(rec(0, ts=now + 10 * DAY), now=now)
    assert t.expires_at == pytest.approx(now + 395 * DAY)


def test_most_specific_rule_wins_and_jurisdiction_from_tenant():
    p = parse_policy(BASE + """
[tenants.acme]
jurisdiction = "eu"
[[rules]]
class = "metrics"
[[rules]]
kind = "log"
class = "logs"
[[rules]]
kind = "log"
jurisdiction = "eu"
class = "short"
legal_basis = "eu: minimal"
""")
    log = rec(0, kind=Kind.LOG, name="syslog", msg="x")
    assert p.tag(log).retention_class == "short"
    assert p.tag(log).legal_basis == "eu: minimal"
    assert p.tag(log, "us").retention_class == "logs"
    assert p.tag(rec(0, kind=Kind.LOG, name="syslog", tenant="other", msg="x")
                 ).retention_class == "logs"
    assert p.tag(rec(0)).retention_class == "metrics"
    assert sum(p.unmatched.values()) == 0


def test_unmatched_record_gets_most_restrictive_default_and_is_counted():
    p = parse_policy(BASE + '[[rules]]\nkind = "metric"\nclass = "metrics"\n')
    assert p.default.name == "short"
    t = p.tag(rec(0, kind=Kind.EVENT, name="link.down", state="down"))
    assert t.retention_class == "short"
    p.tag(rec(1, kind=Kind.EVENT, name="link.down", state="down"))
    assert p.unmatched == {"event": 2}
    assert any("kind=event" in g and "'short'" in g for g in p.gaps)
    assert not any("kind=metric" in g for g in p.gaps)


def test_reversed_rule_order_gives_same_result():
    rules = ['[[rules]]\nclass = "metrics"\n', '[[rules]]\nkind = "log"\nclass = "logs"\n']
    a, b = parse_policy(BASE + "".join(rules)), parse_policy(BASE + "".join(rules[::-1]))
    log = rec(0, kind=Kind.LOG, name="syslog", msg="x")
    assert a.tag(log).retention_class == b.tag(log).retention_class == "logs"


BAD = sorted(DATA.glob("retention_bad_*.toml"))


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_policy_is_refused_with_its_message(path):
    text = path.read_text()
    expected = text.splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as e:
        parse_policy(text, path.name)
    assert str(e.value) == expected


def test_there_is_one_bad_file_per_rule():
    assert len(BAD) >= 12
