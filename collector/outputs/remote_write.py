"""Remote write: stored metric records to any Prometheus remote-write receiver.

A fleet beyond one Prometheus (Mimir, Thanos Receive, VictoriaMetrics, Cortex,
or Prometheus with `--web.enable-remote-write-receiver`) gets the NOC series
with the device's poll time as the sample timestamp, so a lagging spool or a
second worker never bends a rate.

`deliver` only converts and queues: each sample is encoded at once as one
protobuf TimeSeries (remote-write 1.0; see `_Series`), about 1 us where
building protobuf messages took several. A sender task per shard gathers up to
`max_samples_per_send` (waiting at most `batch_send_deadline_s` for a partial
request to fill), joins them into one WriteRequest, snappy-compresses it and
posts. 5xx, 429 and network errors are retried with full-jitter backoff; 4xx
is the receiver refusing the data for good, so those samples are dropped and
counted. The sample queue is bounded: when a dead receiver fills it, new
samples are dropped and counted, never waited for. Nothing here can slow
ingest or make a stored batch count as lost: the store committed it before
this output saw it.

A receiver refuses a whole request for one out-of-order sample, so a replayed
backlog older than what was already sent for a device is dropped here
(`reason="out_of_order"`) rather than poisoning a batch of fresh samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cramjam
import httpx
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from prometheus_client import CollectorRegistry, Counter, Gauge

from collector.metrics.noc import INTERFACE_SERIES, _num, _status
from collector.outputs.base import Committed
from pipelines.lifecycle import Lifecycle
from pipelines.record import Record
from plumbing.backoff import Backoff
from plumbing.files import read_private
from plumbing.tls import tls_context

log = logging.getLogger(__name__)

Sample = tuple[tuple[tuple[str, str], ...], float, int]  # sorted labels, value, ms
DROP_REASONS = ("queue_full", "rejected", "retries_exhausted", "out_of_order", "shutdown",
                "error")


@dataclass(frozen=True, slots=True)
class RemoteWriteConfig:
    """One `[[outputs.remote_write]]` table of the collector config."""

    url: str
    name: str = "remote_write"
    timeout_s: float = 10.0
    max_samples_per_send: int = 2000
    batch_send_deadline_s: float = 0.2  # a partial request waits this long for more
    queue_size: int = 200_000          # samples held while the receiver is slow or away
    shards: int = 4                    # requests in flight; a series always uses one shard
    max_retries: int = 10
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict)
    bearer_token_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __repr__(self) -> str:  # headers may carry credentials
        return f"RemoteWriteConfig(name={self.name!r}, headers={sorted(self.headers)})"


def _write_request_class() -> Any:
    """`prometheus.WriteRequest` from remote.proto (the fields remote-write 1.0 sends),
    built from its descriptor so no generated code or protoc is needed."""
    fdp = descriptor_pb2.FileDescriptorProto(name="privtel/prometheus_remote.proto",
                                             package="prometheus", syntax="proto3")
    f = descriptor_pb2.FieldDescriptorProto
    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, flabel, type_name in fields:
            m.field.add(name=fname, number=number, type=ftype, label=flabel,
                        **({"type_name": type_name} if type_name else {}))

    message("Label", ("name", 1, f.TYPE_STRING, opt, ""), ("value", 2, f.TYPE_STRING, opt, ""))
    message("Sample", ("value", 1, f.TYPE_DOUBLE, opt, ""),
            ("timestamp", 2, f.TYPE_INT64, opt, ""))
    message("TimeSeries", ("labels", 1, f.TYPE_MESSAGE, rep, ".prometheus.Label"),
            ("samples", 2, f.TYPE_MESSAGE, rep, ".prometheus.Sample"))
    message("WriteRequest", ("timeseries", 1, f.TYPE_MESSAGE, rep, ".prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _write_request_class()
_TimeSeries = WriteRequest.DESCRIPTOR.fields_by_name["timeseries"].message_type._concrete_class
_Label = _TimeSeries.DESCRIPTOR.fields_by_name["labels"].message_type._concrete_class
_Sample = _TimeSeries.DESCRIPTOR.fields_by_name["samples"].message_type._concrete_class


def _varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF  # int64 on the wire: a negative number is its two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_DOUBLE = struct.Struct("<d").pack
Labels = tuple[tuple[str, str], ...]


def _label_bytes(labels: Labels, pairs: dict[tuple[str, str], bytes] | None = None) -> bytes:
    """The TimeSeries' labels field (1, repeated Label), each Label serialized by
    protobuf (once, when `pairs` keeps them: a device's labels recur in all its series)."""
    out = []
    for pair in labels:
        lb = pairs.get(pair) if pairs is not None else None
        if lb is None:
            msg = _Label(name=pair[0], value=pair[1]).SerializeToString()
            lb = b"\x0a" + _varint(len(msg)) + msg
            if pairs is not None:
                pairs[pair] = lb
        out.append(lb)
    return b"".join(out)


def _stamp(ms: int) -> bytes:
    """The Sample's timestamp field (2, int64), written after its value."""
    return b"\x10" + _varint(ms)


def _sample_head(stamp: bytes) -> bytes:
    """A Sample's framing (TimeSeries field 2) up to its value (Sample field 1, a
    fixed64 double, always written: proto3 reads an explicit 0.0 as the same)."""
    return b"\x12" + _varint(9 + len(stamp)) + b"\x09"


def encode(samples: Iterable[Sample]) -> bytes:
    """One snappy-compressed WriteRequest, one TimeSeries per series with its samples
    in the order given (used by the tests and for a receiver's view; the output
    itself writes series by series, see `_Series`)."""
    series: dict[Labels, list[bytes]] = {}
    for labels, value, ms in samples:
        stamp = _stamp(ms)
        series.setdefault(labels, []).append(_sample_head(stamp) + _DOUBLE(value) + stamp)
    out = []
    for labels, points in series.items():
        body = _label_bytes(labels) + b"".join(points)
        out.append(b"\x0a" + _varint(len(body)) + body)
    return bytes(cramjam.snappy.compress_raw(b"".join(out)))


def decode(body: bytes) -> list[Sample]:
    """The inverse of `encode`: what a receiver reads (used by tests and the bench)."""
    req = WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    return [(tuple((lb.name, lb.value) for lb in t.labels), s.value, s.timestamp)
            for t in req.timeseries for s in t.samples]


_DEVICE_GAUGES = {"device.health": (("privtel_device_uptime_seconds", "uptime_s"),
                                    ("privtel_device_poll_duration_seconds", "poll_duration_s")),
                  "snmp.system": (("privtel_device_uptime_seconds", "uptime_s"),),
                  "host.cpu": (("privtel_device_cpu_utilization_percent", "cpu_util_pct"),),
                  "host.memory": (("privtel_device_memory_used_bytes", "mem_used_bytes"),
                                  ("privtel_device_memory_total_bytes", "mem_total_bytes"))}
_IF_SERIES = tuple((name + ("_total" if kind == "counter" else ""), fld, fld.endswith("_status"))
                   for name, (kind, _, fld) in INTERFACE_SERIES.items())
_IF_NAMES = tuple((name, ()) for name, _, _ in _IF_SERIES)
_IF_CONVERT = tuple((fld, _status if status else _num) for _, fld, status in _IF_SERIES)
_HEALTH_NAMES = ("privtel_device_up", "privtel_device_last_poll_timestamp_seconds",
                 "privtel_device_info")
SeriesNames = tuple[tuple[str, Labels], ...]


def _series_of(r: Record) -> tuple[Labels, Labels, SeriesNames, list[float | None]] | None:
    """The NOC exposition's series for one record (same names and labels as
    `collector.metrics.noc`): its base labels, the extra labels that name its series
    set, each series' (name, extra labels) and the values (None: no sample)."""
    base: Labels = (("tenant", r.tenant), ("site", r.site), ("device", r.device))
    f = r.fields
    if r.name == "if":
        name = f.get("if_name") or f.get("if_descr") or f.get("if_index")
        if name is None or name == "":
            return None
        get = f.get
        return ((*base, ("ifname", str(name)[:64])), (), _IF_NAMES,
                [conv(get(fld)) for fld, conv in _IF_CONVERT])
    gauges = _DEVICE_GAUGES.get(r.name, ())
    values: list[float | None] = [_num(f.get(fld)) for _, fld in gauges]
    names: SeriesNames = tuple((series, ()) for series, _ in gauges)
    extra: Labels = ()
    if r.name == "device.health":
        extra = (("protocol", str(f.get("protocol") or "")[:32]),
                 ("profile", str(f.get("profile") or "")[:64]))
        names = ((_HEALTH_NAMES[0], ()), (_HEALTH_NAMES[1], ()), (_HEALTH_NAMES[2], extra),
                 *names)
        values = [1.0 if f.get("up") in (1, True) else 0.0, float(r.ts), 1.0, *values]
    return base, extra, names, values


def samples_of(r: Record) -> Iterator[Sample]:
    """The samples one record gives, each with its sorted labels and the record's
    poll time."""
    got = _series_of(r)
    if got is None:
        return
    base, _, names, values = got
    ms = round(float(r.ts) * 1000)
    for (name, extra), v in zip(names, values, strict=True):
        if v is not None:
            yield tuple(sorted((("__name__", name), *base, *extra))), v, ms


class _Series:
    """Records straight to encoded TimeSeries, one per sample (as Prometheus' own
    remote-write client sends them). What does not change between polls of one
    record's series set is kept: each series' framing and labels (serialized by
    protobuf) up to its value, and the shard; a sample is then that prefix, its
    value packed as a double and its timestamp. A few hundred ns per sample where
    building protobuf messages took several us; checked against protobuf's own
    parser in the tests."""

    def __init__(self, shards: int, max_cached_series: int = 1_000_000) -> None:
        self.shards, self.max_cached_series = shards, max_cached_series  # ~130 B each
        self._cache: dict[Any, tuple[int, list[bytes]]] = {}
        self._cached_series = 0
        self._pairs: dict[tuple[str, str], bytes] = {}
        self._stamp = (0, b"")  # the last timestamp's encoding: a poll's records share it

    def encode(self, r: Record, ms: int) -> tuple[int, list[bytes]]:
        """(shard, the record's encoded TimeSeries), stamped `ms`."""
        got = _series_of(r)
        if got is None:
            return 0, []
        base, extra, names, values = got
        if self._stamp[0] != ms:
            self._stamp = (ms, _stamp(ms))
        stamp = self._stamp[1]
        key = (r.name, base, extra, len(stamp))
        hit = self._cache.get(key)
        if hit is None:
            if self._cached_series >= self.max_cached_series:
                self._cache.clear()
                self._pairs.clear()
                self._cached_series = 0
            head = _sample_head(stamp)
            prefixes = []
            ordered = tuple(sorted(base))
            # labels go sorted by name; "__name__" leads when every base name sorts after it
            leads = ordered[0][0] > "__name__"
            base_bytes = _label_bytes(ordered, self._pairs)
            for name, more in names:
                if leads and not more:
                    labels = _label_bytes((("__name__", name),), self._pairs) + base_bytes
                else:
                    labels = _label_bytes(tuple(sorted((("__name__", name), *base, *more))),
                                          self._pairs)
                size = len(labels) + len(head) + 8 + len(stamp)
                prefixes.append(b"\x0a" + _varint(size) + labels + head)
            # a series keeps its shard: its base labels name it
            hit = self._cache[key] = (hash(base) % self.shards, prefixes)
            self._cached_series += len(prefixes)
        shard, prefixes = hit
        return shard, [p + _DOUBLE(v) + stamp
                       for p, v in zip(prefixes, values, strict=True) if v is not None]


def _compress(series: list[bytes]) -> bytes:
    """A WriteRequest is its repeated TimeSeries field, so the series joined are one."""
    return bytes(cramjam.snappy.compress_raw(b"".join(series)))


class RemoteWriteMetrics:
    """One set per metrics registry, shared by every remote-write output (label `output`)."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, RemoteWriteMetrics] = (
        weakref.WeakKeyDictionary())

    @classmethod
    def of(cls, registry: CollectorRegistry | None) -> RemoteWriteMetrics:
        if registry is None:
            return cls(None)
        m = cls._by_registry.get(registry)
        if m is None:
            m = cls._by_registry[registry] = cls(registry)
        return m

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.sent = Counter("privtel_remote_write_samples_sent", "Samples a remote-write "
                            "receiver acknowledged", ["output"], registry=r)
        self.failed = Counter("privtel_remote_write_samples_failed", "Samples in a send "
                              "that failed (refused, 5xx, timeout); a retried sample counts "
                              "again", ["output"], registry=r)
        self.dropped = Counter("privtel_remote_write_samples_dropped", "Samples given up on",
                               ["output", "reason"], registry=r)
        self.pending = Gauge("privtel_remote_write_samples_pending", "Samples queued for "
                             "the receiver", ["output"], registry=r)
        self.last_sent = Gauge("privtel_remote_write_last_send_timestamp_seconds", "When a "
                               "send was last acknowledged", ["output"], registry=r)


class _Refused(Exception):
    """The receiver refused the samples for good (4xx other than 429)."""


@dataclass
class _Shard:
    """One sender: its queue, in order, of the series that hash to it."""

    queue: deque[bytes] = field(default_factory=deque)  # encoded TimeSeries, one a sample
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class RemoteWriteOutput(Lifecycle):
    """A post-commit output (see `collector.outputs.base`) with `shards` sender tasks.
    Like Prometheus' own client, a series always goes through the same shard, so its
    samples reach the receiver in order while several requests are in flight."""

    close_grace_s = 5.0
    max_tracked_series = 1_000_000

    def __init__(self, cfg: RemoteWriteConfig, registry: CollectorRegistry | None) -> None:
        if cfg.max_samples_per_send < 1 or cfg.queue_size < cfg.max_samples_per_send:
            raise ValueError("remote write needs 1 <= max_samples_per_send <= queue_size")
        if cfg.shards < 1:
            raise ValueError("remote write needs at least one shard")
        self.cfg, self.name = cfg, cfg.name
        self.metrics = m = RemoteWriteMetrics.of(registry)
        self._sent, self._failed = m.sent.labels(self.name), m.failed.labels(self.name)
        self._pending = m.pending.labels(self.name)
        self._dropped = {r: m.dropped.labels(self.name, r) for r in DROP_REASONS}
        self._shards = [_Shard() for _ in range(cfg.shards)]
        self._series = _Series(cfg.shards)
        self._queued = 0
        self._last_ms: dict[tuple[str, str, str], int] = {}
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def deliver(self, batch: Committed) -> None:
        """Convert and queue; never waits for the receiver."""
        last = self._last_ms
        if len(last) > self.max_tracked_series:
            last.clear()
        stale = full = 0
        room = room0 = max(self.cfg.queue_size - self._queued, 0)
        shards, encode = self._shards, self._series.encode
        for r in batch.records:
            key = (r.tenant, r.device, r.name)
            ms = round(float(r.ts) * 1000)
            held = last.get(key)
            if held is not None and ms < held:
                stale += sum(1 for _ in samples_of(r))
                continue
            last[key] = ms
            k, series = encode(r, ms)
            if len(series) > room:
                full += len(series) - room
                series = series[:room]
            if series:
                shards[k].queue.extend(series)
                room -= len(series)
        if stale:
            self._dropped["out_of_order"].inc(stale)
        if full:
            self._dropped["queue_full"].inc(full)
        self._queued += room0 - room
        self._pending.set(self._queued)
        for shard in shards:
            if shard.queue:
                shard.wake.set()

    async def _start(self) -> None:
        headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                   "X-Prometheus-Remote-Write-Version": "0.1.0", "User-Agent": "privtel",
                   **self.cfg.headers}
        if self.cfg.bearer_token_file is not None:
            token = read_private(self.cfg.bearer_token_file).decode().strip()
            headers["Authorization"] = f"Bearer {token}"
        verify: Any = True
        if self.cfg.url.startswith("https://"):
            verify = tls_context(self.cfg.ca_file, self.cfg.cert_file, self.cfg.key_file)
        self._client = httpx.AsyncClient(headers=headers, verify=verify,
                                         timeout=self.cfg.timeout_s)
        self._tasks = [asyncio.create_task(self._run(shard), name=f"privtel-{self.name}-{i}")
                       for i, shard in enumerate(self._shards)]

    async def _run(self, shard: _Shard) -> None:
        backoff = Backoff(self.cfg.backoff_initial_s, self.cfg.backoff_max_s)
        queue, per_send = shard.queue, self.cfg.max_samples_per_send
        loop = asyncio.get_running_loop()
        while True:
            if not queue:
                if self._closing:
                    return
                shard.wake.clear()
                await shard.wake.wait()
                continue
            # a partial request waits up to `batch_send_deadline_s` for more samples:
            # fewer, fuller requests cost the receiver (and this process) less
            deadline = loop.time() + self.cfg.batch_send_deadline_s
            while len(queue) < per_send and not self._closing:
                left = deadline - loop.time()
                if left <= 0:
                    break
                shard.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(shard.wake.wait(), left)
            n = min(len(queue), per_send)
            pop = queue.popleft
            chunk = [pop() for _ in range(n)]  # still counted in `_queued` until settled
            try:
                body = await asyncio.to_thread(_compress, chunk)
                reason = await self._send(body, n, backoff)
            except Exception as e:  # a bug here must not stop the shard or the collector
                log.error("remote write %s: %d samples dropped: %s", self.name, n,
                          type(e).__name__)
                reason = "error"
            self._queued -= n
            self._pending.set(self._queued)
            if reason is None:
                self._sent.inc(n)
                self.metrics.last_sent.labels(self.name).set(time.time())
            else:
                self._dropped[reason].inc(n)

    async def _send(self, body: bytes, n: int, backoff: Backoff) -> str | None:
        """None once acknowledged, else the drop reason; retries transient failures."""
        assert self._client is not None
        attempt = 0
        while True:
            try:
                resp = await self._client.post(self.cfg.url, content=body)
                if resp.status_code < 300:
                    backoff.reset()
                    return None
                if 400 <= resp.status_code < 500 and resp.status_code != 429:
                    raise _Refused(f"HTTP {resp.status_code}: {resp.text[:200]}")
                why = f"HTTP {resp.status_code}"
            except _Refused as e:
                self._failed.inc(n)
                log.warning("remote write %s: receiver refused %d samples (%s); dropped",
                            self.name, n, e)
                return "rejected"
            except httpx.HTTPError as e:
                why = type(e).__name__
            self._failed.inc(n)
            attempt += 1
            if attempt > self.cfg.max_retries or self._closing:
                log.warning("remote write %s: giving up on %d samples after %d attempts (%s)",
                            self.name, n, attempt, why)
                return "shutdown" if self._closing else "retries_exhausted"
            if attempt == 1:
                log.warning("remote write %s: send failed (%s); retrying", self.name, why)
            await asyncio.sleep(backoff.next())

    async def _close(self) -> None:
        """Send what is queued for up to `close_grace_s`; what is left is counted."""
        self._closing = True
        for shard in self._shards:
            shard.wake.set()
        if self._tasks:
            _, running = await asyncio.wait(self._tasks, timeout=self.close_grace_s)
            for t in running:
                t.cancel()
            for t in running:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        if self._queued:
            self._dropped["shutdown"].inc(self._queued)
            for shard in self._shards:
                shard.queue.clear()
            self._queued = 0
            self._pending.set(0)
        if self._client is not None:
            await self._client.aclose()
