"""The scheduler with an in-memory fake poller: isolation, backoff, limit, reload."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from agents.pollers import Device, health_record
from agents.scheduler import Scheduler, SchedulerError
from pipelines.record import Record


def dev(name: str, interval: float = 0.05, protocol: str = "fake") -> Device:
    return Device(name=name, address="127.0.0.1", port=1, protocol=protocol,
                  interval_s=interval, tenant="acme", site="lab", options=None)


class FakePoller:
    """Behaviour per device name: 'dead*' is down, 'block*' waits for its gate."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.running = 0
        self.max_running = 0
        self.calls: Counter[str] = Counter()
        self.closed = False
        self.forgotten: list[str] = []
        self.settled_calls: list[tuple[str, bool]] = []

    async def poll(self, device: Device) -> list[Record]:
        import time
        started = time.time()
        self.calls[device.name] += 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if device.name.startswith("block"):
                await self.gates.setdefault(device.name, asyncio.Event()).wait()
            await asyncio.sleep(0)
            up = not device.name.startswith("dead")
            return [health_record(device, up=up, reason=None if up else "timeout",
                                  started=started)]
        finally:
            self.running -= 1

    async def settled(self, device: Device, kept: bool) -> None:
        self.settled_calls.append((device.name, kept))

    async def close(self) -> None:
        self.closed = True

    def forget(self, name: str) -> None:
        self.forgotten.append(name)


class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    async def __call__(self, records: list[Record]) -> None:
        self.records.extend(records)

    def count(self, name: str) -> int:
        return sum(1 for r in self.records if r.device == name)


async def until(cond, timeout: float = 10.0) -> None:
    async def wait() -> None:
        while not cond():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(wait(), timeout)


def make(devices, sink, fake, **kw) -> tuple[Scheduler, CollectorRegistry]:
    reg = CollectorRegistry()
    s = Scheduler(devices, sink, registry=reg, pollers={"fake": fake},
                  rng=random.Random(1), **kw)
    return s, reg


async def test_blocked_device_does_not_delay_others() -> None:
    fake, sink = FakePoller(), Sink()
    s, _ = make([dev("block-1"), dev("ok-1")], sink, fake)
    await s.start()
    await until(lambda: sink.count("ok-1") >= 5)
    assert sink.count("block-1") == 0  # still in its first poll, yet ok-1 kept its schedule
    fake.gates["block-1"].set()
    await until(lambda: sink.count("block-1") >= 1)
    await s.close()


async def test_dead_device_backs_off_and_is_counted() -> None:
    fake, sink = FakePoller(), Sink()
    s, reg = make([dev("dead-1", 0.02), dev("ok-1", 0.02)], sink, fake, backoff_max_s=10)
    await s.start()
    await until(lambda: sink.count("ok-1") >= 40)
    await s.close()
    # backoff doubles the wait after each failure: 0.02, 0.04, 0.08 ... so far fewer polls
    assert 1 <= fake.calls["dead-1"] < fake.calls["ok-1"] / 3
    assert s.stats() == {}  # closed
    assert reg.get_sample_value("privtel_polls_total",
                                {"protocol": "fake", "result": "timeout"}) == fake.calls["dead-1"]
    assert reg.get_sample_value("privtel_devices_in_backoff") == 1
    assert reg.get_sample_value("privtel_poll_duration_seconds_count", {"protocol": "fake"}) > 40


async def test_concurrency_limit() -> None:
    fake, sink = FakePoller(), Sink()
    names = [f"block-{i}" for i in range(5)]
    s, reg = make([dev(n) for n in names], sink, fake, max_concurrent=2)
    await s.start()
    await until(lambda: fake.running == 2)
    await asyncio.sleep(0.1)
    assert fake.max_running == 2
    assert reg.get_sample_value("privtel_polls_in_flight") == 2
    for n in names:
        fake.gates.setdefault(n, asyncio.Event()).set()
    await until(lambda: all(sink.count(n) >= 1 for n in names))
    await s.close()
    assert fake.max_running == 2


async def test_reload_keeps_in_flight_poll_and_adds_new() -> None:
    fake, sink = FakePoller(), Sink()
    s, _ = make([dev("block-a")], sink, fake)
    await s.start()
    await until(lambda: fake.running == 1)
    s.reload([dev("ok-b")])  # block-a removed while its poll is in flight
    await until(lambda: sink.count("ok-b") >= 2)
    fake.gates["block-a"].set()
    await until(lambda: sink.count("block-a") == 1)  # the in-flight poll was not dropped
    calls = fake.calls["block-a"]
    await until(lambda: sink.count("ok-b") >= 6)
    assert fake.calls["block-a"] == calls == 1  # and it is not polled again
    assert set(s.stats()) == {"ok-b"}
    assert fake.forgotten == ["block-a"]
    await s.close()


