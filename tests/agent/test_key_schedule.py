"""Scheduled tenant-key rotation: the agent archives its key and starts a new epoch
when the period has passed, swaps the pseudonymiser without a restart, and every
batch header names exactly the key ids its records were pseudonymised with.

Against the real Mosquitto: a subscriber opens each batch with the collector key.
Devices come from a test protocol registered through the poller seam, which also
checks that the scheduler builds pollers from the config's `PollerContext`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry

from agents import config as agent_config
from agents.pollers import REGISTRY, Device, PollerContext, PollerSpec, health_record
from agents.runtime import Agent
from agents.shipper import Shipper
from agents.tenantkeys import load_tenant_key, read_tenant_key, rotate_tenant_key_file
from pipelines import keys
from pipelines.config import ConfigError, Section
from pipelines.envelope import Header, open_sealed, topic_for
from pipelines.pseudonym import TenantKey
from pipelines.record import Kind, Record
from plumbing.broker import parse_broker_url
from privtel.demo.run import write_keys

RAW = "198.51.100.7"
DAY = 86400.0
PROTO = "keytest"


class _Poller:
    made_with: list[PollerContext] = []

    def __init__(self, ctx: PollerContext) -> None:
        _Poller.made_with.append(ctx)

    async def poll(self, device: Device) -> list[Record]:
        started = time.time()
        return [health_record(device, up=True, reason=None, started=started),
                Record(kind=Kind.LOG, tenant=device.tenant, site=device.site,
                       device=device.name, name="log.line",
                       fields={"message": f"login from {device.address}", "command": "t"})]

    async def settled(self, device: Device, kept: bool) -> None:
        return None

    async def close(self) -> None:
        return None


def _no_options(s: Section, ctx: PollerContext) -> None:
    s.done()


@pytest.fixture
def test_protocol() -> Iterator[None]:
    REGISTRY[PROTO] = PollerSpec(default_port=1, parse_options=_no_options, make=_Poller)
    _Poller.made_with.clear()
    try:
        yield
    finally:
        del REGISTRY[PROTO]


def _config(tmp: Path, broker: str, tenant: str, rotate: str) -> Path:
    files = write_keys(tmp / "keys", "rot-agent", tenant)
    text = f"""
[agent]
id = "rot-agent"
tenant = "{tenant}"
site = "lab"
state_dir = "state"
batch_max_age_s = 0.2

[keys]
signing_key = "{files['agent_key']}"
collector_public_key = "{files['collector_pub']}"
tenant_key = "{files['tenant_key']}"
{rotate}

[mqtt]
url = "{broker}"

