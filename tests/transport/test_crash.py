"""Collector killed between receiving and committing (or before acknowledging): stored once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiomqtt
import pytest
from transport_helpers import Keys, SqliteSink, header, records, uid, write_private

from pipelines import keys
from pipelines.envelope import seal, topic_for

DRIVER = Path(__file__).with_name("collector_driver.py")


class Collector:
    def __init__(self, tmp: Path, url: str, tenant: str, k: Keys) -> None:
        self.args = [str(tmp / "store.db"), url, tenant, f"crash-{uid()}", f"g{uid()}", k.agent,
                     str(write_private(tmp / "agent.pub", keys.verify_key_pem(
                         k.signing.public_key()))),
                     str(write_private(tmp / "collector.key", k.collector.pem))]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, mode: str) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[2]), str(Path(__file__).parent)])}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(DRIVER), *self.args, mode, stdout=asyncio.subprocess.PIPE,
            env=env)
        await self.expect("subscribed")

    async def expect(self, prefix: str) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode().strip()
            assert line, f"collector exited before printing {prefix!r}"
            if line.startswith(prefix):
                return line

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)


@pytest.mark.parametrize("mode", ["hang-before-commit", "hang-after-commit"])
async def test_collector_crash_means_redelivery_not_loss(mosquitto: str, tmp_path: Path,
                                                         mode: str) -> None:
    tenant, k = f"t{uid()}", Keys(f"a{uid()}")
    col = Collector(tmp_path, mosquitto, tenant, k)
    batch = seal(header(tenant, k.agent, seq=5), records(tenant, 4), k.collector.public,
                 k.signing)
    await col.start(mode)
    async with aiomqtt.Client("127.0.0.1", 1883, timeout=5) as c:
        await c.publish(topic_for(tenant, k.agent), batch, qos=1)
    first = await col.expect("sink ")
    if mode == "hang-after-commit":
        await col.expect("committed")
    await col.kill()

    await col.start("normal")
    try:
        assert await col.expect("sink ") == first
        outcome = await col.expect("outcome ")
    finally:
        await col.kill()
    assert outcome == ("outcome accepted" if mode == "hang-before-commit"
                       else "outcome duplicate")
    store = SqliteSink(tmp_path / "store.db")
    assert store.count("SELECT count(*) FROM batches") == 1
    assert store.count("SELECT count(*) FROM records") == 4
    assert store.count("SELECT count(DISTINCT id) FROM records") == 4
