"""snmp_exporter naming and the agent heartbeat's records."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.heartbeat import Health, Heartbeat, heartbeat_records
from agents.pollers import Device
from collector.metrics.noc import NocMetrics
from pipelines.record import Kind, Record

T0 = 1_750_000_000.0


def fams(reg: CollectorRegistry) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}


def iface(idx: int, bits: int, **extra: object) -> Record:
    return Record(Kind.METRIC, "acme", "site1", "tok1", "if", {
        "if_index": idx, "if_name": "Gi0/1", "if_descr": "GigabitEthernet0/1",
        "if_alias": "uplink", "in_octets": 5, "out_octets": 6, "in_errors": 1,
        "oper_status": 1, "admin_status": 1, "speed_bps": 10_000_000_000, "if_type": 6,
        "last_change_s": 12.5, "counter_bits": bits, "in_ucast_pkts": 9, "in_bcast_pkts": 2,
        "pkts_bits": bits, **extra}, ts=T0)


def test_snmp_exporter_names_types_and_labels() -> None:
    reg = CollectorRegistry()
    m = NocMetrics(reg, naming="snmp_exporter", clock=lambda: T0 + 1)
    m.observe([Record(Kind.METRIC, "acme", "site1", "tok1", "snmp.system", {"uptime_s": 3.5},
                      ts=T0), iface(1, 64), iface(2, 32)])
    f = fams(reg)
    hc = f["ifHCInOctets"]
    assert hc.type == "unknown"  # type: ignore[attr-defined]  # see noc.py: no `_total`
    [s] = hc.samples  # type: ignore[attr-defined]
    assert s.name == "ifHCInOctets" and s.value == 5
    assert s.labels == {"tenant": "acme", "site": "site1", "instance": "tok1", "ifIndex": "1",
                        "ifName": "Gi0/1", "ifDescr": "GigabitEthernet0/1", "ifAlias": "uplink",
                        "ifType": "6"}
    # the 32-bit interface is exposed under the 32-bit names, not the HC ones
    [s32] = f["ifInOctets"].samples  # type: ignore[attr-defined]
    assert s32.labels["ifIndex"] == "2"
    assert [x.labels["ifIndex"] for x in f["ifHCInUcastPkts"].samples] == ["1"]  # type: ignore[attr-defined]
    assert [x.labels["ifIndex"] for x in f["ifInUcastPkts"].samples] == ["2"]  # type: ignore[attr-defined]
    assert f["ifHighSpeed"].samples[0].value == 10000  # type: ignore[attr-defined]
    assert f["ifLastChange"].samples[0].value == 1250  # type: ignore[attr-defined]
    assert f["sysUpTime"].samples[0].value == 350  # type: ignore[attr-defined]
    assert f["ifOperStatus"].type == "gauge"  # type: ignore[attr-defined]
    assert "privtel_interface_in_octets" not in f


def test_privtel_naming_has_packets_iftype_last_change() -> None:
    reg = CollectorRegistry()
    m = NocMetrics(reg, clock=lambda: T0 + 1)
    m.observe([iface(1, 64)])
    f = fams(reg)
    casts = {x.labels["cast"]: x.value for x in f["privtel_interface_in_packets"].samples}  # type: ignore[attr-defined]
    assert casts == {"unicast": 9.0, "broadcast": 2.0}
    [info] = f["privtel_interface_info"].samples  # type: ignore[attr-defined]
    assert info.labels["iftype"] == "6" and "ifalias" not in info.labels
    assert f["privtel_interface_last_change_seconds"].samples[0].value == 12.5  # type: ignore[attr-defined]
    assert f["privtel_interface_counter_bits"].samples[0].value == 64  # type: ignore[attr-defined]


def test_heartbeat_lists_devices_with_last_health() -> None:
    devs = [Device("r1", "192.0.2.1", 161, "snmp", 60.0, "acme", "site1", None),
            Device("r2", "192.0.2.2", 22, "ssh", 300.0, "acme", "site2", None)]
    h = Health()
    h.note([Record(Kind.HEALTH, "acme", "site1", "r1", "device.health",
                   {"up": 0, "reason": "timeout"}, ts=T0)])
    recs = heartbeat_records(tenant="acme", site="site1", agent_id="a1", interval_s=15,
                             devices=devs, health=h, now=T0)
    assert [(r.device, r.site, r.fields.get("up"), r.fields["poll_interval_s"]) for r in recs] \
        == [("r1", "site1", 0, 60.0), ("r2", "site2", None, 300.0)]
    assert all(r.fields["listed"] == 1 and r.fields["devices"] == 2 for r in recs)
    [empty] = heartbeat_records(tenant="acme", site="site1", agent_id="a1", interval_s=15,
                                devices=[], health=h, now=T0)
    assert empty.fields["listed"] == 0


async def test_heartbeat_beats_on_its_own_and_survives_a_failed_emit() -> None:
    got: list[list[Record]] = []

    async def emit(records: list[Record]) -> None:
        got.append(records)
        if len(got) == 1:
            raise OSError("spool full")

    hb = Heartbeat(emit, lambda: [], Health(), tenant="acme", site="site1", agent_id="a1",
                   interval_s=0.05)
    await hb.start()
    try:
        for _ in range(100):
            if len(got) >= 3:
                break
            await asyncio.sleep(0.02)
    finally:
        await hb.close()
    assert len(got) >= 3 and hb.sent >= 2


COLLECTOR_TOML = """
[collector]
store = "sqlite:///x.db"
metrics_listen = "127.0.0.1:9200"
[keys]
private_keys = ["c.key"]
[[agents]]
id = "a1"
tenant = "acme"
public_key = "a1.pub"
"""


def test_metrics_section_defaults_settings_and_refusals() -> None:
    import pytest

    from collector import config as collector_config
    from collector.outputs import noc_output
    from pipelines.config import ConfigError

    cfg = collector_config.parse(COLLECTOR_TOML, "c.toml")
    assert cfg.metrics.naming == "privtel" and cfg.metrics.silence_factor == 3.0
    cfg = collector_config.parse(COLLECTOR_TOML + '[metrics]\nnaming = "snmp_exporter"\n'
                                 'silence_factor = 5\nworker_id = "w1"\n', "c.toml")
    assert (cfg.metrics.naming, cfg.metrics.silence_factor, cfg.metrics.worker_id) == (
        "snmp_exporter", 5.0, "w1")
    with pytest.raises(ConfigError, match="naming"):
        collector_config.parse(COLLECTOR_TOML + '[metrics]\nnaming = "grafana"\n', "c.toml")
    with pytest.raises(ConfigError, match="silence_factor"):
        collector_config.parse(COLLECTOR_TOML + '[metrics]\nsilence_factor = 0.5\n', "c.toml")
    with pytest.raises(ConfigError, match="nope"):
        collector_config.parse(COLLECTOR_TOML + '[metrics]\nnope = 1\n', "c.toml")
    out = noc_output(CollectorRegistry(), None)
    assert out.shared is None and out.noc.naming == "privtel"


def _parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_direct_text_rendering_round_trips_through_the_parser() -> None:
    """`collect` is `render` parsed back, so what must hold is that the text says
    what was observed: odd label text escaped and read back exactly, values and
    types as prometheus_client's own writer would give them."""
    for naming in ("privtel", "snmp_exporter"):
        reg = CollectorRegistry()
        m = NocMetrics(reg, naming=naming, clock=lambda: T0 + 1)
        odd = iface(3, 64, if_name='we"ird\\name\nx %r %s', if_alias="a\\b")
        m.observe([Record(Kind.HEALTH, "acme", "site1", "tok1", "device.health",
                          {"up": 0, "reason": "timeout", "uptime_s": 7.0}, ts=T0),
                   iface(1, 64), iface(2, 32), odd])
        fast = m.render().decode()
        # prometheus_client writing the parsed families says the same
        assert _parsed(fast) == _parsed(generate_latest(reg).decode())
        got = _parsed(fast)
        name_label = "ifname" if naming == "privtel" else "ifName"
        names = {dict(k[1]).get(name_label) for k in got}
        assert 'we"ird\\name\nx %r %s' in names
        types = {f.name: f.type for f in text_string_to_metric_families(fast)}
        assert types["privtel_device_up"] == "gauge"
        assert types["privtel_metrics_dropped"] == "counter"
        if naming == "snmp_exporter":
            assert "a\\b" in {dict(k[1]).get("ifAlias") for k in got}
            assert got[("ifHCInOctets", (("ifAlias", "uplink"), ("ifDescr", "GigabitEthernet0/1"),
                                         ("ifIndex", "1"), ("ifName", "Gi0/1"), ("ifType", "6"),
                                         ("instance", "tok1"), ("site", "site1"),
                                         ("tenant", "acme")))] == 5.0


