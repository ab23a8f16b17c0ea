"""The NOC view shared through the store: two workers, liveness, restart, both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from factories import BACKENDS
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.liveness import LivenessSettings, SharedNoc
from collector.metrics.noc import HEARTBEAT_NAME, NocMetrics
from collector.store import open_db
from pipelines.record import Kind, Record

T0 = 1_750_000_000.0
DEVICES = [f"tok{i}" for i in range(12)]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Worker:
    def __init__(self, url: str, wid: str, clock: Clock, **kw: float) -> None:
        self.shared = SharedNoc(open_db(url), LivenessSettings(worker_id=wid, refresh_min_s=0,
                                                               **kw), clock=clock)
        self.reg = CollectorRegistry()
        self.noc = NocMetrics(self.reg, shared=self.shared, clock=clock)
        self.shared.register()

    def commit(self, records: list[Record], agent: str = "agent1") -> None:
        self.shared.commit(agent, "acme", records, self.noc)

    def series(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out = {}
        for fam in text_string_to_metric_families(generate_latest(self.reg).decode()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def close(self) -> None:
        self.shared.deregister()
        self.shared.db.close()


def health(dev: str, ts: float, up: int = 1, reason: str | None = None) -> Record:
    return Record(Kind.HEALTH, "acme", "site1", dev, "device.health",
                  {"up": up, "reason": reason, "protocol": "snmp"}, ts=ts)


def iface(dev: str, ts: float, idx: int, name: str, octets: int) -> Record:
    return Record(Kind.METRIC, "acme", "site1", dev, "if",
                  {"if_index": idx, "if_name": name, "in_octets": octets, "counter_bits": 64,
                   "in_ucast_pkts": octets // 100, "pkts_bits": 64, "if_type": 6}, ts=ts)


def beat(devs: list[str], ts: float, interval: float = 30.0) -> list[Record]:
    return [Record(Kind.HEALTH, "acme", "site1", d, HEARTBEAT_NAME,
                   {"listed": 1, "devices": len(devs), "interval_s": interval,
                    "protocol": "snmp", "poll_interval_s": 60.0}, ts=ts) for d in devs]


def named(series: dict, name: str) -> dict:
    return {k: v for k, v in series.items() if k[0] == name}


def label(key: tuple, name: str) -> str:
    return dict(key[1])[name]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    request.param  # noqa: B018
    yield request.getfixturevalue("store_url")


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    import os

    from peers.pg import drop_schema, pg_schema_url
    if request.node.callspec.params["url"] == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        open_db(url).close()
        yield url
        return
    dsn = request.getfixturevalue("pg_dsn")
    schema = f"privtel_noc_{os.urandom(6).hex()}"
    try:
        yield pg_schema_url(dsn, schema)
    finally:
        drop_schema(dsn, schema)


def test_two_workers_one_series_per_device_and_restart_keeps_values(url: str) -> None:
    clock = Clock(T0)
    a, b = Worker(url, "w-a", clock), Worker(url, "w-b", clock)
    try:
        # batches land on whichever worker the broker picks; each device's poll is split
        for i, d in enumerate(DEVICES):
            (a if i % 2 else b).commit([health(d, T0)])
            (b if i % 2 else a).commit([iface(d, T0, 1, "Gi0/1", 1000), iface(d, T0, 2, "Gi0/1",
                                                                             7)])
        clock.t = T0 + 5
        sa, sb = a.series(), b.series()
        info = {label(k, "device") for k in named(sa, "privtel_device_info")}
        info_b = {label(k, "device") for k in named(sb, "privtel_device_info")}
        assert info | info_b == set(DEVICES) and not info & info_b
        assert info and info_b  # both workers serve a share
        both = {**sa, **sb}
        # same-named interfaces stay apart, keyed by ifIndex
        octets = named(both, "privtel_interface_in_octets_total")
        assert len(octets) == 2 * len(DEVICES)
        assert sorted({label(k, "ifindex") for k in octets}) == ["1", "2"]
        assert sum(1 for k in named(both, "privtel_device_up")) == len(DEVICES)

        # worker a restarts (same id): it serves the same devices with the stored values
        a.close()
        clock.t = T0 + 6
        only_b = b.series()
        assert {label(k, "device") for k in named(only_b, "privtel_device_info")} == set(DEVICES)
        a = Worker(url, "w-a", clock)
        clock.t = T0 + 7
        again = a.series()
        assert {label(k, "device") for k in named(again, "privtel_device_info")} == info
        dev0 = next(iter(info))
        key = ("privtel_interface_in_octets_total",
               tuple(sorted({"tenant": "acme", "site": "site1", "device": dev0, "ifindex": "1",
                             "ifname": "Gi0/1"}.items())))
        assert again[key] == 1000.0
    finally:
        a.close()
        b.close()


def test_silent_agent_turns_its_devices_down_never_vanishes(url: str) -> None:
    clock = Clock(T0)
    w = Worker(url, "solo", clock, silence_factor=3.0)
    try:
        devs = ["tokA", "tokB"]
        w.commit([*beat(devs, T0, interval=30), health("tokA", T0),
                  health("tokB", T0, 0, "timeout")])
        clock.t = T0 + 60
        s = w.series()
        agent = tuple(sorted({"tenant": "acme", "site": "site1", "agent": "agent1"}.items()))
        assert s[("privtel_agent_up", agent)] == 1.0
        assert s[("privtel_agent_last_seen_timestamp_seconds", agent)] == T0
        up = {label(k, "device"): v for k, v in named(s, "privtel_device_up").items()}
        assert up == {"tokA": 1.0, "tokB": 0.0}
        assert {label(k, "reason") for k in named(s, "privtel_device_poll_failures")} == {
            "timeout"}

        clock.t = T0 + 91  # beyond 3 x 30 s of silence
        s = w.series()
        assert s[("privtel_agent_up", agent)] == 0.0
        up = {label(k, "device"): v for k, v in named(s, "privtel_device_up").items()}
        assert up == {"tokA": 0.0, "tokB": 0.0}
        assert {(label(k, "device"), label(k, "reason"))
                for k in named(s, "privtel_device_poll_failures")} == {
            ("tokA", "agent_silent"), ("tokB", "agent_silent")}
        clock.t = T0 + 86400  # a day later: still there, still down
        s = w.series()
        assert len(named(s, "privtel_device_up")) == 2
        assert s[("privtel_agent_up", agent)] == 0.0

        # the agent comes back and no longer lists tokB: tokB goes, tokA is up again
        w.commit([*beat(["tokA"], T0 + 86400), health("tokA", T0 + 86400)])
        clock.t = T0 + 86400 + 50
        s = w.series()
        assert s[("privtel_agent_up", agent)] == 1.0
        assert {label(k, "device"): v for k, v in named(s, "privtel_device_up").items()} == {
            "tokA": 1.0}
    finally:
        w.close()


def test_heartbeat_alone_keeps_agent_up_and_lists_unpolled_devices(url: str) -> None:
    clock = Clock(T0)
    w = Worker(url, "solo", clock, default_interval_s=10.0)
    try:
        w.commit(beat(["tokX"], T0, interval=20))
        clock.t = T0 + 50  # 2.5 x its own interval (not the default 10 s)
        s = w.series()
        assert s[("privtel_agent_up", tuple(sorted(
            {"tenant": "acme", "site": "site1", "agent": "agent1"}.items())))] == 1.0
        assert {label(k, "device") for k in named(s, "privtel_device_info")} == {"tokX"}
        assert not named(s, "privtel_device_up")  # never polled: no up value is invented
    finally:
        w.close()


def test_store_failure_serves_last_state_and_counts(url: str) -> None:
    clock = Clock(T0)
    w = Worker(url, "solo", clock)
    w.commit([*beat(["tokA"], T0), health("tokA", T0)])
    clock.t = T0 + 1
    assert named(w.series(), "privtel_device_up")
    w.shared.db.close()
    clock.t = T0 + 2
    s = w.series()
    assert named(s, "privtel_device_up")
    assert s[("privtel_noc_refresh_failures_total", ())] == 1.0


def test_decommissioned_agent_and_devices_are_forgotten_after_the_horizon(url: str) -> None:
    clock = Clock(T0)
    w = Worker(url, "solo", clock, forget_after_s=7 * 86400)
    try:
        w.commit([*beat(["tokA"], T0), health("tokA", T0)])
        clock.t = T0 + 6 * 86400  # silent for six days: still shown, down
        assert named(w.series(), "privtel_device_up")
        w.shared.prune(w.noc, T0 + 8 * 86400)
        clock.t = T0 + 8 * 86400
        s = w.series()
        assert not named(s, "privtel_device_info") and not named(s, "privtel_agent_up")
        with w.shared.db.tx() as cur:
            assert cur.execute("SELECT COUNT(*) FROM noc_devices").fetchone()[0] == 0
    finally:
        w.close()
