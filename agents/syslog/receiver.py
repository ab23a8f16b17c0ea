"""The syslog receiver: listeners -> parse -> `log` records -> bounded hand-over -> emit.

`emit` is the agent's sink (pseudonymise -> leak guard -> spool), the same one
the scheduler and the trap receiver use. Records are handed over in batches by
one task, so the spool sees few large commits rather than one per message.

Backpressure and loss. Records read but not yet accepted by `emit` wait in a
bounded hand-over (`[syslog] queue`). TCP and TLS readers wait for room before
they read on, so while the spool pushes back (slow disk, or an error `emit`
raises, retried) the kernel's buffers fill and the senders are slowed, and
nothing is lost. UDP cannot push back: a datagram that finds the hand-over full
is dropped and counted (`reason="queue_full"`), and so are those the kernel
dropped because the socket's receive queue overflowed (`reason="kernel"`, read
from SO_RXQ_OVFL on every datagram). Every other loss has its own reason:
`rate_limit` (a sender over `[syslog] rate_limit`), `unknown_sender` (with
`unknown = "drop"`), `invalid_record` (a record the pseudonymiser could not
rebuild within the record limits), `connections` (over `max_connections`),
`tls_handshake` (a TLS connection refused: no or a wrong client certificate,
not TLS at all, or too slow), `shutdown` (left over when `close()` timed out).

A record is read past (the TCP stream moves on) only once it is in the
hand-over; it is in the spool once `emit` returned. An agent killed in between
loses what was in the hand-over and never stores anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from agents.pollers import Device
from agents.syslog.config import Listener, SyslogConfig
from agents.syslog.senders import Senders, canonical_address
from pipelines.config import require_private
from pipelines.lifecycle import Lifecycle
from pipelines.record import Kind, Record, RecordError
from pipelines.syslog import FrameDecoder, SyslogParser
from pipelines.vocab import RecordName

log = logging.getLogger(__name__)

Emit = Callable[[list[Record]], Awaitable[None]]
RECORD_NAME = RecordName.SYSLOG
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux
UDP_MAX = 65535
READ_CHUNK = 65536
UDP_BURST = 256          # datagrams read per wake-up before yielding to the loop
BATCH = 2000
BATCH_DELAY_S = 0.02
RETRY_S = (0.05, 2.0)
_TS_MAX = 4102444800.0
TLS_HANDSHAKE_S = 10.0
CLOSE_GRACE_S = 1.0


class _Metrics:
    def __init__(self, r: CollectorRegistry) -> None:
        lp = ["listener", "protocol"]
        self.received = Counter("privtel_agent_syslog_received", "Syslog messages received",
                                lp, registry=r)
        self.parsed = Counter("privtel_agent_syslog_parsed", "Syslog messages parsed into "
                              "fields (the rest are kept raw with parse_error)", lp, registry=r)
        self.rejected = Counter("privtel_agent_syslog_rejected", "Syslog messages not turned "
                                "into records (see dropped_total for why)", lp, registry=r)
        self.bytes = Counter("privtel_agent_syslog_bytes", "Syslog bytes received", lp,
                             registry=r)
        self.parse_errors = Counter("privtel_agent_syslog_parse_errors", "Messages kept raw, "
                                    "by reason", ["reason"], registry=r)
        self.anomalies = Counter("privtel_agent_syslog_anomalies", "Oddities in what senders "
                                 "sent (truncated, invalid_utf8, nul_bytes, short_frame, "
                                 "incomplete_line, bad_octet_count)", ["kind"], registry=r)
        self.dropped = Counter("privtel_agent_syslog_dropped", "Syslog messages lost, by "
                               "reason", ["reason"], registry=r)
        self.senders = Gauge("privtel_agent_syslog_senders", "Distinct senders seen",
                             ["kind"], registry=r)
        self.connections = Gauge("privtel_agent_syslog_connections", "Open TCP/TLS "
                                 "connections", registry=r)
        self.queued = Gauge("privtel_agent_syslog_queued_records", "Records read but not "
                            "yet spooled", registry=r)


class _Bucket:
    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens, self.last = tokens, last


class _Handover:
    """Records between the listeners and `emit`: bounded, one batch in flight."""

    def __init__(self, emit: Emit, limit: int, metrics: _Metrics) -> None:
        self.emit, self.limit, self.m = emit, limit, metrics
        self.pending: list[Record] = []
        self.inflight = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False

    def __len__(self) -> int:
        return len(self.pending) + self.inflight

    def offer(self, records: list[Record]) -> int:
        """UDP: take what fits now; the number taken."""
        room = self.limit - len(self)
        if room <= 0:
            return 0
        take = records if len(records) <= room else records[:room]
        self.pending.extend(take)
        self._wake.set()
        self._update()
        return len(take)

    async def put(self, records: list[Record]) -> None:
        """TCP/TLS: wait for room first; the caller reads no further meanwhile."""
        while len(self) >= self.limit and not self._closing:
            self._room.clear()
            await self._room.wait()
        self.pending.extend(records)
        self._wake.set()
        self._update()

    def _update(self) -> None:
        if len(self) >= self.limit:
            self._room.clear()
        else:
            self._room.set()

    async def run(self) -> None:
        delay = RETRY_S[0]
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
            if len(self.pending) < BATCH and not self._closing:
                await asyncio.sleep(BATCH_DELAY_S)  # gather a batch
            batch = self.pending[:BATCH]
            del self.pending[:BATCH]
            self.inflight = len(batch)
            try:
                await self._emit(batch)
                delay = RETRY_S[0]
            except asyncio.CancelledError:
                self.pending[:0] = batch
                raise
            except Exception as e:  # the spool pushes back: keep the batch, try again
                self.pending[:0] = batch
                log.warning("syslog records not accepted by the spool (%s); retrying in "
                            "%.2f s", type(e).__name__, delay)
                self.inflight = 0
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_S[1])
                continue
            finally:
                self.inflight = 0
                self._update()
                self.m.queued.set(len(self.pending))

    async def _emit(self, batch: list[Record]) -> None:
        try:
            await self.emit(batch)
        except RecordError:
            # one record grew past the limits when pseudonymised; the rest go on
            for i, r in enumerate(batch):
                try:
                    await self.emit([r])
                except RecordError:
                    self.m.dropped.labels("invalid_record").inc()
                except BaseException:
                    del batch[:i]  # those are spooled; `run` keeps only the rest
                    raise

    def release(self) -> None:
        """Closing: readers waiting for room hand their records over without waiting."""
        self._closing = True
        self._room.set()

    async def drain(self, timeout: float) -> None:
        """Closing: give `run` until timeout to hand the rest to `emit`."""
        self.release()
        deadline = time.monotonic() + timeout
        while len(self) and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.01)


class _Source:
    """One listener's parsing of frames into records, with its counters."""

    def __init__(self, rx: SyslogReceiver, listener: Listener) -> None:
        self.rx, self.listener = rx, listener
        m = rx.metrics
        lv = (listener.name, listener.protocol)
        self.received = m.received.labels(*lv)
        self.parsed = m.parsed.labels(*lv)
        self.rejected = m.rejected.labels(*lv)
        self.bytes = m.bytes.labels(*lv)
        self.transport = listener.protocol

    def records(self, frames: Sequence[tuple[bytes, int]], addr: str) -> list[Record]:
        rx = self.rx
        now = time.time()
        self.received.inc(len(frames))
        if rx.cfg.rate_limit > 0:
            allowed = rx.allow(addr, len(frames), now)
            if allowed < len(frames):
                rx.metrics.dropped.labels("rate_limit").inc(len(frames) - allowed)
                self.rejected.inc(len(frames) - allowed)
                frames = frames[:allowed]
        out: list[Record] = []
        parse, lookup = rx.parser.parse, rx.senders.lookup
        tenant, transport = rx.tenant, self.transport
        errors = 0
        nbytes = 0
        unknown_dropped = 0
        for data, size in frames:
            nbytes += size
            ts, fields = parse(data, now, size=size)
            if "parse_error" in fields:
                errors += 1
                rx.metrics.parse_errors.labels(fields["parse_error"]).inc()
            if "truncated" in fields or "invalid_utf8" in fields or "nul_bytes" in fields:
                rx.count_anomalies(fields)
            host = fields.get("hostname")
            dev = lookup(addr, host if isinstance(host, str) else None)
            if dev is None:
                unknown_dropped += 1
                continue
            fields["source_ip"] = addr
            fields["transport"] = transport
            if ts is None or not 0 < ts < _TS_MAX:
                ts = now
            out.append(Record(Kind.LOG, tenant, dev[1], dev[0], RECORD_NAME, fields, ts))
        self.bytes.inc(nbytes)
        self.parsed.inc(len(frames) - errors)
        if unknown_dropped:
            rx.metrics.dropped.labels("unknown_sender").inc(unknown_dropped)
            self.rejected.inc(unknown_dropped)
        return out


