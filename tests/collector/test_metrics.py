"""NOC exposition from stored records, read back through the Prometheus text parser."""

from __future__ import annotations

import pytest
from collector_kit import meta, rec, tagged
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.metrics import InstrumentedStore, NocMetrics, StoreMetrics
from pipelines.record import Kind

NOW = 1_750_000_000.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def samples(reg: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def dev(device: str = "tok1", **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"tenant": "acme", "site": "site1", "device": device, **extra}.items()))


def ifl(name: str, device: str = "tok1") -> tuple[tuple[str, str], ...]:
    return dev(device, ifname=name, ifindex=str(_index(name)))


def _index(name: str) -> int:
    return int(name.removeprefix("eth")) + 1


def health(device: str = "tok1", ts: float = NOW, up: int = 1, reason: str | None = None,
           **extra: object):
    return rec(0, kind=Kind.HEALTH, name="device.health", device=device, ts=ts, up=up,
               reason=reason, protocol="snmp", poll_duration_s=0.25, **extra)


def iface(name: str, ts: float = NOW, device: str = "tok1", **values: object):
    fields = {"if_index": _index(name), "if_name": name, "in_octets": 1000, "out_octets": 2000,
              "in_errors": 3, "out_errors": 4, "in_discards": 5, "out_discards": 6,
              "oper_status": 1, "admin_status": 1, "speed_bps": 1_000_000_000, **values}
    return rec(0, name="if", device=device, ts=ts, **fields)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW + 10)


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


def test_device_and_interface_series(reg, clock):
    m = NocMetrics(reg, clock=clock)
    m.observe([health(uptime_s=3600), iface("eth0"),
               rec(0, name="host.cpu", device="tok1", ts=NOW, cpu_util_pct=42.5),
               rec(0, name="host.memory", device="tok1", ts=NOW,
                   mem_used_bytes=100, mem_total_bytes=400)])
    s = samples(reg)
    assert s[("privtel_device_up", dev())] == 1.0
    assert s[("privtel_device_uptime_seconds", dev())] == 3600.0
    assert s[("privtel_device_last_poll_age_seconds", dev())] == pytest.approx(10.0)
    assert s[("privtel_device_poll_duration_seconds", dev())] == 0.25
    assert s[("privtel_device_cpu_utilization_percent", dev())] == 42.5
    assert s[("privtel_device_memory_used_bytes", dev())] == 100.0
    assert s[("privtel_device_memory_total_bytes", dev())] == 400.0
    assert s[("privtel_device_info", dev(protocol="snmp", profile=""))] == 1.0
    i = ifl("eth0")
    assert s[("privtel_interface_in_octets_total", i)] == 1000.0
    assert s[("privtel_interface_out_octets_total", i)] == 2000.0
    assert s[("privtel_interface_in_errors_total", i)] == 3.0
    assert s[("privtel_interface_out_errors_total", i)] == 4.0
    assert s[("privtel_interface_in_discards_total", i)] == 5.0
    assert s[("privtel_interface_out_discards_total", i)] == 6.0
    assert s[("privtel_interface_oper_status", i)] == 1.0
    assert s[("privtel_interface_speed_bits_per_second", i)] == 1e9


def test_down_device_shows_reason(reg, clock):
    m = NocMetrics(reg, clock=clock)
    m.observe([health(up=0, reason="timeout")])
    s = samples(reg)
    assert s[("privtel_device_up", dev())] == 0.0
    assert s[("privtel_device_poll_failures", dev(reason="timeout"))] == 1.0


def test_unknown_reason_is_folded_to_error(reg, clock):
    m = NocMetrics(reg, clock=clock)
    m.observe([health(up=0, reason="user_said_something_unique")])
    s = samples(reg)
    assert s[("privtel_device_poll_failures", dev(reason="error"))] == 1.0


def test_older_record_does_not_move_values_back(reg, clock):
    m = NocMetrics(reg, clock=clock)
    m.observe([iface("eth0", in_octets=5000), health(up=1)])
    m.observe([iface("eth0", ts=NOW - 60, in_octets=10), health(ts=NOW - 60, up=0)])
    s = samples(reg)
    assert s[("privtel_interface_in_octets_total", ifl("eth0"))] == 5000.0
    assert s[("privtel_device_up", dev())] == 1.0


