"""The last check before a batch is sealed: is any raw address still in it?

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
from pipelines.pseudonym.scan import CANDIDATES, Found, find
from pipelines.record import Record

Leak = tuple[str, str]


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
    """(record id, field name) for every field still holding a raw address.

    Pass the pseudonymiser that made the records (the agent's seal-time check),
    or `raw`, canonical raw addresses (see `normalise`) to look for. With
    neither, every identifying address counts, which is right only for data
    that should hold no address at all.
    """
    leaks: list[Leak] = []
    for r in records:
        for name, value in _strings(r):
            for fact in _facts(value):
                if _is_leak(fact, pseudonymiser, raw):
                    leaks.append((r.id, name))
                    break
    return leaks


def count_leaks(texts: Iterable[str], *, raw: Collection[str] | None = None) -> int:
    """How many addresses in `texts` are raw: in `raw` if given, else any identifying one."""
    n = 0
    for t in texts:
        for fact in _facts(t):
            if _is_leak(fact, None, raw):
                n += 1
    return n