_ANOMALY_FIELDS = ("truncated", "invalid_utf8", "nul_bytes")


class _Udp:
    """A UDP listener reading bursts of datagrams per wake-up (recvmsg, for SO_RXQ_OVFL)."""

    def __init__(self, rx: SyslogReceiver, listener: Listener) -> None:
        self.rx, self.listener = rx, listener
        self.source = _Source(rx, listener)
        family = socket.AF_INET6 if ":" in listener.address else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rx.cfg.receive_buffer)
            with contextlib.suppress(OSError):  # root may go past net.core.rmem_max
                s.setsockopt(socket.SOL_SOCKET, 33, rx.cfg.receive_buffer)  # SO_RCVBUFFORCE
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
                self.ovfl = True
            except OSError:
                self.ovfl = False
            s.bind((listener.address, listener.port))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.port = int(s.getsockname()[1])
        self.kernel_drops = 0
        self.dropped_kernel = rx.metrics.dropped.labels("kernel")
        self.dropped_queue = rx.metrics.dropped.labels("queue_full")
        asyncio.get_running_loop().add_reader(s.fileno(), self._ready)

    def _ready(self) -> None:
        sock, anc = self.sock, socket.CMSG_SPACE(4) if self.ovfl else 0
        by_addr: dict[str, list[tuple[bytes, int]]] = {}
        for _ in range(UDP_BURST):
            try:
                data, ancdata, _flags, peer = sock.recvmsg(UDP_MAX, anc)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # ICMP errors surface here on some kernels
                log.debug("syslog udp receive error: %s", type(e).__name__)
                break
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                    total = struct.unpack("=I", value[:4])[0]
                    if total > self.kernel_drops:
                        self.dropped_kernel.inc(total - self.kernel_drops)
                        self.kernel_drops = total
            if not data:
                continue
            by_addr.setdefault(peer[0], []).append(
                (data[: self.rx.cfg.max_message_size], len(data)))
        for peer_addr, frames in by_addr.items():
            addr = canonical_address(peer_addr)
            records = self.source.records(frames, addr)
            if records:
                taken = self.rx.handover.offer(records)
                if taken < len(records):
                    self.dropped_queue.inc(len(records) - taken)
                    self.source.rejected.inc(len(records) - taken)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


