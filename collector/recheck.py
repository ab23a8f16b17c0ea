"""The collector's second look at what agents send: defence in depth for issue 17.

The agent pseudonymises every identifier class and its leak guard checks each
batch before sealing, but a bug, an old agent or a field no policy knew can
still let a login name, an e-mail, a phone number or a host name through. So
ingest re-checks every record (`screen`) with the agent's own finder
(`pipelines.pseudonym.leakguard.ingest_findings`: every class but addresses,
which look the same as their pseudonyms without the tenant key) and keeps a
record that still carries one out of the store: it is quarantined as a digest
and size (`encode([record])` hashed by the quarantine sink; never its
content), counted by class, and logged by record id, field name and class only.
The batch's other records are stored as usual.

The labels the NOC exposition derives from records (`site`, `device`,
`ifname`, `profile`) get the same check (`screen_labels`): a record whose
label would carry a raw identifier feeds no series, and is counted.

`COUNTS` is one custom Prometheus collector per process, registered by the
collector runtime in its registry:
`privtel_records_quarantined_total{class}` and
`privtel_metric_labels_withheld_total{label,class}`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from pipelines.envelope import Header
from pipelines.pseudonym.classes import TEXT_CLASSES
from pipelines.pseudonym.leakguard import ingest_findings, label_findings
from pipelines.record import Record, encode

log = logging.getLogger(__name__)
REASON = "raw_identifier"  # the quarantine reason of a record held back here
LABELS = ("site", "device", "ifname", "profile")
Quarantine = Callable[[str, str, Header | None, bytes], Awaitable[None]]


class RecheckCounts(Collector):
    """Counts since the process started; safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: dict[str, int] = dict.fromkeys(TEXT_CLASSES, 0)
        self.labels: dict[tuple[str, str], int] = {}
        self._registries: list[CollectorRegistry] = []

    def register(self, registry: CollectorRegistry) -> None:
        """Expose the counts in `registry` (once per registry)."""
        with self._lock:
            if any(r is registry for r in self._registries):
                return
            self._registries.append(registry)
        registry.register(self)

    def record(self, classes: Iterable[str]) -> None:
        with self._lock:
            for c in set(classes):
                self.records[c] = self.records.get(c, 0) + 1

    def label(self, label: str, cls: str) -> None:
        with self._lock:
            self.labels[label, cls] = self.labels.get((label, cls), 0) + 1

    def describe(self) -> list[Metric]:
        return list(self._families())

    def _families(self) -> tuple[CounterMetricFamily, CounterMetricFamily]:
        return (CounterMetricFamily("privtel_records_quarantined", "Records kept out of the "
                                    "store at ingest because they still carried a raw "
                                    "identifier, by identifier class.", labels=["class"]),
                CounterMetricFamily("privtel_metric_labels_withheld", "Records that fed no "
                                    "NOC series because a label would carry a raw "
                                    "identifier, by label and class.",
                                    labels=["label", "class"]))

    def collect(self) -> Iterator[Metric]:
        recs, labs = self._families()
        with self._lock:
            for c, n in sorted(self.records.items()):
                recs.add_metric([c], float(n))
            for (lab, c), n in sorted(self.labels.items()):
                labs.add_metric([lab, c], float(n))
        yield recs
        yield labs


COUNTS = RecheckCounts()


class _Batch(Protocol):
    """What `screen` needs of ingest's checked message: a dataclass (it is copied with
    `dataclasses.replace`), read-only here so a frozen one fits."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @property
    def topic(self) -> str: ...
    @property
    def header(self) -> Header | None: ...
    @property
    def records(self) -> list[Record]: ...


B = TypeVar("B", bound=_Batch)
_DONE_MAX = 10_000
_done: OrderedDict[tuple[str, str, str], None] = OrderedDict()
_done_lock = threading.Lock()


Held = list[tuple[Record, list[tuple[str, str]]]]
"""Records still carrying a raw identifier, each with its (field, class) findings."""


def findings(record: Record) -> list[tuple[str, str]]:
    """(field, class) for each raw identifier still in the record; [] when clean."""
    return ingest_findings(record)


def held_back(records: Sequence[Record]) -> Held:
    """The records `screen` keeps out, with their findings: pure, thread safe, so
    ingest runs it on its check pool beside the decoding. The records of a batch
    repeat their strings (sites, devices, interface names), so each distinct
    string of the batch is judged once (`label_findings` with the string as its
    own label); only in a batch where one is raw are its records looked at one by
    one. Same verdicts as `findings` per record: a record is held exactly when one
    of its strings (site, device, a string field) carries a class."""
    texts: set[object] = set()
    add, update = texts.add, texts.update
    for r in records:
        add(r.site)
        add(r.device)
        update(r.fields.values())
    strings = {v: v for v in texts if isinstance(v, str)}
    if not label_findings(strings):
        return []
    return [(r, found) for r in records if (found := findings(r))]


async def screen(batch: B, quarantine: Quarantine, counts: RecheckCounts = COUNTS,
                 held: Held | None = None) -> B:
    """The batch with every record that still carries a raw identifier taken out,
    each quarantined (digest and size only) and counted by class. `held` is
    `held_back(batch.records)` when the caller already worked it out (ingest, on
    its check pool). A batch retried after a store failure does not quarantine the
    same record twice in this process. If the quarantine raises, so does this (the
    caller retries the batch)."""
    if held is None:
        held = held_back(batch.records)
    if not held:
        return batch
    h = batch.header
    agent, bid = (h.agent_id, h.batch_id) if h is not None else ("-", "-")
    for r, found in held:
        key = (agent, bid, r.id)
        with _done_lock:
            if key in _done:
                continue
        await quarantine(REASON, batch.topic, h, encode([r]))
        with _done_lock:
            _done[key] = None
            while len(_done) > _DONE_MAX:
                _done.popitem(last=False)
        classes = sorted({c for _, c in found})
        counts.record(classes)
        log.warning("record %s of batch %s from agent %s quarantined: raw %s in field(s) %s",
                    r.id, bid, agent, ", ".join(classes),
                    ", ".join(sorted({f for f, _ in found})))
    out = {id(r) for r, _ in held}
    return dataclasses.replace(batch, records=[r for r in batch.records if id(r) not in out])


def _labels(r: Record) -> dict[str, str]:
    f: Any = r.fields
    out = {"site": r.site, "device": r.device}
    name = f.get("if_name") or f.get("if_descr")
    if isinstance(name, str):
        out["ifname"] = name
    profile = f.get("profile")
    if isinstance(profile, str):
        out["profile"] = profile
    return out


def screen_labels(records: Iterable[Record], counts: RecheckCounts = COUNTS
                  ) -> Iterator[Record]:
    """The records whose NOC labels carry no raw identifier; the others are counted
    (by label and class) and left out, so no series is made from them. Records of
    a batch repeat their labels (a device's interfaces each poll), so each distinct
    set of label values is judged once per call."""
    verdicts: dict[tuple[object, ...], list[tuple[str, str]]] = {}
    for r in records:
        f: Any = r.fields
        key = (r.site, r.device, f.get("if_name") or f.get("if_descr"), f.get("profile"))
        found = verdicts.get(key)
        if found is None:
            found = verdicts[key] = label_findings(_labels(r))
        if not found:
            yield r
            continue
        for label, cls in sorted(set(found)):
            counts.label(label, cls)
        log.warning("record %s feeds no NOC series: raw %s in label(s) %s", r.id,
                    ", ".join(sorted({c for _, c in found})),
                    ", ".join(sorted({lab for lab, _ in found})))
