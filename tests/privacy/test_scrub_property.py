"""Property: addresses in every textual form inside random text are all replaced,
and every character of the text around them is left exactly as it was.

The expected output is built independently of the scrubber: each generated
address is pseudonymised through the structured path (`ip()` / `mac()`, which
parse the bare address and never run the text scanner) and put back between
its own decorations (port, brackets, zone, CIDR, URL, key=value).
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.pseudonym import Pseudonymiser, TenantKey, non_identifying
from pipelines.pseudonym.leakguard import count_leaks, normalise
from pipelines.pseudonym.scan import format_mac

P = Pseudonymiser(TenantKey.from_hex("5a" * 16 + "a5" * 16))

FILLER_WORDS = st.sampled_from([
    "link", "down", "up", "session", "from", "to", "user", "port", "vlan", "ok",
    "12:30:45", "std::vector", "1.3.6.1.4.1.9.1.1", "v2.1", "ERROR:", "x=y", "Gi0/1",
    "2026-11-25T12:30:45Z", "pid[123]", "100%", "a-b", "https://example.net/path",
    "12:30:45.123456", "C++::scope", "dead:beef", "3.14", "v1.2.3.4",
])
SEPARATORS = st.sampled_from([" ", ", ", "; ", " (", ") ", "\t", "\n", " = ", ". ", " | "])

v4_int = st.integers(min_value=1, max_value=0xFEFFFFFF).filter(
    lambda v: not non_identifying(ipaddress.IPv4Address(v)))  # masks stay as they are
v6_int = st.integers(min_value=1, max_value=(1 << 128) - 1)
mac_int = st.integers(min_value=0, max_value=(1 << 48) - 1)


@st.composite
def v4_piece(draw: st.DrawFn) -> tuple[str, str, str]:
    a = ipaddress.IPv4Address(draw(v4_int))
    text = draw(st.sampled_from([str(a), ".".join(f"{o:03d}" for o in a.packed)]))
    pre, post = draw(st.sampled_from([
        ("", ""), ("", ":8080"), ("", "/24"), ("http://", ":443/index.html"),
        ("src=", ""), ("user@", ""), ("[", "]"), ("'", "'"), ('"', '"'),
        ("IP ", ".443 >"), ("peer_", ""),
    ]))
    return pre + text + post, pre + P.ip(str(a)) + post, str(a)


@st.composite
def v6_piece(draw: st.DrawFn) -> tuple[str, str, str]:
    kind = draw(st.sampled_from(["plain", "mapped"]))
    if kind == "mapped":
        v4 = ipaddress.IPv4Address(draw(v4_int))
        a = ipaddress.IPv6Address("::ffff:" + str(v4))
        forms = ["::ffff:" + str(v4), "::FFFF:" + str(v4),
                 "0:0:0:0:0:ffff:" + str(v4)]
    else:
        a = ipaddress.IPv6Address(draw(v6_int))
        forms = [str(a), a.exploded, a.exploded.upper(), str(a).upper()]
    text = draw(st.sampled_from(forms))
    pre, post = draw(st.sampled_from([
        ("", ""), ("[", "]:443"), ("", "%eth0"), ("", "/64"), ("http://[", "]:8080/x"),
        ("addr=", ""), ("from ", ""), ("<", ">"), ("IP6 ", ".53 >"),
    ]))
    kept = non_identifying(a.ipv4_mapped or a)  # e.g. a mapped netmask stays as it is
    return pre + text + post, pre + P.ip(str(a)) + post, "" if kept else normalise(str(a)) or ""


@st.composite
def mac_piece(draw: st.DrawFn) -> tuple[str, str, str]:
    m = draw(mac_int)
    style = draw(st.sampled_from([":", "-", "."]))
    text = format_mac(m, style)
    if draw(st.booleans()):
        text = text.upper()
    pre, post = draw(st.sampled_from([("", ""), ("hw=", ""), ("(", ")")]))
    return pre + text + post, pre + P.mac(text) + post, format_mac(m, ":")


@st.composite
def document(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    pieces = draw(st.lists(st.one_of(
        FILLER_WORDS.map(lambda w: (w, w, "")), v4_piece(), v6_piece(), mac_piece()),
        min_size=1, max_size=12))
    text, expected, raws = [], [], []
    for i, (raw, out, canon) in enumerate(pieces):
        if i:
            sep = draw(SEPARATORS)
            text.append(sep)
            expected.append(sep)
        text.append(raw)
        expected.append(out)
        if canon:
            raws.append(canon)
    return "".join(text), "".join(expected), raws


@settings(max_examples=400, deadline=None)
@given(document())
def test_every_address_form_is_replaced_and_nothing_else_changes(
        doc: tuple[str, str, list[str]]) -> None:
    text, expected, raws = doc
    out = P.text(text)
    assert out == expected
    assert count_leaks([out], raw=set(raws)) == 0


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_text_without_digits_or_colons_is_untouched(s: str) -> None:
    s = "".join(c for c in s if not c.isdigit() and c not in ":.-abcdefABCDEF")
    assert P.text(s) == s


def _identifying(canon: str) -> bool:
    try:
        a = ipaddress.ip_address(canon)
    except ValueError:
        return True  # a MAC
    if a.version == 6 and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return not non_identifying(a)


FIELD_NAMES = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    st.sampled_from(["sys_descr", "sys_name", "if_alias", "mgmt_addr", "peer_ip", "reason",
                     "protocol", "sys_object_id", "lat", "sys_location", "base_mac", "note"]),
)
VALUES = st.one_of(
    st.integers(-(2**31), 2**31), st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(), st.none(), document().map(lambda d: d[0]),
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(FIELD_NAMES, VALUES, min_size=1, max_size=8))
def test_no_field_carries_a_raw_address_past_both_pseudonymiser_and_guard(
        fields: dict[str, object]) -> None:
    """Whatever the field is called: it is pseudonymised, or the guard names it."""
    from pipelines.pseudonym.leakguard import find_leaks
    from pipelines.record import Kind, Record

    r = Record(kind=Kind.EVENT, tenant="acme", site="hq", device="sw-1", name="event",
               fields=fields)  # type: ignore[arg-type]
    raws = {c for v in fields.values() if isinstance(v, str)
            for c in (normalise(x) for x in v.split()) if c and _identifying(c)}
    out = P.record(r)
    flagged = {name for _, name in find_leaks([out], P)}
    for k, v in out.fields.items():
        if isinstance(v, str) and count_leaks([v], raw=raws):
            assert k in flagged, k


def test_a_dash_spelt_mac_is_a_mac_not_a_phone_or_host() -> None:
    """Found by the property above: `01-57-97-29-70-a0` reads as a ZA phone number and as an
    address-bearing host; it is a MAC and gets the MAC pseudonym, whole."""
    assert P.text("01-57-97-29-70-a0") == P.mac("01:57:97:29:70:a0")
    assert P.text("lease 01-57-97-29-70-a0 ok") == f"lease {P.mac('01:57:97:29:70:a0')} ok"
    # the phone pattern takes an opening parenthesis with it: `(01-33-89-86-98` (found
    # by the property above, after a ` (` separator) is still inside the MAC
    assert P.text("link (01-33-89-86-98-a0") == f"link ({P.mac('01:33:89:86:98:a0')}"