[[devices]]
name = "fw-1"
address = "{RAW}"
protocol = "{PROTO}"
interval_s = 1
"""
    path = tmp / "agent.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


@contextlib.asynccontextmanager
async def _batches(broker: str, tmp: Path, tenant: str, agent_id: str = "rot-agent"
                   ) -> AsyncIterator[list[tuple[Header, list[Record]]]]:
    """Every batch the agent publishes, opened as the collector would."""
    keydir = tmp / "keys"
    ck = keys.load_collector_private_key((keydir / "collector.key").read_bytes())
    vk = keys.load_verify_key((keydir / f"agent-{agent_id}.pub").read_bytes())
    address = parse_broker_url(broker)
    host, port = address.host, address.port
    got: list[tuple[Header, list[Record]]] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client(host, port, identifier=f"keytest-{tenant}") as client:
            await client.subscribe(topic_for(tenant, agent_id), qos=1)
            ready.set()
            async for msg in client.messages:
                got.append(open_sealed(bytes(msg.payload), {agent_id: vk},  # type: ignore[arg-type]
                                       {ck.key_id: ck}))

    task = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout}s")
        await asyncio.sleep(0.1)


def _tenant(prefix: str) -> str:
    return f"{prefix}{os.getpid()}{int(time.time() * 1000) % 10_000_000}"


async def test_scheduled_rotation_swaps_key_and_headers_follow(
        tmp_path: Path, mosquitto: str, test_protocol: None) -> None:
    tenant = _tenant("rot")
    cfg = agent_config.load(_config(tmp_path, mosquitto, tenant, "tenant_key_rotate_days = 30"))
    key_path = cfg.keys.tenant_key
    old = read_tenant_key(key_path, 1)
    now = [time.time()]
    agent = Agent(cfg, registry=CollectorRegistry(), clock=lambda: now[0])
    stop = asyncio.Event()
    async with _batches(mosquitto, tmp_path, tenant) as got:
        task = asyncio.create_task(agent.run(stop))
        try:
            await _until(lambda: any(old.key_id in h.pseudonym_key_ids for h, _ in got), 30,
                         "a batch under the first key")
            assert key_path.read_text().strip() == old.to_hex()  # not due yet: no rotation
            now[0] += 31 * DAY
            await _until(lambda: any(old.key_id not in h.pseudonym_key_ids for h, _ in got),
                         30, "a batch under the rotated key")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    new = read_tenant_key(key_path, 2)
    assert new.key_id != old.key_id
    archive = key_path.with_name(key_path.name + ".epoch1")
    assert read_tenant_key(archive, 1) == old
    assert os.stat(archive).st_mode & 0o077 == 0 and os.stat(key_path).st_mode & 0o077 == 0
    assert agent.guard.pseudonymiser.key_id == new.key_id
    pkids_seen = set()
    for h, records in got:
        in_records = {r.fields["pkid"] for r in records}
        assert set(h.pseudonym_key_ids) == in_records, (h.pseudonym_key_ids, in_records)
        pkids_seen |= in_records
        assert all(RAW not in str(r.fields.get("message")) for r in records)
    assert pkids_seen == {old.key_id, new.key_id}
    assert _Poller.made_with == [cfg.pollers]
    rotations = agent.registry.get_sample_value("privtel_agent_tenant_key_rotations_total")
    assert rotations == 1

    # a restart on the unchanged config (tenant_key_epoch still 1) finds epoch 2 itself
    again = Agent(agent_config.load(cfg.file), registry=CollectorRegistry())
    assert again.keys.current.key == new and again.keys.current.key.epoch == 2
    assert again.guard.pseudonymiser.key_id == new.key_id
    assert again.keys.due() is False


async def test_rotation_is_off_by_default(tmp_path: Path, mosquitto: str,
                                          test_protocol: None) -> None:
    cfg = agent_config.load(_config(tmp_path, mosquitto, _tenant("norot"), ""))
    now = [time.time() + 3650 * DAY]
    agent = Agent(cfg, registry=CollectorRegistry(), clock=lambda: now[0])
    assert agent.keys.due() is False
    assert await agent.keys.check() is None
    assert not list(tmp_path.glob("keys/*.epoch*"))


async def test_batch_header_names_the_key_ids_its_records_carry(
        tmp_path: Path, mosquitto: str) -> None:
    tenant = _tenant("hdr")
    cfg = agent_config.load(_config_no_devices(tmp_path, mosquitto, tenant))

    def rec(pkid: str | None) -> Record:
        fields: dict[str, Any] = {"message": "x"}
        if pkid is not None:
            fields["pkid"] = pkid
        return Record(kind=Kind.LOG, tenant=tenant, site="lab", device="d", name="log.line",
                      fields=fields)

    shipper = Shipper(cfg, registry=CollectorRegistry(), pseudonym_key_ids=("configured0000",))
    async with _batches(mosquitto, tmp_path, tenant) as got, shipper as sh:
        await sh.submit([rec("aaaa1111aaaa1111"), rec("bbbb2222bbbb2222")])
        assert await sh.flush(20)
        await _until(lambda: len(got) == 1, 20, "the first batch")
        await sh.submit([rec("aaaa1111aaaa1111"), rec(None)])
        assert await sh.flush(20)
        await _until(lambda: len(got) == 2, 20, "the second batch")
    assert got[0][0].pseudonym_key_ids == ("aaaa1111aaaa1111", "bbbb2222bbbb2222")
    # a record without a pkid: the shipper's configured ids are named as well
    assert got[1][0].pseudonym_key_ids == ("aaaa1111aaaa1111", "configured0000")


def _config_no_devices(tmp: Path, broker: str, tenant: str) -> Path:
    path = _config(tmp, broker, tenant, "")
    text = path.read_text()
    path.write_text(text[:text.index("[[devices]]")])
    return path


def test_rotate_file_archives_then_replaces(tmp_path: Path) -> None:
    path = tmp_path / "tenant.key"
    first = TenantKey.generate(1)
    path.write_text(first.to_hex() + "\n")
    path.chmod(0o600)
    old, new, archive = rotate_tenant_key_file(path, 1)
    assert old == first and new.epoch == 2 and archive.name == "tenant.key.epoch1"
    assert load_tenant_key(path, 1).key == new
    with pytest.raises(ConfigError, match="holds another key"):
        rotate_tenant_key_file(path, 1)  # epoch 1 is archived with a different key
    old2, newer, _ = rotate_tenant_key_file(path, 2)
    assert old2 == new and newer.epoch == 3
    assert load_tenant_key(path, 1).key == newer
    assert not list(tmp_path.glob(".*tmp"))


def test_rotation_cut_short_is_finished_next_time(tmp_path: Path) -> None:
    path = tmp_path / "tenant.key"
    key = TenantKey.generate(1)
    for p in (path, path.with_name("tenant.key.epoch1")):  # archived, never replaced
        p.write_text(key.to_hex() + "\n")
        p.chmod(0o600)
    current = load_tenant_key(path, 1)
    assert current.key == key and current.key.epoch == 1 and current.since == 0.0
    old, new, _ = rotate_tenant_key_file(path, 1)
    assert old == key and load_tenant_key(path, 1).key == new


def test_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tenant.key"
    path.write_text(TenantKey.generate(1).to_hex())
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="holds secrets"):
        rotate_tenant_key_file(path, 1)
