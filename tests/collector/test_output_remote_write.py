"""Remote write against a real Prometheus receiver (`--web.enable-remote-write-receiver`):
samples land with the poll timestamps, a refused request is dropped and counted, a
dead receiver is retried until it comes up, and none of it slows the store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_kit import rec
from prometheus_client import CollectorRegistry

from collector.config import parse
from collector.outputs import build_outputs
from collector.outputs.base import Committed
from collector.outputs.remote_write import (
    RemoteWriteConfig,
    RemoteWriteOutput,
    WriteRequest,
    _compress,
    _Series,
    decode,
    encode,
    samples_of,
)
from collector.retention import RetentionService
from collector.store.sink import StoreSink
from pipelines.config import ConfigError
from pipelines.envelope import Header
from pipelines.record import Kind
from privtel.demo.prometheus import Prometheus
from privtel.demo.run import free_port


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with Prometheus(free_port(), receiver=True,
                    workdir=tmp_path_factory.mktemp("prom")) as p:
        yield p


def header() -> Header:
    return Header(tenant="acme", agent_id="agent1", batch_id=os.urandom(16).hex(), seq=1,
                  created=time.time())


def poll(device: str, ts: float, octets: int, *, oper: str = "up") -> list:
    return [rec(0, kind=Kind.HEALTH, name="device.health", device=device, ts=ts, up=1,
                reason=None, protocol="snmp", poll_duration_s=0.25, uptime_s=1000 + ts % 1000),
            rec(0, device=device, ts=ts, if_name="eth0", in_octets=octets, out_octets=2 * octets,
                in_errors=0, out_errors=1, in_discards=0, out_discards=0, oper_status=oper,
                admin_status=1, speed_bps=1_000_000_000)]


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, {"output": "remote_write", **labels}) or 0.0


async def until(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def settled(reg: CollectorRegistry) -> bool:
    """Nothing queued: every sample delivered so far was sent, dropped or refused."""
    return value(reg, "privtel_remote_write_samples_pending") == 0


def per_poll() -> int:
    return sum(len(list(samples_of(r))) for r in poll("x", time.time(), 1))


def stored(p: Prometheus, series: str) -> list[tuple[float, float]]:
    """Every raw sample of `series` in the last hour, as (timestamp s, value)."""
    out = p.query(f"{series}[1h]")
    return sorted((float(t), float(v)) for r in out for t, v in r["values"])


def test_encoding_is_what_protobuf_parses() -> None:
    samples = [s for r in poll("dev1", 1_700_000_000.25, 5) for s in samples_of(r)]
    samples.append((samples[0][0], 9.0, 1_700_000_060_000))
    body = encode(samples)
    assert sorted(decode(body)) == sorted(samples)
    import cramjam
    req = WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    first = req.timeseries[0]
    assert [(lb.name, lb.value) for lb in first.labels] == list(samples[0][0])
    assert [(s.value, s.timestamp) for s in first.samples] == [
        (samples[0][1], 1_700_000_000_250), (9.0, 1_700_000_060_000)]
    names = {dict(lb)["__name__"] for lb, _, _ in samples}
    assert {"privtel_device_up", "privtel_interface_in_octets_total",
            "privtel_interface_oper_status", "privtel_device_info"} <= names


def test_the_outputs_own_encoding_is_what_protobuf_parses() -> None:
    """The output writes each record straight to TimeSeries bytes from kept per-series
    prefixes; protobuf must read them back as `samples_of` says, on the first poll and
    on later ones (prefixes reused), with 0.0 values written, and each series always
    on one shard."""
    recs = (poll("dev1", 1_700_000_000.25, 5) + poll("dev1", 1_700_000_030.5, 0, oper="down")
            + poll("dev2", 1_700_000_030.5, 7))
    enc = _Series(shards=3)
    got, shard_of = [], {}
    for r in recs:
        shard, series = enc.encode(r, round(r.ts * 1000))
        assert shard_of.setdefault((r.device, r.name), shard) == shard
        got += decode(_compress(series))
    assert got == [s for r in recs for s in samples_of(r)]
    assert any(v == 0.0 for _, v, _ in got)


async def test_samples_land_with_poll_timestamps(receiver: Prometheus) -> None:
    reg = CollectorRegistry()
    out = RemoteWriteOutput(RemoteWriteConfig(url=receiver.write_url), reg)
    t0 = round(time.time() - 120, 3)
    async with out:
        await out.deliver(Committed(header(), poll("rw-land", t0, 1000)))
        await out.deliver(Committed(header(), poll("rw-land", t0 + 30, 4000, oper="down")))
        await until(lambda: value(reg, "privtel_remote_write_samples_sent_total") == 2 * per_poll())
    sel = '{device="rw-land",tenant="acme",site="site1",ifname="eth0"}'
    assert stored(receiver, f"privtel_interface_in_octets_total{sel}") == [
        (t0, 1000.0), (t0 + 30, 4000.0)]
    assert stored(receiver, f"privtel_interface_oper_status{sel}") == [(t0, 1.0), (t0 + 30, 2.0)]
    assert stored(receiver, 'privtel_device_up{device="rw-land"}') == [(t0, 1.0), (t0 + 30, 1.0)]
    rate = receiver.query(f"irate(privtel_interface_in_octets_total{sel}[5m])", at=t0 + 30)
    assert rate and float(rate[0]["value"][1]) == pytest.approx(100.0)
    assert value(reg, "privtel_remote_write_samples_failed_total") == 0
    assert value(reg, "privtel_remote_write_samples_dropped_total", reason="rejected") == 0


async def test_refused_samples_are_dropped_and_counted(receiver: Prometheus) -> None:
    """A sample older than what the receiver holds for its series is a 400: dropped,
    counted, and the next request goes through."""
    t0 = time.time() - 60
    first = CollectorRegistry()
    async with RemoteWriteOutput(RemoteWriteConfig(url=receiver.write_url), first) as a:
        await a.deliver(Committed(header(), poll("rw-refused", t0, 10)))
        await until(lambda: value(first, "privtel_remote_write_samples_sent_total") == per_poll())
    reg = CollectorRegistry()
    async with RemoteWriteOutput(RemoteWriteConfig(url=receiver.write_url), reg) as b:
        await b.deliver(Committed(header(), poll("rw-refused", t0 - 30, 5)))
        await until(lambda: settled(reg))
        await b.deliver(Committed(header(), poll("rw-refused", t0 + 30, 20)))
        await until(lambda: settled(reg))
    n = per_poll()
    assert value(reg, "privtel_remote_write_samples_sent_total") == n
    assert value(reg, "privtel_remote_write_samples_dropped_total", reason="rejected") == n
    assert value(reg, "privtel_remote_write_samples_failed_total") == n
    assert stored(receiver, 'privtel_interface_in_octets_total{device="rw-refused"}') == [
        (round(t0, 3), 10.0), (round(t0 + 30, 3), 20.0)]


async def test_a_replayed_backlog_is_not_sent_behind_newer_samples(receiver: Prometheus) -> None:
    reg = CollectorRegistry()
    t0 = time.time() - 60
    async with RemoteWriteOutput(RemoteWriteConfig(url=receiver.write_url), reg) as out:
        await out.deliver(Committed(header(), poll("rw-replay", t0, 10)))
        await out.deliver(Committed(header(), poll("rw-replay", t0 - 30, 5)))
        await out.deliver(Committed(header(), poll("rw-replay", t0 + 30, 20)))
        await until(lambda: settled(reg))
    assert value(reg, "privtel_remote_write_samples_sent_total") == 2 * per_poll()
    assert value(reg, "privtel_remote_write_samples_dropped_total",
                 reason="out_of_order") == per_poll()
    assert value(reg, "privtel_remote_write_samples_dropped_total", reason="rejected") == 0
    assert [v for _, v in stored(
        receiver, 'privtel_interface_in_octets_total{device="rw-replay"}')] == [10.0, 20.0]


async def test_a_dead_receiver_is_retried_until_it_comes_up(tmp_path: Path) -> None:
    port = free_port()
    reg = CollectorRegistry()
    cfg = RemoteWriteConfig(url=f"http://127.0.0.1:{port}/api/v1/write", max_retries=1000,
                            backoff_max_s=0.3, timeout_s=2)
    t0 = time.time() - 30
    async with RemoteWriteOutput(cfg, reg) as out:
        await out.deliver(Committed(header(), poll("rw-late", t0, 77)))
        await until(lambda: value(reg, "privtel_remote_write_samples_failed_total") > 0)
        assert value(reg, "privtel_remote_write_samples_sent_total") == 0
        with Prometheus(port, receiver=True, workdir=tmp_path / "p") as late:
            await until(lambda: settled(reg), 60)
            assert value(reg, "privtel_remote_write_samples_sent_total") == per_poll()
            assert stored(late, 'privtel_interface_in_octets_total{device="rw-late"}') == [
                (round(t0, 3), 77.0)]
    assert sum(value(reg, "privtel_remote_write_samples_dropped_total", reason=r)
               for r in ("rejected", "retries_exhausted", "queue_full", "shutdown")) == 0


async def test_https_receiver_verified_against_the_configured_ca(tmp_path: Path) -> None:
    """TLS through `ca_file`: the receiver's certificate is checked, so without the CA
    nothing is sent (counted failed), with it the samples land."""
    certs = tmp_path / "certs"
    subprocess.run([sys.executable, "-m", "privtel", "certs", "init", "--dir", str(certs),
                    "--host", "127.0.0.1"], check=True, capture_output=True, timeout=60)
    tls = (certs / "broker.crt", certs / "broker.key", certs / "ca.crt")
    t0 = time.time() - 30
    with Prometheus(free_port(), receiver=True, workdir=tmp_path / "p", tls=tls) as prom:
        assert prom.write_url.startswith("https://")
        untrusted = CollectorRegistry()
        cfg = RemoteWriteConfig(url=prom.write_url, max_retries=0)
        async with RemoteWriteOutput(cfg, untrusted) as out:
            await out.deliver(Committed(header(), poll("rw-tls", t0, 5)))
            await until(lambda: settled(untrusted))
        assert value(untrusted, "privtel_remote_write_samples_dropped_total",
                     reason="retries_exhausted") == per_poll()
        reg = CollectorRegistry()
        cfg = RemoteWriteConfig(url=prom.write_url, ca_file=certs / "ca.crt")
        async with RemoteWriteOutput(cfg, reg) as out:
            await out.deliver(Committed(header(), poll("rw-tls", t0, 6)))
            await until(lambda: settled(reg))
        assert value(reg, "privtel_remote_write_samples_sent_total") == per_poll()
        assert stored(prom, 'privtel_interface_in_octets_total{device="rw-tls"}') == [
            (round(t0, 3), 6.0)]


async def test_a_dead_receiver_never_slows_the_store(store) -> None:
    """Every batch is stored and the NOC output sees it; remote write fills its bounded
    queue, then drops and counts; the retries end at shutdown, also counted."""
    reg = CollectorRegistry()
    cfg = RemoteWriteConfig(url=f"http://127.0.0.1:{free_port()}/api/v1/write",
                            max_samples_per_send=10, queue_size=50, max_retries=1000,
                            backoff_max_s=0.2, timeout_s=1)
    outputs = build_outputs(["noc"], reg, configured={"remote_write": [cfg]})
    outputs.close_grace_s = 0.5
    rw = next(o for o in outputs.outputs if isinstance(o, RemoteWriteOutput))
    rw.close_grace_s = 0.5
    sink = StoreSink(store, RetentionService(None).tag, outputs)
    now = time.time()
    async with outputs:
        for i in range(40):
            assert await sink.sink(header(), poll(f"rw-dead{i}", now, i)) is True
        await until(lambda: value(reg, "privtel_output_delivered_total") == 40)
        await until(lambda: value(reg, "privtel_remote_write_samples_failed_total") > 0)
    assert store.count_records() == 80
    assert reg.get_sample_value("privtel_output_delivered_total", {"output": "noc"}) == 40
    dropped = {r: value(reg, "privtel_remote_write_samples_dropped_total", reason=r)
               for r in ("queue_full", "shutdown", "retries_exhausted", "rejected")}
    assert dropped["queue_full"] > 0
    assert dropped["queue_full"] + dropped["shutdown"] == 40 * per_poll()
    assert value(reg, "privtel_remote_write_samples_sent_total") == 0
    assert value(reg, "privtel_remote_write_samples_pending") == 0


BASE = """
[collector]
store = "sqlite:///x.db"
[keys]
private_keys = ["k"]
[[agents]]
id = "a1"
tenant = "acme"
public_key = "a1.pub"
"""


def test_config_reads_remote_write_tables(tmp_path: Path) -> None:
    cfg = parse(BASE + """
