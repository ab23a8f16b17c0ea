"""The collector process parks what an operator can fix, and `privtel collector parked
replay` stores it after the fix, exactly once: real Mosquitto, both store backends.

Before, a wrong collector key quarantined every batch as a digest and
acknowledged it, so agents deleted it: unrecoverable once the key was fixed.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiomqtt
from factories import on_backends
from transport_helpers import Keys, header, records, uid, wait_for, write_private

from collector import config as collector_config
from collector.parking import ParkingLot
from collector.runtime import Collector
from collector.store import open_db
from pipelines import keys
from pipelines.envelope import seal, topic_for
from privtel.cli import main as cli
from privtel.demo.run import running

pytestmark = on_backends


def write_config(tmp: Path, name: str, store_url: str, k: Keys, tenant: str,
                 private: list[keys.CollectorPrivateKey], *, region: str | None = None,
                 allowed: list[str] | None = None, collector_extra: str = "") -> Path:
    for i, key in enumerate(private):
        write_private(tmp / f"{name}-c{i}.key", key.pem)
    write_private(tmp / "agent.pub", keys.verify_key_pem(k.signing.public_key()))
    key_list = ", ".join(f'"{name}-c{i}.key"' for i in range(len(private)))
    text = f"""
[collector]
store = "{store_url}"
metrics_listen = "127.0.0.1:0"
{f'region = "{region}"' if region else ''}
{collector_extra}

[mqtt]
url = "mqtt://127.0.0.1:1883"
client_id = "parking-{uid()}"

[keys]
private_keys = [{key_list}]