async def test_emit_failure_does_not_stop_polling() -> None:
    fake = FakePoller()
    seen: list[int] = []

    async def bad_emit(records: list[Record]) -> None:
        seen.append(len(records))
        raise RuntimeError("sink down")

    s, _ = make([dev("ok-1")], bad_emit, fake)
    await s.start()
    await until(lambda: len(seen) >= 3)
    await s.close()
    # the poller is told each time that the spool did not take the records
    assert fake.settled_calls[:3] == [("ok-1", False)] * 3


async def test_poller_is_told_when_records_were_kept() -> None:
    fake, sink = FakePoller(), Sink()
    s, _ = make([dev("ok-1")], sink, fake)
    await s.start()
    await until(lambda: len(fake.settled_calls) >= 2)
    await s.close()
    assert set(fake.settled_calls) == {("ok-1", True)}
    assert sink.count("ok-1") >= 2


async def test_poll_once_and_close_closes_own_pollers() -> None:
    fake, sink = FakePoller(), Sink()
    s, _ = make([dev("ok-1"), dev("dead-2")], sink, fake)
    recs = await s.poll_once()
    assert sorted((r.device, r.fields["up"]) for r in recs) == [("dead-2", 0), ("ok-1", 1)]
    await s.close()
    assert not fake.closed  # pollers passed in belong to the caller


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        Scheduler([], Sink(), registry=CollectorRegistry(), max_concurrent=0)
    with pytest.raises(ValueError, match="spread"):
        Scheduler([], Sink(), registry=CollectorRegistry(), spread=2)
    with pytest.raises(SchedulerError, match="duplicate device name"):
        Scheduler([dev("a"), dev("a")], Sink(), registry=CollectorRegistry())


async def test_unknown_protocol_is_an_error() -> None:
    s = Scheduler([dev("x", protocol="nope")], Sink(), registry=CollectorRegistry())
    with pytest.raises(SchedulerError, match="no poller registered for protocol 'nope'"):
        await s.start()
    await s.close()


async def test_first_polls_spread_over_interval() -> None:
    fake, sink = FakePoller(), Sink()
    s, _ = make([dev(f"ok-{i}", interval=1000) for i in range(20)], sink, fake)
    await s.start()
    dues = sorted(slot.next_due for slot in s._slots.values())
    await s.close()
    assert dues[-1] - dues[0] > 100  # not all at once: spread across the 1000 s interval
    assert sink.records == []


async def test_sighup_reloads_devices_and_survives_a_bad_config() -> None:
    import os
    import signal

    fake, sink = FakePoller(), Sink()
    s, _ = make([dev("ok-a")], sink, fake)
    await s.start()
    configs = [[dev("ok-a"), dev("ok-b")], None]

    def load() -> list[Device]:
        c = configs.pop(0)
        if c is None:
            raise ValueError("agent.toml: devices[0].name: is required")
        return c

    s.install_sighup(load)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: sink.count("ok-b") >= 2)
        os.kill(os.getpid(), signal.SIGHUP)  # the broken config keeps the running set
        await until(lambda: not configs)
        n = sink.count("ok-a")
        await until(lambda: sink.count("ok-a") > n + 2)
        assert set(s.stats()) == {"ok-a", "ok-b"}
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await s.close()


async def test_a_device_whose_records_cannot_be_built_keeps_its_loop() -> None:
    """A device with a tenant Record refuses: the poller raises, the health fallback raises
    again; the loop counts the failed cycle and polls again instead of dying."""
    fake = FakePoller()
    bad = Device(name="bad-tenant", address="127.0.0.1", port=1, protocol="fake",
                 interval_s=0.05, tenant="Not A Tenant", site="lab", options=None)
    s, reg = make([bad, dev("ok-1")], Sink(), fake)
    await s.start()
    await until(lambda: fake.calls["bad-tenant"] >= 3 and fake.calls["ok-1"] >= 3)
    await s.close()
    assert (reg.get_sample_value("privtel_poll_loop_errors_total") or 0) >= 2


def test_config_refuses_names_records_would_refuse(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from agents.config import parse
    from pipelines.config import ConfigError

    head = ('[agent]\nid = "edge-1"\ntenant = "{t}"\nsite = "{s}"\nstate_dir = "st"\n'
            '[keys]\nsigning_key = "k"\ncollector_public_key = "c"\ntenant_key = "t"\n'
            '[mqtt]\nurl = "mqtt://127.0.0.1"\n')
    for tenant, site, key, bad in (("Acme Corp", "hq", "agent.tenant", "Acme Corp"),
                                   ("acme", "HQ 1", "agent.site", "HQ 1"),
                                   ("acme", "a/b", "agent.site", "a/b")):
        with pytest.raises(ConfigError) as e:
            parse(head.format(t=tenant, s=site), "agent.toml", tmp_path)
        assert key in str(e.value) and bad not in str(e.value)
