"""Real public logs (loghub OpenSSH and Linux, testdata/README.md) through the scrubber
that `privtel pseudonymise` runs: no login name, address, address-encoding host name,
device host name or e-mail survives, and at least 98% of lines keep their template.

Independent oracles: what is an identifier is read off loghub's own parse of each
line (`EventTemplate` parameters) and simple patterns written here, never off the
scrubber's grammars. Template of a line = loghub's EventTemplate, whose `<*>` are the
parameters; the positions loghub left literal but which hold an account name
(`user=root`, `failures for admin`) are masked too: those are identifiers.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from pipelines.pseudonym import Pseudonymiser, TenantKey

DATA = Path(__file__).parent / "testdata"
TOKEN = r"tk-[0-9a-f]{6}-[0-9a-f]{20}"
IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d])")
ADDR_HOST = re.compile(r"[\w.-]*\d{1,3}[-.]\d{1,3}[-.]\d{1,3}[-.]\d{1,3}[\w.-]*")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
USER_SLOT = re.compile(r"(?:for (?:invalid user |illegal user )?|[Ii]nvalid user |user=|"
                       r"for user |failures for )<\*>$")
LITERAL_ACCOUNT = re.compile(r"\b(user=|failures for |password for )(?!<\*>)[\w.-]+")


def _template_rx(template: str) -> re.Pattern[str]:
    t = LITERAL_ACCOUNT.sub(r"\1<*>", template)
    parts = [re.escape(p) for p in t.split("<*>")]
    return re.compile("(.*?)".join(parts) + r"\s*")


def _user_params(content: str, template: str) -> list[str]:
    """Values loghub parsed into a slot where a login name sits."""
    rx = re.compile("(.*?)".join(re.escape(p) for p in template.split("<*>")) + r"\s*")
    m = rx.fullmatch(content)
    if m is None:
        return []
    out, pos = [], 0
    for i, _ in enumerate(template.split("<*>")[:-1]):
        start = template.index("<*>", pos)
        if USER_SLOT.search(template[:start + 3]):
            out.append(m.group(i + 1))
        pos = start + 3
    literal = set(re.findall(r"\w+", template))
    return [u.strip() for u in out if u.strip() and u.strip() not in literal]


def _rows(name: str) -> list[tuple[str, dict[str, str]]]:
    lines = (DATA / f"{name}_2k.log").read_text(encoding="utf-8").splitlines()
    with (DATA / f"{name}_2k.log_structured.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(lines) == len(rows) == 2000
    return list(zip(lines, rows, strict=True))


@pytest.fixture(scope="module")
def p() -> Pseudonymiser:
    return Pseudonymiser(TenantKey.from_hex("3c" * 16 + "c3" * 16))


@pytest.mark.parametrize(("name", "host_col"), [("OpenSSH", "Component"), ("Linux", "Level")])
def test_no_identifier_survives_and_templates_do(p: Pseudonymiser, name: str,
                                                 host_col: str) -> None:
    kept = checked_users = 0
    rows = _rows(name)
    for line, row in rows:
        out = p.text(line)
        host = row[host_col]
        assert not re.search(rf"(?<![\w-]){re.escape(host)}(?![\w-])", out), line
        for a in IPV4.findall(line):
            assert not re.search(rf"(?<![\d.]){re.escape(a)}(?!\d)", out), line
        for h in ADDR_HOST.findall(line):
            if re.search(r"[A-Za-z]", h) and re.search(r"[-.]", h.strip(".-")):
                assert h not in out, line
        for e in EMAIL.findall(line):
            assert e not in out, line
        cut = line.index(row["Content"]) if row["Content"] else len(line)
        for u in _user_params(row["Content"], row["EventTemplate"]):
            if re.search(rf"(?<![\w-]){re.escape(u)}(?![\w-])", line[:cut]):
                continue  # also the program's name in the header (`sshd`)
            checked_users += 1
            assert not re.search(rf"(?<![\w-]){re.escape(u)}(?![\w-])", out), (u, line)
        # template: the header with the host as a token, then loghub's template
        header = re.escape(line[:cut]).replace(re.escape(host), TOKEN, 1)
        m = re.match(header, out)
        if m and _template_rx(row["EventTemplate"]).fullmatch(out[m.end():]):
            kept += 1
    assert checked_users > 100  # the oracle did find login names to look for
    assert kept / len(rows) >= 0.98, kept


def test_the_template_oracle_accepts_the_raw_lines() -> None:
    """The harness itself: loghub's templates match the raw lines they came from."""
    rows = _rows("OpenSSH") + _rows("Linux")
    ok = sum(1 for _, r in rows if _template_rx(r["EventTemplate"]).fullmatch(r["Content"]))
    assert ok / len(rows) >= 0.99


RECORDINGS = Path(__file__).parents[2] / "privtel" / "sim" / "recordings"


@pytest.mark.parametrize("vendor", ["arista_eos", "cisco_ios", "cisco_nxos", "juniper_junos"])
def test_our_simulated_devices_logs_lose_their_names(p: Pseudonymiser, vendor: str) -> None:
    """The demo's own device recordings: login names, the device's host name and
    addresses are replaced; the log templates stay."""
    text = (RECORDINGS / vendor / "log_buffer.txt").read_text()
    text = text.replace("{{hostname}}", "ikeja-core-01")
    out = p.text(text)
    for raw in ("netops", "ikeja-core-01", "203.0.113.77", "[user: admin]", "user=admin"):
        assert raw not in out
    assert out.count("\n") == text.count("\n")
    for keep in ("%LINEPROTO-5-UPDOWN", "%BGP-", "Interface", "changed state", "port"):
        assert (keep in text) <= (keep in out)