[[outputs.remote_write]]
url = "https://mimir.example/api/v1/push"
timeout_s = 5
max_samples_per_send = 500
batch_send_deadline_s = 0.05
queue_size = 10000
shards = 2
bearer_token_file = "token"
headers = { X-Scope-OrgID = "acme" }
ca_file = "ca.pem"
[[outputs.remote_write]]
name = "local"
url = "http://127.0.0.1:9090/api/v1/write"
""", "c.toml", base=tmp_path)
    a, b = cfg.remote_write
    assert (a.name, a.timeout_s, a.max_samples_per_send, a.queue_size, a.shards) == (
        "remote_write", 5.0, 500, 10000, 2)
    assert a.batch_send_deadline_s == 0.05 and b.batch_send_deadline_s == 0.2
    assert a.bearer_token_file == tmp_path / "token" and a.ca_file == tmp_path / "ca.pem"
    assert a.headers == {"X-Scope-OrgID": "acme"} and "acme" not in repr(a)
    assert b.name == "local" and b.url.endswith(":9090/api/v1/write")
    assert parse(BASE, "c.toml").remote_write == ()


@pytest.mark.parametrize(("table", "key"), [
    ('url = "ftp://x"', "url"),
    ('url = "http://x"\nheaders = { Authorization = "Bearer s3cret" }', "headers"),
    ('url = "http://x"\nbearer_token_file = "t"', "url"),
    ('url = "http://x"\nmax_samples_per_send = 0', "max_samples_per_send"),
    ('url = "http://x"\nqueue_size = 10', "queue_size"),
    ('url = "http://x"\nshards = 0', "shards"),
    ('url = "http://x"\nbatch_send_deadline_s = -1', "batch_send_deadline_s"),
    ('url = "http://x"\nbatch = 3', "batch"),
])
def test_config_rejects_bad_remote_write(table: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(BASE + "[[outputs.remote_write]]\n" + table + "\n", "c.toml")
    assert f"outputs.remote_write[0].{key}" in str(e.value)
    assert "s3cret" not in str(e.value)


def test_config_rejects_two_outputs_with_one_name() -> None:
    with pytest.raises(ConfigError, match="name"):
        parse(BASE + '[[outputs.remote_write]]\nurl = "http://a"\n'
              '[[outputs.remote_write]]\nurl = "http://b"\nname = "remote_write"\n', "c.toml")


async def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o644)
    out = RemoteWriteOutput(RemoteWriteConfig(url="https://127.0.0.1:1/api/v1/write",
                                              bearer_token_file=token), CollectorRegistry())
    with pytest.raises(Exception) as e:
        await out.start()
    assert "s3cret" not in str(e.value)
    await out.close()