class _Stream:
    """A TCP or TLS listener; each connection reads only while the hand-over has room."""

    def __init__(self, rx: SyslogReceiver, listener: Listener) -> None:
        self.rx, self.listener = rx, listener
        self.source = _Source(rx, listener)
        self.server: asyncio.Server | None = None
        self.port = listener.port
        self.tasks: set[asyncio.Task[Any]] = set()
        self.ctx: ssl.SSLContext | None = None

    async def start(self) -> None:
        self.ctx = self.rx.tls_context() if self.listener.protocol == "tls" else None
        sock = socket.socket(socket.AF_INET6 if ":" in self.listener.address
                             else socket.AF_INET, socket.SOCK_STREAM)
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.listener.address, self.listener.port))
        except BaseException:
            sock.close()
            raise
        # TLS is started per connection (not by the server) so a failed handshake is counted
        self.server = await asyncio.start_server(self._conn, sock=sock, limit=READ_CHUNK)
        self.port = int(sock.getsockname()[1])

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rx = self.rx
        task = asyncio.current_task()
        if rx.connections >= rx.cfg.max_connections:
            rx.metrics.dropped.labels("connections").inc()
            writer.close()
            return
        if task is not None:
            self.tasks.add(task)
        rx.connections += 1
        rx.metrics.connections.set(rx.connections)
        peer = writer.get_extra_info("peername")
        addr = canonical_address(str(peer[0])) if peer else "0.0.0.0"
        dec = FrameDecoder(rx.cfg.max_message_size)
        try:
            if self.ctx is not None:
                try:
                    await writer.start_tls(self.ctx, ssl_handshake_timeout=TLS_HANDSHAKE_S)
                except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as e:
                    rx.metrics.dropped.labels("tls_handshake").inc()
                    log.info("syslog TLS handshake failed: %s", type(e).__name__)
                    return
            while True:
                try:
                    chunk = await reader.read(READ_CHUNK)
                except (ConnectionError, ssl.SSLError, OSError) as e:
                    log.debug("syslog connection error: %s", type(e).__name__)
                    chunk = b""
                frames = dec.feed(chunk) if chunk else dec.end()
                if dec.anomalies:
                    rx.count(dec.anomalies)
                    dec.anomalies.clear()
                if frames:
                    records = self.source.records(frames, addr)
                    if records:
                        await rx.handover.put(records)
                if not chunk:
                    break
        except asyncio.CancelledError:
            pass  # closing; asyncio's stream callback would log a cancelled handler
        finally:
            rx.connections -= 1
            rx.metrics.connections.set(rx.connections)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            if task is not None:
                self.tasks.discard(task)

    async def close(self) -> None:
        """Stop listening; connections get a moment to read what their senders already
        sent (a sender that closed is read to its end), then are cut."""
        if self.server is not None:
            self.server.close()
            if self.tasks:
                await asyncio.wait(list(self.tasks), timeout=CLOSE_GRACE_S)
            for t in list(self.tasks):
                t.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            self.server = None