def test_string_oper_status_maps_to_if_mib_code(reg, clock):
    m = NocMetrics(reg, clock=clock)
    m.observe([iface("eth0", oper_status="lowerLayerDown")])
    assert samples(reg)[("privtel_interface_oper_status", ifl("eth0"))] == 7.0


def test_unlisted_stale_device_and_missing_interface_are_dropped(reg, clock):
    """A device no heartbeat lists expires by age; an interface goes once the device's
    own polls stop reporting it for stale_after_s, never because the device is silent."""
    m = NocMetrics(reg, stale_after_s=300, clock=clock)
    m.observe([health("tok1"), iface("eth0"), iface("eth1"), health("tok2")])
    clock.t = NOW + 350
    m.observe([health("tok1", ts=NOW + 350), iface("eth0", ts=NOW + 350)])
    clock.t = NOW + 400
    s = samples(reg)
    assert ("privtel_device_up", dev("tok1")) in s
    assert ("privtel_device_up", dev("tok2")) not in s
    assert ("privtel_interface_in_octets_total", ifl("eth0")) in s
    assert ("privtel_interface_in_octets_total", ifl("eth1")) not in s
    assert m.forget("acme", "tok1") is True
    assert not any(k[0] == "privtel_device_up" for k in samples(reg))


def test_cardinality_caps_count_dropped_records(reg, clock):
    m = NocMetrics(reg, max_devices=2, max_interfaces=3, clock=clock)
    m.observe([health(f"tok{i}") for i in range(5)])
    m.observe([iface(f"eth{i}", device="tok0") for i in range(10)])
    s = samples(reg)
    assert sum(1 for k in s if k[0] == "privtel_device_up") == 2
    assert sum(1 for k in s if k[0] == "privtel_interface_in_octets_total") == 3
    assert s[("privtel_metrics_dropped_total", (("reason", "device_limit"),))] == 3.0
    assert s[("privtel_metrics_dropped_total", (("reason", "interface_limit"),))] == 7.0


def test_free_text_never_becomes_a_label(reg, clock):
    m = NocMetrics(reg, clock=clock)
    m.observe([iface("eth0", if_alias="customer Jane Doe uplink")])
    assert "Jane" not in generate_latest(reg).decode()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="stale_after_s must be positive"):
        NocMetrics(None, stale_after_s=0)
    with pytest.raises(ValueError, match="max_devices and max_interfaces"):
        NocMetrics(None, max_interfaces=0)


def test_store_self_metrics(reg, store):
    sm = StoreMetrics(reg, store.backend)
    s = InstrumentedStore(store, sm)
    s.write_batch(meta("b1"), [tagged(rec(i)) for i in range(3)])
    s.write_batch(meta("b1"), [tagged(rec(i)) for i in range(3)])
    s.quarantine("bad_signature", "t", None, None, 1, "00")
    sm.refresh(s)
    got = samples(reg)
    b = store.backend
    assert got[("privtel_store_batches_total", (("backend", b), ("result", "stored")))] == 1
    assert got[("privtel_store_batches_total", (("backend", b), ("result", "duplicate")))] == 1
    assert got[("privtel_store_records_written_total",
                (("backend", b), ("retention_class", "metrics")))] == 3
    assert got[("privtel_store_quarantined_total",
                (("backend", b), ("reason", "bad_signature")))] == 1
    assert got[("privtel_store_records", (("backend", b), ("retention_class", "metrics")))] == 3
    assert got[("privtel_store_size_bytes", (("backend", b),))] > 0
    store.purge_expired(2e9)
    sm.refresh(s)
    assert ("privtel_store_records", (("backend", b), ("retention_class", "metrics"))) \
        not in samples(reg)


