"""The last check before a batch is sealed: is any raw identifier still in it?

Every class is checked: addresses and MACs as described below; user names,
e-mails, phones and host names by running the same finder the scrubber uses
(`idscan.py`: a value it still finds is one that was never replaced, since a
replaced one is a `tk-` token), and the tenant's known names (`known.py`).
`ingest_findings` is the collector's re-check of one record at ingest: it has no
key, so it cannot tell an address pseudonym from an address, but every other
class it can.

Why the guard needs the pseudonymiser. A prefix-preserving pseudonym of an
address is itself a valid address, and Crypto-PAn is a permutation: every
address is the pseudonym of *some* address, so no test on the value alone can
tell a pseudonym from a raw address. The guard therefore asks the
pseudonymiser that made the batch: every address found in an outgoing record
must be one it produced (it remembers what it produced for at least its cache
size of most recent distinct addresses), or one that is allowed through
unchanged (0.0.0.0/8, netmasks, ::, configured passthrough ranges). Anything
else never went through the pseudonymiser: a field that bypassed the policy, a
record built after pseudonymising, a stale pseudonym from an earlier epoch.

It errs on the safe side: a pseudonym evicted from memory before its batch was
checked is reported (the record is quarantined, not shipped). The one thing it
cannot see is a raw address that equals a pseudonym produced in the same
window; the chance is that of a random collision within the tenant's address
set, and `scan-leaks --addresses` against the real inventory covers it.

With `raw=` instead (a set of known raw addresses, e.g. what the devices
really hold), an address is a leak exactly when it is in that set.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

from pipelines.pseudonym.core import Pseudonymiser, canonical, non_identifying
from pipelines.pseudonym.idscan import Finder
from pipelines.pseudonym.known import KnownNames
from pipelines.pseudonym.scan import CANDIDATES, Found, find
from pipelines.record import Record

Leak = tuple[str, str]
ClassLeak = tuple[str, str, str]  # record id, field, identifier class
_FINDER: list[Finder] = []


def default_finder() -> Finder:
    """A finder for every text class with the shipped grammars, built once."""
    if not _FINDER:
        _FINDER.append(Finder())
    return _FINDER[0]


def normalise(text: str) -> str | None:
    """The first address (IPv4, IPv6, MAC) in `text`, in the canonical form the
    guard compares (`10.0.0.1`, `2001:db8::1`, `::ffff:10.0.0.1`, `00:1a:..`), or None."""
    for f in find(text.strip()):
        return canonical(f)
    return None


def _strings(r: Record) -> Iterable[tuple[str, str]]:
    yield "site", r.site
    yield "device", r.device
    for k, v in r.fields.items():
        if isinstance(v, str):
            yield k, v


Fact = tuple[str, bool, Found]  # canonical form, non-identifying, the address
_FACTS: dict[str, tuple[Fact, ...]] = {}
_FACTS_MAX = 200_000


def _facts(text: str) -> Iterator[Fact]:
    """The addresses in `text`, each candidate parsed once per process: what a
    candidate string contains does not depend on any key, so it is cached."""
    for m in CANDIDATES.finditer(text):
        s = m.group()
        facts = _FACTS.get(s)
        if facts is None:
            facts = tuple((canonical(f), _nonident(f), f) for f in find(s))
            if len(_FACTS) >= _FACTS_MAX:
                _FACTS.clear()
            _FACTS[s] = facts
        yield from facts


def _nonident(f: Found) -> bool:
    if f.kind == "mac":
        return False
    assert not isinstance(f.value, int)
    a = f.value.ipv4_mapped if f.value.version == 6 and f.value.ipv4_mapped else f.value
    return non_identifying(a)


def _is_leak(fact: Fact, pseudonymiser: Pseudonymiser | None,
             raw: Collection[str] | None) -> bool:
    canon, nonident, found = fact
    if raw is not None:
        return canon in raw
    if nonident:
        return False
    if pseudonymiser is None:
        return True
    if pseudonymiser.is_pseudonym(canon):
        return False
    return not pseudonymiser.is_kept(found)


def find_leaks(records: Iterable[Record], pseudonymiser: Pseudonymiser | None = None, *,
               raw: Collection[str] | None = None) -> list[Leak]:
    """(record id, field name) for every field still holding a raw identifier.

    Pass the pseudonymiser that made the records (the agent's seal-time check),
    or `raw`, canonical raw addresses (see `normalise`) to look for. With
    neither, every identifying address counts, which is right only for data
    that should hold no address at all. Other classes are always checked.
    """
    seen: set[tuple[str, str]] = set()
    out: list[Leak] = []
    for rid, name, _ in find_leaks_by_class(records, pseudonymiser, raw=raw):
        if (rid, name) not in seen:
            seen.add((rid, name))
            out.append((rid, name))
    return out


def find_leaks_by_class(records: Iterable[Record], pseudonymiser: Pseudonymiser | None = None,
                        *, raw: Collection[str] | None = None) -> list[ClassLeak]:
    """`find_leaks` with the class of each finding (one per field and class)."""
    finder = pseudonymiser.finder if pseudonymiser is not None else default_finder()
    known = pseudonymiser.known if pseudonymiser is not None else None
    if known is not None and not len(known):
        known = None
    memo = finder.value_memo
    leaks: list[ClassLeak] = []
    for r in records:
        for name, value in _strings(r):
            # what a value holds (its addresses, the classes the finder sees) does not
            # change, and most fields repeat record after record (site, device,
            # app name, transport): judged once; whether an address is a leak and
            # which names are known do change, and are asked every time
            got = memo.get(value)
            if got is None:
                got = (tuple(_facts(value)), _finder_classes(value, finder))
                if len(memo) > 65536:
                    memo.clear()
                memo[value] = got
            for fact in got[0]:
                if _is_leak(fact, pseudonymiser, raw):
                    leaks.append((r.id, name, "mac" if fact[2].kind == "mac" else "ip"))
                    break
            classes = got[1]
            if known is not None and known.hit(value):
                classes = sorted(set(classes) | {c for c, _ in known.find(value)})
            for cls in classes:
                leaks.append((r.id, name, cls))
    return leaks


def _finder_classes(value: str, finder: Finder) -> list[str]:
    return sorted({h.cls for h in finder.hits(value)})


def _text_classes(value: str, finder: Finder, known: KnownNames | None) -> list[str]:
    """The classes of the raw identifiers in `value`. What the finder says of a
    value never changes, so it is remembered (field values repeat every poll)."""
    memo = finder.guard_memo
    classes = memo.get(value)
    if classes is None:
        classes = _finder_classes(value, finder)
        if len(memo) > 65536:
            memo.clear()
        memo[value] = classes
    if known is not None and len(known) and known.hit(value):
        return sorted(set(classes) | {c for c, _ in known.find(value)})
    return classes


def ingest_findings(record: Record, finder: Finder | None = None) -> list[tuple[str, str]]:
    """(field, class) for every user name, e-mail, phone or host name still in
    clear in a record arriving at the collector. Addresses are not judged here:
    without the tenant key a pseudonym and a raw address look alike."""
    f = finder or default_finder()
    return [(name, cls) for name, value in _strings(record)
            for cls in _text_classes(value, f, None)]


def label_findings(labels: dict[str, str], finder: Finder | None = None) -> list[tuple[str, str]]:
    """(label, class) for exported Prometheus labels (`site`, `device`, `ifname`,
    `profile`) that still carry a user name, e-mail, phone or host name."""
    f = finder or default_finder()
    return [(k, cls) for k, v in labels.items() for cls in _text_classes(v, f, None)]


def count_leaks(texts: Iterable[str], *, raw: Collection[str] | None = None) -> int:
    """How many addresses in `texts` are raw: in `raw` if given, else any identifying one."""
    n = 0
    for t in texts:
        for fact in _facts(t):
            if _is_leak(fact, None, raw):
                n += 1
    return n