class SyslogReceiver(Lifecycle):
    """Binds every configured listener on `start()`; `close()` is idempotent and hands
    what was read to `emit` before it returns (within `drain_timeout_s`)."""

    def __init__(self, cfg: SyslogConfig, emit: Emit, *, tenant: str, site: str,
                 devices: Sequence[Device] = (), registry: CollectorRegistry | None = None,
                 drain_timeout_s: float = 5.0) -> None:
        self.cfg, self.tenant = cfg, tenant
        self.metrics = _Metrics(registry or CollectorRegistry())
        self.parser = SyslogParser(tz=cfg.tz, max_size=cfg.max_message_size)
        self.senders = Senders(devices, site, cfg.unknown)
        self.handover = _Handover(emit, cfg.queue, self.metrics)
        self.connections = 0
        self.ports: dict[str, int] = {}
        self._drain_timeout = drain_timeout_s
        self._buckets: dict[str, _Bucket] = {}
        self._udp: list[_Udp] = []
        self._streams: list[_Stream] = []
        self._task: asyncio.Task[None] | None = None
        self._gauges: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        self._task = asyncio.create_task(self.handover.run(), name="privtel-syslog-handover")
        self._gauges = asyncio.create_task(self._sample(), name="privtel-syslog-gauges")
        try:
            for ls in self.cfg.listeners:
                if ls.protocol == "udp":
                    u = _Udp(self, ls)
                    self._udp.append(u)
                    self.ports[ls.name] = u.port
                else:
                    st = _Stream(self, ls)
                    await st.start()
                    self._streams.append(st)
                    self.ports[ls.name] = st.port
        except BaseException:
            await self.close()
            raise
        log.info("syslog listening", extra={"listeners": sorted(
            f"{ls.protocol}/{self.ports.get(ls.name)}" for ls in self.cfg.listeners)})

    def set_devices(self, devices: Sequence[Device]) -> None:
        """A reloaded device list (SIGHUP)."""
        self.senders.set_devices(devices)

    def tls_context(self) -> ssl.SSLContext:
        t = self.cfg.tls
        assert t is not None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH,
                                         cafile=str(t.client_ca_file) if t.client_ca_file
                                         else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        require_private(str(t.key_file), t.key_file.stat().st_mode)
        ctx.load_cert_chain(str(t.cert_file), str(t.key_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if t.client_ca_file else ssl.CERT_NONE
        return ctx

    def allow(self, addr: str, n: int, now: float) -> int:
        """Per-sender token bucket: how many of `n` messages may pass."""
        rate, burst = self.cfg.rate_limit, self.cfg.rate_burst
        b = self._buckets.get(addr)
        if b is None:
            if len(self._buckets) >= 65536:
                self._buckets.clear()
            b = self._buckets[addr] = _Bucket(burst, now)
        b.tokens = min(burst, b.tokens + (now - b.last) * rate)
        b.last = now
        take = min(n, int(b.tokens))
        b.tokens -= take
        return take

    def count(self, anomalies: dict[str, int]) -> None:
        for kind, n in anomalies.items():
            self.metrics.anomalies.labels(kind).inc(n)

    def count_anomalies(self, fields: dict[str, Any]) -> None:
        for k in _ANOMALY_FIELDS:
            if k in fields:
                self.metrics.anomalies.labels(k).inc()

    async def _sample(self) -> None:
        while True:
            self.metrics.senders.labels("known").set(len(self.senders.known))
            self.metrics.senders.labels("unknown").set(len(self.senders.unknown))
            self.metrics.queued.set(len(self.handover))
            await asyncio.sleep(1.0)

    async def _close(self) -> None:
        for u in self._udp:
            u.close()
        self.handover.release()
        await asyncio.sleep(0)  # readers woken from a wait for room hand over what they read
        for st in self._streams:
            await st.close()
        if self._task is not None:
            await self.handover.drain(self._drain_timeout)
        for t in (self._task, self._gauges):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if len(self.handover):
            self.metrics.dropped.labels("shutdown").inc(len(self.handover))
            log.warning("syslog records not spooled at shutdown", extra={
                "records": len(self.handover)})