def test_http_serves_metrics_and_probes(reg, clock):
    import urllib.error
    import urllib.request

    from collector.metrics import serve

    NocMetrics(reg, clock=clock).observe([health()])
    state = {"ready": False}

    def ready() -> bool:
        if state["ready"] is None:
            raise RuntimeError("store down")
        return bool(state["ready"])

    server, thread = serve(reg, "127.0.0.1", 0, ready=ready)
    base = f"http://127.0.0.1:{server.server_port}"

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    try:
        status, body = get("/metrics")
        assert status == 200
        assert 'privtel_device_up{device="tok1",site="site1",tenant="acme"} 1.0' in body
        assert get("/healthz") == (200, "ok\n")
        assert get("/readyz") == (503, "unavailable\n")
        state["ready"] = True
        assert get("/readyz") == (200, "ok\n")
        state["ready"] = None
        assert get("/readyz")[0] == 503
    finally:
        server.shutdown()
        thread.join(5)


async def test_store_metrics_refresh_loop(reg, store):
    import asyncio

    sm = StoreMetrics(reg, store.backend)
    store.write_batch(meta("b1"), [tagged(rec(0))])
    stop = asyncio.Event()
    task = asyncio.create_task(sm.run(store, stop, every_s=0.01))
    for _ in range(200):
        if reg.get_sample_value("privtel_store_records", {"backend": store.backend,
                                                          "retention_class": "metrics"}):
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert reg.get_sample_value("privtel_store_records",
                                {"backend": store.backend, "retention_class": "metrics"}) == 1


def _mixed_stream() -> list[list]:
    """Batches mixing every series-feeding name with names no series uses, runs of
    one device and interleaved devices, out-of-order times and a device over the cap."""
    b1 = [health("tok1"), iface("eth0"), iface("eth1"), rec(0, name="syslog", device="tok2",
          msg="x"), iface("eth0", device="tok2"), health("tok3"),
          rec(0, name="host.cpu", device="tok1", ts=NOW, cpu_util_pct=12.5),
          rec(0, name="host.memory", device="tok3", ts=NOW, mem_used_bytes=5,
              mem_total_bytes=9)]
    b2 = [iface("eth0", ts=NOW - 5, in_octets=1), iface("eth0", ts=NOW + 5, oper_status="down"),
          rec(0, name="snmp.system", device="tok1", ts=NOW + 5, uptime_s=77),
          health("tok4", ts=NOW + 5), rec(0, name="unknown.name", device="tok3", ts=NOW + 300,
                                          v=1), iface("eth9", device="tok3", ts=NOW + 300)]
    return [b1, b2]


def _expose(batches: list[list], one_by_one: bool, **settings: int) -> dict:
    clock = Clock(NOW + 10)
    reg = CollectorRegistry()
    m = NocMetrics(reg, clock=clock, **settings)
    for batch in batches:
        if one_by_one:
            for r in batch:
                m.observe([r])
        else:
            m.observe(batch)
        clock.t += 250
    return samples(reg)


def test_batch_observe_equals_record_by_record():
    """The per-batch fast paths (name dispatch, reusing the previous record's device)
    must expose exactly what observing one record at a time exposes."""
    settings = {"stale_after_s": 200, "max_devices": 2, "max_interfaces": 2}
    batched = _expose(_mixed_stream(), False, **settings)
    assert batched == _expose(_mixed_stream(), True, **settings)
    assert batched[("privtel_metrics_dropped_total", (("reason", "device_limit"),))] >= 1.0


def test_device_expired_mid_batch_is_not_updated_through_a_stale_reference():
    """A record of an unused name can expire other devices when it meets the cap;
    the next record of an expired device must see it gone, as record by record."""
    batch = [health("tok1", ts=NOW - 1000), rec(0, name="syslog", device="tok2", ts=NOW, m=1),
             rec(0, name="syslog", device="tok3", ts=NOW, m=1), health("tok1", ts=NOW)]
    batched = _expose([batch], False, stale_after_s=300, max_devices=2)
    assert batched == _expose([batch], True, stale_after_s=300, max_devices=2)
    assert batched[("privtel_metrics_dropped_total", (("reason", "device_limit"),))] == 1.0


def test_record_of_unused_name_keeps_device_series_fresh(reg, clock):
    m = NocMetrics(reg, stale_after_s=300, clock=clock)
    m.observe([health("tok1")])
    m.observe([rec(0, name="syslog", device="tok1", ts=NOW + 250, msg="x")])
    clock.t = NOW + 400
    assert ("privtel_device_up", dev("tok1")) in samples(reg)
