"""A stand-in collector process for the crash test: one IngestWorker and a SQLite sink.

Usage: python collector_driver.py STORE URL TENANT CLIENT_ID GROUP AGENT AGENT_PUB
       COLLECTOR_KEY MODE

MODE `hang-before-commit` never commits (the test kills it there), `hang-after-commit`
commits and never returns (so never acknowledges), `normal` runs until killed.
Prints `subscribed`, then `sink <batch id>` on each sink call and `outcome <result>`
(accepted or duplicate, as the store answered).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: the shared factories

from prometheus_client import CollectorRegistry
from transport_helpers import SqliteSink

from collector.ingest import IngestWorker
from pipelines import keys
from pipelines.envelope import Header
from pipelines.record import Record


async def main(store_path: str, url: str, tenant: str, client_id: str, group: str, agent: str,
               agent_pub: str, collector_key: str, mode: str) -> None:
    store = SqliteSink(Path(store_path))
    ck = keys.load_collector_private_key(Path(collector_key).read_bytes())

    async def sink(h: Header, recs: list[Record]) -> bool:
        print(f"sink {h.batch_id}", flush=True)
        if mode == "hang-before-commit":
            await asyncio.Event().wait()
        stored = await store.sink(h, recs)
        if mode == "hang-after-commit":
            print("committed", flush=True)
            await asyncio.Event().wait()
        print(f"outcome {'accepted' if stored else 'duplicate'}", flush=True)
        return stored

    w = IngestWorker(broker_url=url, sink=sink, quarantine=store.quarantine,
                     agent_keys={agent: keys.load_verify_key(Path(agent_pub).read_bytes())},
                     collector_keys={ck.key_id: ck}, registry=CollectorRegistry(),
                     shared_group=group, topic_filter=f"privtel/v1/{tenant}/+/batches",
                     client_id=client_id, backoff_initial_s=0.1)
    async with w:
        await w.subscribed.wait()
        print("subscribed", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:10]))
