"""Kill test: SIGKILL the agent at random moments >= 20 times; every record stored exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry
from transport_helpers import Keys, SqliteSink, agent_config, uid, wait_for

from collector.ingest import IngestWorker

DRIVER = Path(__file__).with_name("agent_driver.py")
KILLS = 20


async def _spawn(cfg: Path, ledger: Path, run: int, *extra: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    p = await asyncio.create_subprocess_exec(
        sys.executable, str(DRIVER), str(cfg), str(ledger), str(run), *extra,
        stdout=asyncio.subprocess.PIPE, env=env)
    assert p.stdout is not None
    line = await asyncio.wait_for(p.stdout.readline(), 30)
    assert line.strip() == b"ready", line
    return p


def _ledger(path: Path) -> tuple[set[str], set[str]]:
    confirmed, attempted = set(), set()
    for line in path.read_text().splitlines():
        kind, run, start, n = line.split()
        ids = {f"{int(run):08x}{i:024x}" for i in range(int(start), int(start) + int(n))}
        (confirmed if kind == "done" else attempted).update(ids)
    return confirmed, attempted | confirmed


def _has_done(path: Path, run: int) -> bool:
    return f"done {run} " in path.read_text() if path.exists() else False


async def test_sigkill_loses_and_duplicates_nothing(mosquitto: str, tmp_path: Path) -> None:
    await _kill_runs(mosquitto, tmp_path, KILLS)


async def test_sigkill_with_grouped_submits(mosquitto: str, tmp_path: Path) -> None:
    """Four callers submitting at once, so their records share group commits: every
    record a submit acknowledged survives the SIGKILL and is stored exactly once."""
    await _kill_runs(mosquitto, tmp_path, 8, "--callers", "4")


async def _kill_runs(mosquitto: str, tmp_path: Path, kills: int, *extra: str) -> None:
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    store = SqliteSink(tmp_path / "store.db")
    reg = CollectorRegistry()
    agent_config(tmp_path / "agent", k, tenant, mosquitto, batch_max_records=20,
                 batch_max_age_s=0.05, spool="inflight = 8")
    cfg, ledger = tmp_path / "agent" / "agent.toml", tmp_path / "ledger"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    async with IngestWorker(broker_url=mosquitto, sink=store.sink, quarantine=store.quarantine,
                            agent_keys=k.agent_keys, collector_keys=k.collector_keys,
                            registry=reg, topic_filter=f"privtel/v1/{tenant}/+/batches",
                            client_id=f"ingest-{tenant}") as w:
        assert await wait_for(w.subscribed.is_set)
        for run in range(kills):
            p = await _spawn(cfg, ledger, run, *extra)
            # every run gets at least one confirmed submit, then dies at a random moment
            assert await wait_for(lambda run=run: _has_done(ledger, run), timeout=30)
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            p.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(p.wait(), 10) == -signal.SIGKILL
        p = await _spawn(cfg, ledger, kills, "--final", *extra)
        assert await asyncio.wait_for(p.wait(), 60) == 0
        confirmed, attempted = _ledger(ledger)
        assert await wait_for(lambda: confirmed <= set(store.record_ids()), timeout=30)
    ids = store.record_ids()
    assert len(ids) == len(set(ids)), "a record was stored twice"
    assert confirmed <= set(ids), f"{len(confirmed - set(ids))} confirmed records lost"
    assert set(ids) <= attempted, "a record nobody submitted was stored"
    assert len({i[:8] for i in confirmed}) == kills + 1
    assert store.reasons() == []