def test_rendering_follows_changes_between_scrapes() -> None:
    """Each device's text is kept between scrapes and reused while nothing changed, so
    every kind of change must show at the next scrape: a new value, a value turning
    NaN, an interface that appears, one whose name changes, and one that goes stale."""
    m = NocMetrics(None, stale_after_s=100, clock=lambda: T0 + 1)

    def octets(ts: float, **fields: object) -> Record:
        return Record(Kind.METRIC, "acme", "site1", "tok1", "if",
                      {"if_index": 1, "if_name": "Gi0/1", "in_octets": 5, **fields}, ts=ts)

    def seen() -> dict[tuple[str, str], float]:
        return {(dict(k[1])["ifindex"], dict(k[1])["ifname"]): v
                for k, v in _parsed(m.render().decode()).items()
                if k[0] == "privtel_interface_in_octets_total"}

    m.observe([octets(T0)])
    assert seen() == {("1", "Gi0/1"): 5.0}
    assert seen() == {("1", "Gi0/1"): 5.0}           # unchanged: the kept text
    m.observe([octets(T0 + 10, in_octets=7)])
    assert seen() == {("1", "Gi0/1"): 7.0}
    m.observe([octets(T0 + 20, in_octets=float("nan"))])
    assert "NaN" in m.render().decode()
    m.observe([octets(T0 + 30, in_octets=8),
               octets(T0 + 30, if_index=2, if_name="Gi0/2", in_octets=1)])
    assert seen() == {("1", "Gi0/1"): 8.0, ("2", "Gi0/2"): 1.0}
    m.observe([octets(T0 + 40, if_name="renamed", in_octets=9)])
    assert seen() == {("1", "renamed"): 9.0, ("2", "Gi0/2"): 1.0}
    m.observe([octets(T0 + 200, if_name="renamed", in_octets=10)])  # Gi0/2 unpolled 170 s
    assert seen() == {("1", "renamed"): 10.0}


def test_metrics_endpoint_appends_the_directly_rendered_series() -> None:
    import urllib.request

    from plumbing.metrics_http import serve

    reg = CollectorRegistry()
    from prometheus_client import Counter
    Counter("privtel_probe_things", "x", registry=reg).inc()
    m = NocMetrics(None, clock=lambda: T0 + 1)
    m.observe([iface(1, 64)])
    server, _ = serve(reg, "127.0.0.1", 0, extra=m.render_parts)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics",
                                    timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            got = _parsed(r.read().decode())
    finally:
        server.shutdown()
        server.server_close()
    assert got[("privtel_probe_things_total", ())] == 1.0
    assert any(k[0] == "privtel_interface_in_octets_total" for k in got)
