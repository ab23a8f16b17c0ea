"""A stand-in agent process for the kill test: submits synthetic records through a real Shipper.

Usage: python agent_driver.py CONFIG LEDGER RUN [--final]

Record ids are `<run:08x><counter:024x>`, so every run's records are distinct.
Before each submit it appends `intent RUN START N` to LEDGER and after the
submit returns `done RUN START N` (both fsynced): records of a `done` line must
reach the store exactly once; records of an intent without a done line may or
may not (the process died inside submit). With --final it submits one chunk,
waits until the spool is empty and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import sys

from prometheus_client import CollectorRegistry

from agents.config import load
from agents.shipper import Shipper
from pipelines.record import Kind, Record


def _append(f: int, line: str) -> None:
    os.write(f, line.encode() + b"\n")
    os.fsync(f)


async def main(config: str, ledger: str, run: int, final: bool) -> int:
    cfg = load(config)
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    counter = 0
    async with Shipper(cfg, registry=CollectorRegistry(), backoff_initial_s=0.1) as s:
        print("ready", flush=True)
        while True:
            n = 7
            recs = [Record(kind=Kind.METRIC, tenant=cfg.tenant, site=cfg.site, device="d1",
                           name="if", fields={"if_index": counter + i, "in_octets": run},
                           id=f"{run:08x}{counter + i:024x}") for i in range(n)]
            _append(fd, f"intent {run} {counter} {n}")
            await s.submit(recs)
            _append(fd, f"done {run} {counter} {n}")
            counter += n
            if final:
                return 0 if await s.flush(timeout=30) else 1
            await asyncio.sleep(0.01)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), "--final" in sys.argv)))
