"""A stand-in agent process for the kill test: submits synthetic records through a real Shipper.

Usage: python agent_driver.py CONFIG LEDGER RUN [--final] [--callers N]

Record ids are `<run:08x><counter:024x>`, so every run's records are distinct.
Before each submit it appends `intent RUN START N` to LEDGER and after the
submit returns `done RUN START N` (both fsynced): records of a `done` line must
reach the store exactly once; records of an intent without a done line may or
may not (the process died inside submit). With --final it submits one chunk,
waits until the spool is empty and exits 0. With --callers N, N tasks submit at the
same time (the spool commits them in groups), each with its own counter range.
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


async def main(config: str, ledger: str, run: int, final: bool, callers: int) -> int:
    cfg = load(config)
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    async with Shipper(cfg, registry=CollectorRegistry(), backoff_initial_s=0.1) as s:
        print("ready", flush=True)

        async def caller(c: int) -> None:
            counter = c << 40
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
                    return
                await asyncio.sleep(0.01)

        await asyncio.gather(*(caller(c) for c in range(callers)))
        return 0 if await s.flush(timeout=30) else 1


if __name__ == "__main__":
    args = sys.argv
    n = int(args[args.index("--callers") + 1]) if "--callers" in args else 1
    sys.exit(asyncio.run(main(args[1], args[2], int(args[3]), "--final" in args, n)))
