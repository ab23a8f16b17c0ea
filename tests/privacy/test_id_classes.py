"""Identifier classes beyond addresses: property tests per class (a generated identifier
inside random text never survives and the text around it is unchanged), grammars as
data, contact and place fields, subject files, the collector's keyless ingest check."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.pseudonym import (
    PolicyError,
    PrivacyPolicy,
    PseudonymError,
    Pseudonymiser,
    TenantKey,
)
from pipelines.pseudonym.grammar import builtin_grammars, parse_grammar
from pipelines.pseudonym.idscan import Finder
from pipelines.pseudonym.leakguard import ingest_findings, label_findings
from pipelines.pseudonym.subjects import forward, parse_subjects
from pipelines.record import Kind, Record

KEY = TenantKey.from_hex("77" * 16 + "88" * 16)
P = Pseudonymiser(KEY)

WORDS = st.sampled_from(["link", "down", "up", "port", "22", "pid", "[4242]", "Gi0/1",
                         "severity", "5", "ok", "ssh2", "vlan", "100", "->", "eth0"])
FILLER = st.lists(WORDS, min_size=0, max_size=5).map(" ".join)
NAME = st.from_regex(r"[a-z][a-z0-9_]{3,10}", fullmatch=True).filter(
    lambda n: n not in {"link", "down", "port", "severity", "vlan", "eth0", "from"})

LABEL = st.from_regex(r"[a-z][a-z0-9]{2,10}", fullmatch=True)  # a DNS label


def _region_number(draw: st.DrawFn) -> tuple[str, str]:
    region = draw(st.sampled_from(["NG", "GH", "KE", "ZA", "GB", "US"]))
    ex = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert ex is not None
    national = str(ex.national_number)
    for _ in range(20):
        tail = "".join(str(draw(st.integers(0, 9))) for _ in range(4))
        n = phonenumbers.parse(national[:-4] + tail, region)
        if phonenumbers.is_valid_number(n):
            break
    else:
        n = ex
    fmt = draw(st.sampled_from([phonenumbers.PhoneNumberFormat.E164,
                                phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                                phonenumbers.PhoneNumberFormat.NATIONAL]))
    shown = phonenumbers.format_number(n, fmt)
    if fmt == phonenumbers.PhoneNumberFormat.NATIONAL:
        # a national form is ambiguous; the documented reading order decides
        for r in ("NG", "GH", "KE", "ZA", "GB", "US"):
            m = phonenumbers.parse(shown, r)
            if phonenumbers.is_valid_number(m):
                n = m
                break
    return shown, phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)


@st.composite
def piece(draw: st.DrawFn) -> tuple[str, str, str]:
    """(text, expected output, raw value that must not survive)"""
    kind = draw(st.sampled_from(["user", "email", "phone", "host"]))
    if kind == "user":
        u = draw(NAME)
        t = draw(st.sampled_from(["Accepted publickey for {} from", "session opened for user {}",
                                  "Configured from console by {} on vty0",
                                  "Login Success [user: {}]", "User '{}' login"]))
        return t.format(u), t.format(P.id_token("user", u)), u
    if kind == "email":
        e = draw(NAME) + "@" + draw(LABEL) + draw(st.sampled_from([".ng", ".co.uk", ".com"]))
        return f"<{e}>", f"<{P.id_token('email', e)}>", e
    if kind == "phone":
        shown, e164 = _region_number(draw)
        return f"tel {shown};", f"tel {P.id_token('phone', e164)};", shown
    a, b, c, d = (draw(st.integers(0, 255)) for _ in range(4))
    sep = draw(st.sampled_from(["-", "."]))
    h = f"{draw(LABEL)}-{a}{sep}{b}{sep}{c}{sep}{d}.{draw(LABEL)}.net"
    return f"rdns {h} ok", f"rdns {P.id_token('host', h)} ok", h


@settings(max_examples=300, deadline=None)
@given(FILLER, piece(), FILLER)
def test_generated_identifiers_never_survive_and_the_text_around_is_unchanged(
        before: str, p: tuple[str, str, str], after: str) -> None:
    text, expected, raw = p
    out = P.text(f"{before} | {text} | {after}")
    assert out == f"{before} | {expected} | {after}"
    assert raw not in out


def test_ports_pids_interfaces_and_severities_stay() -> None:
    line = "%LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to up pid 4242 port 22"
    assert P.text(line) == line


def test_a_grammar_is_data_and_its_mistakes_are_named() -> None:
    rules = parse_grammar('family = "acme"\n[[rule]]\nanchor = "op="\n'
                          "pattern = 'op=(?P<user>\\w+)'\n", "acme.toml")
    f = Finder(rules)
    assert [(h.cls, h.value) for h in f.hits("x op=adaeze y")] == [("user", "adaeze")]
    with pytest.raises(PolicyError, match=r"acme\.toml: rule 1"):
        parse_grammar('family = "a"\n[[rule]]\npattern = "(?P<pet>x)"\n', "acme.toml")
    families = {r.family for r in builtin_grammars()}
    assert {"openssh", "unix", "cisco", "junos", "arista", "dhcp", "radius", "windows",
            "syslog"} <= families


@pytest.mark.parametrize(("line", "raw"), [
    ("sudo:   adaeze : TTY=pts/0 ; PWD=/home/adaeze ; USER=root ; COMMAND=/bin/ls", "adaeze"),
    ("%ASA-6-113004: AAA user authentication Successful : server = 10.1.1.1 : user = kofi",
     "kofi"),
    ("mgd[1]: UI_LOGIN_EVENT: User 'wanjiru' login, class 'j-super-user'", "wanjiru"),
    ("Aaa: %ACCOUNTING-6-EXEC: thabo vty3 10.1.1.1 stop task_id=1", "thabo"),
    ("dnsmasq-dhcp[9]: DHCPACK(eth0) 10.1.2.3 00:1b:63:84:45:e6 iphone-de-chinedu",
     "iphone-de-chinedu"),
    ("Auth: (12) Login OK: [amaka] (from client nas01 port 0)", "amaka"),
    ("An account was logged on.  Account Name:  jsmith  Workstation Name:  PC-JSMITH",
     "jsmith"),
    ("Dec  1 10:00:00 laptop-10-9-8-6 kernel: eth0 up", "laptop-10-9-8-6"),
])
def test_each_log_family_loses_its_names(line: str, raw: str) -> None:
    assert raw not in P.text(line)


def test_public_names_are_kept_only_when_listed() -> None:
    line = "reverse mapping checking getaddrinfo for ntp-10-1-2-3.pool.ntp.org [10.1.2.3]"
    assert "pool.ntp.org" not in P.text(line)
    kept = Pseudonymiser(KEY, PrivacyPolicy(public_names=("*.pool.ntp.org",)))
    assert "ntp-10-1-2-3.pool.ntp.org" in kept.text(line)


def test_contact_and_location_fields() -> None:
    r = Record(kind=Kind.INVENTORY, tenant="acme", site="hq", device="sw-1", name="snmp.system",
               fields={"sys_contact": "Dr Adaeze Okafor <adaeze@clinic.ng> +234 803 555 0147",
                       "sys_location": "Dr Okafor's clinic room"})
    out = P.record(r)
    contact = str(out.fields["sys_contact"])
    assert contact.split() == [P.id_token("person", "Dr Adaeze Okafor"),
                               P.id_token("email", "adaeze@clinic.ng"),
                               P.id_token("phone", "+2348035550147")]
    assert "Okafor" not in str(out.fields["sys_location"])
    assert out.fields["geo_level"] == "token"  # never a level it did not achieve
    cut = P.record(r.with_fields({"sys_location": "Room 3, 12 Allen Ave, Ikeja, Lagos, NG"}))
    assert cut.fields["sys_location"] == "Lagos, NG" and cut.fields["geo_level"] == "region"


def test_subject_file_lines_are_pseudonymised_forward() -> None:
    subjects = parse_subjects("ip:10.1.2.3\nnet:10.1.2.0/24\nuser:adaeze\n# x\n"
                              "email:A@B.ng\nmac:00-1B-63-84-45-E6\nhost:iphone-de-chinedu\n"
                              "phone:+2348035550147\n")
    got = {s.cls: s.value for s in forward(subjects, P)}
    assert got["user"] == P.id_token("user", "adaeze")
    assert got["email"] == P.id_token("email", "a@b.ng")
    assert got["ip"] == P.ip("10.1.2.3") and got["net"].endswith("/24")
    assert got["net"].split("/")[0].rsplit(".", 1)[0] == got["ip"].rsplit(".", 1)[0]
    assert got["mac"] == P.mac("00:1b:63:84:45:e6")
    assert got["phone"] == P.text("call +234 803 555 0147").split()[1]
    with pytest.raises(ValueError, match="line 1") as e:
        parse_subjects("pet:rex")
    assert "rex" not in str(e.value)
    tokens = Pseudonymiser(KEY, PrivacyPolicy(modes={"ip": "token"}))
    with pytest.raises(PseudonymError, match="prefix-preserving"):
        forward(parse_subjects("net:10.1.2.0/24"), tokens)


def test_collector_ingest_check_by_class() -> None:
    raw = Record(kind=Kind.LOG, tenant="acme", site="hq", device="tk-aaaaaa-" + "0" * 20,
                 name="log.line", fields={"message": "Accepted password for kofi from x",
                                          "note": "mail a@b.ng or +2348035550147"})
    assert sorted(ingest_findings(raw)) == [("message", "user"), ("note", "email"),
                                            ("note", "phone")]
    clean = P.record(raw.with_fields(raw.fields))
    assert ingest_findings(clean) == []
    assert label_findings({"device": "laptop-10-9-8-6", "ifname": "Gi0/1"}) == [
        ("device", "host")]


@pytest.mark.parametrize("line, raw", [
    # one scan reports non-overlapping anchors; ` BY ` starts inside `Accepted `
    ("login: LOGIN ON Accepted BY adaeze", "adaeze"),
    # `for user ` is at the same place as the longer `for user '` the scan reports
    ("radiusd: auth failed for user 'kofi", "kofi"),
])
def test_a_grammar_whose_anchor_overlaps_another_still_runs(line: str, raw: str) -> None:
    assert raw not in P.text(line)
    assert raw not in Finder().rewrite(line, P.id_token)


def test_the_prefilters_keep_every_phone_form() -> None:
    """The phone scan runs only behind a cheap prefilter (idscan.py); every national
    and international form, dotted North American included, still gets through it."""
    for phone in ("+234 803 555 0147", "00234-803-555-0147", "020 7946 0018", "(0117) 496 0123",
                  "212.555.1234", "(212).555-1234", "212 555.1234", "212-555-1234"):
        out = P.text(f"sms to {phone} ok")
        assert out.startswith("sms to tk-") and out.endswith(" ok"), (phone, out)
