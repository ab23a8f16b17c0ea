"""End-to-end fault suite: break a real peer while batches flow, then count what was lost.

Every scenario runs a real collector and agent (end-to-end receipts on) against
a Mosquitto of its own, breaks something, lets it recover, waits until the
agent holds no unreceipted batch and reports accepted, stored, lost and
duplicated; lost and duplicated must be 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import FaultBroker, PgCluster, Site, check, published, wait_until

pytestmark = pytest.mark.timeout(150)


async def test_broker_killed_and_restarted_without_its_state(broker: FaultBroker,
                                                             tmp_path: Path) -> None:
    """Batches the broker acknowledged and no collector took yet die with the broker's
    state; the agent still holds them (no receipt) and resends them."""
    site = Site(tmp_path / "site", broker.url, f"sqlite:///{tmp_path / 'store.db'}")
    try:
        await site.start_collector()
        await site.start_agent()
        assert await wait_until(lambda: published(site) >= 5, 20)
        await site.stop_collector()  # batches now wait at the broker, PUBACKed
        before = published(site)
        assert await wait_until(lambda: published(site) >= before + 5, 20)
        broker.kill9()
        broker.wipe()
        broker.start()
        await asyncio.sleep(0.5)  # the agent reconnects and publishes into the fresh broker
        await site.start_collector()
        await asyncio.sleep(1.0)
        assert await site.finish(60)
        r = site.report("broker kill -9, state wiped")
    finally:
        await site.close()
    check(r)
    assert r.resent > 0, r.line()  # the wiped batches came back only through resends


async def test_broker_restart_with_agents_back_before_the_collector(broker: FaultBroker,
                                                                    tmp_path: Path) -> None:
    site = Site(tmp_path / "site", broker.url, f"sqlite:///{tmp_path / 'store.db'}")
    try:
        await site.start_collector()
        await site.start_agent()
        assert await wait_until(lambda: published(site) >= 5, 20)
        await site.stop_collector()
        broker.stop()
        await asyncio.sleep(0.5)
        broker.start()
        before = published(site)  # the agent is back and publishing; the collector is not
        assert await wait_until(lambda: published(site) >= before + 5, 20)
        await site.start_collector()
        await asyncio.sleep(1.0)
        assert await site.finish(60)
        r = site.report("broker restart, agents first")
    finally:
        await site.close()
    check(r)


@pytest.fixture
def pg() -> Iterator[PgCluster]:
    c = PgCluster()
    c.start()
    try:
        yield c
    finally:
        c.destroy()


async def test_postgresql_stopped_for_30_seconds(broker: FaultBroker, pg: PgCluster,
                                                 tmp_path: Path) -> None:
    site = Site(tmp_path / "site", broker.url, pg.url, receipt_timeout_s=5.0)
    try:
        await site.start_collector()
        await site.start_agent()
        assert await wait_until(lambda: published(site) >= 5, 20)
        await asyncio.to_thread(pg.stop)
        await asyncio.sleep(30)
        await asyncio.to_thread(pg.start)
        assert await site.finish(90)
        r = site.report("PostgreSQL stopped 30 s")
    finally:
        await site.close()
    check(r)
