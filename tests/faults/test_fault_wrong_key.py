"""Fault: the collector runs with a valid but wrong private key, then the key is fixed.

Every batch of that time is refused as `unknown_key`; it must be parked with its
sealed bytes (and receipted as parked, so the agent may forget it), and after the
fix `privtel collector parked replay` must store each exactly once. Needs parking
(`collector.replay`, issue 12 item 2).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from harness import FaultBroker, Site, check, published, wait_until

from pipelines import keys
from plumbing.files import write_private

pytest.importorskip("collector.replay", reason="parking (issue 12 item 2) is not merged yet")
from privtel.cli import main as cli

pytestmark = pytest.mark.timeout(150)


def parked(site: Site) -> float:
    return site.areg.get_sample_value("privtel_agent_receipts_received_total",
                                      {"outcome": "parked"}) or 0.0


async def test_wrong_collector_key_then_fixed_and_parked_batches_replayed(
        broker: FaultBroker, tmp_path: Path) -> None:
    site = Site(tmp_path / "site", broker.url, f"sqlite:///{tmp_path / 'store.db'}")
    wrong = tmp_path / "site" / "wrong-collector.key"
    write_private(wrong, keys.generate_collector_key().pem)
    config = site.write_collector_config(private_key=wrong)
    try:
        await site.start_collector()
        await site.start_agent()
        assert await wait_until(lambda: parked(site) >= 5, 30)
        await site.stop_collector()
        site.write_collector_config()  # the fix: the right key
        before = published(site)
        assert await wait_until(lambda: published(site) >= before + 3, 20)
        await site.start_collector()
        assert await asyncio.to_thread(
            cli, ["collector", "parked", "replay", "--config", str(config), "--all"]) == 0
        assert await site.finish(60)
        r = site.report("wrong collector key, fixed, parked replayed")
    finally:
        await site.close()
    check(r)