[[agents]]
id = "{k.agent}"
tenant = "{tenant}"
public_key = "agent.pub"
"""
    if allowed is not None:
        text += f"\n[tenants.{tenant}]\nregions = {allowed!r}\n".replace("'", '"')
    return write_private(tmp / f"{name}.toml", text.encode())


async def publish(msgs: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", 1883, timeout=10,
                              identifier=f"parking-pub-{uid()}") as pub:
        for topic, payload in msgs:
            await pub.publish(topic, payload, qos=1, timeout=10)


async def run_cli(argv: list[str]) -> int:
    """The real CLI, in a thread: it runs its own event loop."""
    return await asyncio.to_thread(cli, argv)


def parked(store_url: str, reason: str | None = None) -> int:
    db = open_db(store_url)
    try:
        return ParkingLot(db).count(reason)
    finally:
        db.close()


async def run_collector(cfg_path: Path, tenant: str, msgs: list[tuple[str, bytes]],
                        done: object) -> Collector:
    col = Collector(collector_config.load(cfg_path),
                    topic_filter=f"privtel/v1/{tenant}/+/batches")
    async with running(col):
        await publish(msgs)
        assert await wait_for(done, 30)  # type: ignore[arg-type]
    return col


async def test_wrong_key_parks_then_replay_stores_exactly_once(
        tmp_path: Path, mosquitto: str, store_url: str) -> None:
    tenant, agent = f"t{uid()}", f"a{uid()}"
    k = Keys(agent)
    wrong = keys.generate_collector_key()
    msgs = [(topic_for(tenant, agent),
             seal(header(tenant, agent, seq=i), records(tenant, 4, start=10 * i),
                  k.collector.public, k.signing)) for i in range(1, 6)]
    bad = write_config(tmp_path, "bad", store_url, k, tenant, [wrong])
    col = await run_collector(bad, tenant, msgs, lambda: parked(store_url, "unknown_key") == 5)
    assert col.registry.get_sample_value("privtel_batches_parked_total",
                                         {"reason": "unknown_key"}) == 5
    assert col.registry.get_sample_value("privtel_batches_accepted_total") == 0

    fixed = write_config(tmp_path, "fixed", store_url, k, tenant, [wrong, k.collector])
    assert await run_cli(["collector", "parked", "list", "--config", str(fixed)]) == 0
    assert await run_cli(["collector", "parked", "replay", "--config", str(fixed), "--all"]) == 0
    assert parked(store_url) == 0
    assert await run_cli(["collector", "parked", "replay", "--config", str(fixed), "--all"]) == 0
    db = open_db(store_url)
    try:
        assert db.count_records(tenant=tenant) == 20
        assert db.count_batches(agent_id=agent) == 5
        # the broker (or the agent) delivers one again: a duplicate, not a second copy
        col2 = Collector(collector_config.load(fixed),
                         topic_filter=f"privtel/v1/{tenant}/+/batches")
        async with running(col2):
            await publish(msgs[:2])
            assert await wait_for(lambda: (col2.registry.get_sample_value(
                "privtel_batches_rejected_total", {"reason": "duplicate"}) or 0) >= 2, 30)
        assert db.count_records(tenant=tenant) == 20
        with db.tx() as cur:
            actions = [r[0] for r in cur.execute(
                "SELECT action FROM audit_log ORDER BY seq").fetchall()]
        assert actions.count("collector.parked.replay") == 2
    finally:
        db.close()


async def test_residency_parks_and_a_collector_of_an_allowed_region_stores_once(
        tmp_path: Path, mosquitto: str, store_url: str) -> None:
    tenant, agent = f"t{uid()}", f"a{uid()}"
    k = Keys(agent)
    msgs = [(topic_for(tenant, agent),
             seal(header(tenant, agent, seq=i), records(tenant, 3, start=10 * i),
                  k.collector.public, k.signing)) for i in range(1, 4)]
    za = write_config(tmp_path, "za", store_url, k, tenant, [k.collector], region="za",
                      allowed=["ng"])
    col = await run_collector(za, tenant, msgs, lambda: parked(store_url, "residency") == 3)
    assert col.registry.get_sample_value("privtel_batches_parked_total",
                                         {"reason": "residency"}) == 3
    # replayed where it is still not allowed: stays parked, nothing stored
    assert await run_cli(["collector", "parked", "replay", "--config", str(za), "--all"]) == 0
    assert parked(store_url, "residency") == 3
    ng = write_config(tmp_path, "ng", store_url, k, tenant, [k.collector], region="ng",
                      allowed=["ng"])
    assert await run_cli(["collector", "parked", "replay", "--config", str(ng),
                "--reason", "residency"]) == 0
    assert await run_cli(["collector", "parked", "replay", "--config", str(ng), "--all"]) == 0
    assert parked(store_url) == 0
    db = open_db(store_url)
    try:
        assert db.count_records(tenant=tenant) == 9
        assert db.count_batches(agent_id=agent) == 3
        # purge by id and by age
        lot = ParkingLot(db)
        pid = lot.park("residency", msgs[0][0], None, os.urandom(64), "test")
        purge = ["collector", "parked", "purge", "--config", str(ng)]
        assert await run_cli([*purge, "--older-than", "0", "--dry-run"]) == 0
        assert lot.payload(pid) is not None
        assert await run_cli([*purge, "--id", pid]) == 0
        assert lot.payload(pid) is None
    finally:
        db.close()


async def test_the_collector_purge_service_expires_parked_batches(
        tmp_path: Path, store_url: str) -> None:
    tenant, agent = f"t{uid()}", f"a{uid()}"
    k = Keys(agent)
    policy = tmp_path / "retention.toml"
    policy.write_text("""
version = 1
[classes.short]
days = 1
legal_basis = "test"
[[rules]]
kind = "*"
class = "short"
[operational.parked_batches]
days = 30
legal_basis = "kept for an operator to fix the cause and replay"
""")
    cfg_path = write_config(tmp_path, "p", store_url, k, tenant, [k.collector],
                            collector_extra=f'retention_policy = "{policy}"')
    col = Collector(collector_config.load(cfg_path))
    try:
        now = time.time()
        old = ParkingLot(col.audit_db, clock=lambda: now - 31 * 86400)
        stale = old.park("unknown_key", topic_for(tenant, agent), None, os.urandom(80), "old")
        fresh = col.parking.park("unknown_key", topic_for(tenant, agent), None,
                                 os.urandom(80), "new")
        result = col.retention.purge(trigger="scheduled")
        assert result.parked == 1
        assert col.parking.payload(stale) is None and col.parking.payload(fresh) is not None
        assert col.registry.get_sample_value(
            "privtel_retention_purged_parked_batches_total") == 1
    finally:
        col.store.close()
        col.audit_db.close()
