"""Hostile input to the receiver: it keeps running, memory stays bounded, and every case
lands on its own counter. Records go through the real pseudonymiser and leak guard."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time

import psutil
import pytest
from prometheus_client import CollectorRegistry

from agents.runtime import Guard
from agents.syslog.config import Listener, SyslogConfig
from agents.syslog.receiver import SyslogReceiver
from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.record import Record

MAX = 2048


class Sink:
    """The agent's emit, minus the spool: pseudonymise, leak guard, keep. `hold` blocks
    it, as a spool that pushes back would."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.guard = Guard(Pseudonymiser(TenantKey.generate(1)), registry, None)
        self.records: list[Record] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def __call__(self, records: list[Record]) -> None:
        await self.hold.wait()
        self.records.extend(self.guard.apply(records))

    def messages(self) -> list[str]:
        return [str(r.fields.get("message")) for r in self.records]


def config(**kw: object) -> SyslogConfig:
    base: dict[str, object] = dict(listeners=(Listener("udp", "127.0.0.1", 0, "u"),
                                              Listener("tcp", "127.0.0.1", 0, "t")),
                                   max_message_size=MAX)
    base.update(kw)
    return SyslogConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
async def rx():
    registry = CollectorRegistry()
    sink = Sink(registry)
    async with SyslogReceiver(config(), sink, tenant="acme", site="lab",
                              registry=registry) as r:
        yield r, sink, registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def tcp_send(port: int, *chunks: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    for c in chunks:
        writer.write(c)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def until(pred: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def still_alive(r: SyslogReceiver, sink: Sink, tag: str) -> None:
    await tcp_send(r.ports["t"], f"<13>Dec  7 10:00:00 host app: alive-{tag}\n".encode())
    await until(lambda: f"alive-{tag}" in sink.messages())


async def test_random_bytes(rx) -> None:
    r, sink, reg = rx
    rnd = random.Random(3)
    await tcp_send(r.ports["t"], bytes(rnd.randrange(256) for _ in range(200_000)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(50):
            s.sendto(os.urandom(rnd.randrange(1, 1500)), ("127.0.0.1", r.ports["u"]))
    await still_alive(r, sink, "random")
    errors = sum(value(reg, "privtel_agent_syslog_parse_errors_total", reason=k)
                 for k in ("no_pri", "bad_pri", "bad_header", "empty"))
    assert errors >= 50
    assert all(len(m) <= MAX for m in sink.messages())


async def test_truncated_frame_and_short_octet_count(rx) -> None:
    r, sink, reg = rx
    await tcp_send(r.ports["t"], b"<13>Dec  7 10:00:00 host app: cut-line-no-newline")
    await tcp_send(r.ports["t"], b"500 <13>Dec  7 10:00:00 host app: short-frame")
    await until(lambda: {"cut-line-no-newline", "short-frame"} <= set(sink.messages()))
    assert value(reg, "privtel_agent_syslog_anomalies_total", kind="incomplete_line") == 1
    assert value(reg, "privtel_agent_syslog_anomalies_total", kind="short_frame") == 1
    await still_alive(r, sink, "short")


async def test_huge_lines_are_cut_and_memory_stays_bounded(rx) -> None:
    r, sink, reg = rx
    proc = psutil.Process()
    before = proc.memory_info().rss
    line = b"<13>Dec  7 10:00:00 host app: huge " + b"x" * (1 << 20) + b"\n"
    await tcp_send(r.ports["t"], *([line] * 32))       # 32 lines of 1 MiB
    await tcp_send(r.ports["t"], b"<13>" + b"y" * (64 << 20))   # 64 MiB, no newline at all
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"<13>" + b"z" * 60_000, ("127.0.0.1", r.ports["u"]))
    await still_alive(r, sink, "huge")
    grown = proc.memory_info().rss - before
    assert grown < 48 << 20, f"RSS grew by {grown >> 20} MiB"
    await until(lambda: value(reg, "privtel_agent_syslog_anomalies_total",
                              kind="truncated") >= 34)
    cut = [r for r in sink.records if r.fields.get("truncated")]
    assert len(cut) >= 34 and all(len(str(r.fields["message"])) <= MAX for r in cut)
    assert all(int(r.fields["octets"]) > MAX for r in cut)  # type: ignore[arg-type]


async def test_invalid_utf8_and_nul(rx) -> None:
    r, sink, reg = rx
    await tcp_send(r.ports["t"], b"<13>Dec  7 10:00:00 host app: bad-utf8 \xc3\x28 \xff\n",
                   b"<13>Dec  7 10:00:00 host app: nul-here \x00\x00 end\n")
    await until(lambda: len(sink.records) >= 2)
    assert value(reg, "privtel_agent_syslog_anomalies_total", kind="invalid_utf8") == 1
    assert value(reg, "privtel_agent_syslog_anomalies_total", kind="nul_bytes") == 1
    assert "nul-here \u2400\u2400 end" in sink.messages()
    assert not any("\0" in m for m in sink.messages())


async def test_flood_from_one_source_is_shed_and_counted() -> None:
    registry = CollectorRegistry()
    sink = Sink(registry)
    sent = 5000
    async with SyslogReceiver(config(rate_limit=200.0, rate_burst=200.0), sink, tenant="acme",
                              site="lab", registry=registry) as r:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(sent):
                s.sendto(b"<13>flood %d" % i, ("127.0.0.1", r.ports["u"]))
                if i % 500 == 0:
                    await asyncio.sleep(0)
        received = "privtel_agent_syslog_received_total"
        await until(lambda: value(registry, received, listener="u", protocol="udp")
                    + value(registry, "privtel_agent_syslog_dropped_total", reason="kernel")
                    >= sent)
    shed = value(registry, "privtel_agent_syslog_dropped_total", reason="rate_limit")
    kernel = value(registry, "privtel_agent_syslog_dropped_total", reason="kernel")
    assert shed > 0
    assert len(sink.records) + shed + kernel == sent
    assert value(registry, "privtel_agent_syslog_rejected_total", listener="u",
                 protocol="udp") == shed


async def test_backpressure_tcp_waits_udp_counts() -> None:
    registry = CollectorRegistry()
    sink = Sink(registry)
    sink.hold.clear()  # the spool pushes back
    async with SyslogReceiver(config(queue=100), sink, tenant="acme", site="lab",
                              registry=registry) as r:
        n = 20_000
        frames = b"".join(b"<13>Dec  7 10:00:00 host app: tcp-%d\n" % i for i in range(n))
        sender = asyncio.create_task(tcp_send(r.ports["t"], frames))
        await asyncio.sleep(0.5)
        # the reader stopped: one read in the hand-over, one waiting for room
        read = value(registry, "privtel_agent_syslog_received_total", listener="t",
                     protocol="tcp")
        assert read <= 100 + 2 * 65536 // 38 and len(r.handover) <= 100 + 2 * 65536 // 38
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(50):
                s.sendto(b"<13>udp-%d" % i, ("127.0.0.1", r.ports["u"]))
        await until(lambda: value(registry, "privtel_agent_syslog_dropped_total",
                                  reason="queue_full") >= 50)
        sink.hold.set()
        await asyncio.wait_for(sender, 30)
        await until(lambda: sum(m.startswith("tcp-") for m in sink.messages()) == n)
    assert [m for m in sink.messages() if m.startswith("tcp-")] == [f"tcp-{i}"
                                                                     for i in range(n)]


async def test_close_hands_over_everything_read() -> None:
    registry = CollectorRegistry()
    sink = Sink(registry)
    sink.hold.clear()
    r = SyslogReceiver(config(queue=100), sink, tenant="acme", site="lab", registry=registry)
    await r.start()
    frames = b"".join(b"<13>Dec  7 10:00:00 host app: c-%d\n" % i for i in range(20_000))
    sender = asyncio.create_task(tcp_send(r.ports["t"], frames))
    await until(lambda: len(r.handover) > 100)  # a reader is waiting for room
    closing = asyncio.create_task(r.close())
    await asyncio.sleep(0.2)
    sink.hold.set()
    await asyncio.wait_for(closing, 20)
    await r.close()  # idempotent
    sender.cancel()
    read = value(registry, "privtel_agent_syslog_received_total", listener="t", protocol="tcp")
    assert read > 100 and len(sink.records) == read
    assert value(registry, "privtel_agent_syslog_dropped_total", reason="shutdown") == 0


async def test_kernel_drops_are_counted_from_so_rxq_ovfl() -> None:
    registry = CollectorRegistry()
    sink = Sink(registry)
    sent = 3000
    async with SyslogReceiver(config(receive_buffer=4096), sink, tenant="acme", site="lab",
                              registry=registry) as r:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(sent):  # the loop does not run meanwhile: the socket overflows
                s.sendto(b"<13>Dec  7 10:00:00 host app: burst %d" % i,
                         ("127.0.0.1", r.ports["u"]))
            await asyncio.sleep(0.2)
            s.sendto(b"<13>after the burst", ("127.0.0.1", r.ports["u"]))  # reports the count
        received = "privtel_agent_syslog_received_total"
        kernel = "privtel_agent_syslog_dropped_total"
        await until(lambda: value(registry, received, listener="u", protocol="udp")
                    + value(registry, kernel, reason="kernel") >= sent + 1)
    got = value(registry, received, listener="u", protocol="udp")
    dropped = value(registry, kernel, reason="kernel")
    assert dropped > 0 and got + dropped == sent + 1
    assert len(sink.records) == got


async def test_message_that_outgrows_the_record_limit_is_counted_alone() -> None:
    """A sender named `ab` whose line is `ab ab ab ...`: each name becomes a token, the
    line outgrows a record's string limit; that record is dropped and counted, the
    others of its batch are kept."""
    registry = CollectorRegistry()
    sink = Sink(registry)
    async with SyslogReceiver(config(max_message_size=16384), sink, tenant="acme",
                              site="lab", registry=registry) as r:
        bomb = b"<13>Dec  7 10:00:00 ab app: " + b"ab " * 5000
        await tcp_send(r.ports["t"], b"<13>Dec  7 10:00:00 ab app: before\n", bomb + b"\n",
                       b"<13>Dec  7 10:00:00 ab app: after\n")
        await until(lambda: value(registry, "privtel_agent_syslog_dropped_total",
                                  reason="invalid_record") == 1)
        await until(lambda: {"before", "after"} <= set(sink.messages()))
    assert len(sink.records) == 2


async def test_unknown_senders_dropped_when_configured() -> None:
    registry = CollectorRegistry()
    sink = Sink(registry)
    async with SyslogReceiver(config(unknown="drop"), sink, tenant="acme", site="lab",
                              registry=registry) as r:
        await tcp_send(r.ports["t"], b"<13>Dec  7 10:00:00 host app: from a stranger\n")
        await until(lambda: value(registry, "privtel_agent_syslog_dropped_total",
                                  reason="unknown_sender") == 1)
        assert r.senders.unknown == {"127.0.0.1"}
    assert sink.records == []
    assert value(registry, "privtel_agent_syslog_rejected_total", listener="t",
                 protocol="tcp") == 1


async def test_spool_errors_are_retried_without_loss_or_duplicates() -> None:
    registry = CollectorRegistry()
    sink = Sink(registry)
    failures = [3]

    async def flaky(records: list[Record]) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise OSError("disk full")
        await sink(records)

    async with SyslogReceiver(config(), flaky, tenant="acme", site="lab",
                              registry=registry) as r:
        n = 5000
        await tcp_send(r.ports["t"], b"".join(
            b"<13>Dec  7 10:00:00 host app: retry-%d\n" % i for i in range(n)))
        await until(lambda: len(sink.records) >= n)
    assert failures[0] == 0
    assert sink.messages() == [f"retry-{i}" for i in range(n)]
