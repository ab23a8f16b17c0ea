"""Ingest throughput: sealed batches through the real broker into the store.

For each backend (SQLite, PostgreSQL) this measures, in one run:

* raw insert: the same rows, already tagged, written with `store.write_batch`
  by W processes; no broker, no verification, no decryption. The ceiling.
* verified ingest: the batches sealed beforehand (sealing is the agent's cost),
  published to Mosquitto at QoS 1, taken by W `IngestWorker` processes on one
  MQTT 5 shared subscription, verified, decrypted, tagged and stored; timed
  from the first publish until the store holds every record.

    python bench/ingest.py [--records 200000] [--batch 500] [--workers 2] [--scale 1,2,4]

With `--workers 4` (or more) PostgreSQL is also run with 1, 2, 4, ... workers
in turn against the one server, to show how throughput grows with workers
(key postgres_scale in the JSON).

Beside the rates it reports CPU time per record over the timed interval, read
from /proc: the worker processes, their database backends (PostgreSQL), and the
whole box (which includes whatever else runs on it: compare within one run).
Before the runs it prints the CPU microseconds per record of each in-process
stage on one core (verify, decrypt, decompress, decode and validate, the
leak re-check, retention tagging, NOC observation, COPY text encoding, and
worker_path: all of an ingest worker's own work per record from the sealed
bytes to the COPY text, one thread), best of 3.
`--check-threads 0` checks on the event loop instead of the pool (the
behaviour before `collector.ingest_pool`), for alternating before/after runs.
Each verified run also reports the CPU its workers spent, per record, inside
the check (verify, decrypt, decode, the leak re-check's verdict: in_check; of
which the re-check: in_recheck), the commit thread (in_commit: retention
tagging, in_tag, and the store call, in_store: COPY text and the driver) and
the NOC observation (in_noc); the rest of the worker CPU is the broker
client, the event loop and thread hand-offs. The database backends' CPU is
db_backends, the local Mosquitto's broker (its whole CPU: other clients on
the box count too).
With PRIVTEL_BENCH_PROFILE=<dir> each ingest worker writes a pstats profile
(every thread, CPU clock, when yappi is installed; else the event loop
thread's CPU time).

The query API's indexes are part of the store schema since migration 0004, so
every run includes them; `--api-indexes` is accepted for old command lines.

Prints a table and, last, one JSON line with sqlite_records_per_s,
sqlite_raw_insert_per_s, postgres_records_per_s, postgres_raw_insert_per_s
(and the CPU figures as <backend>_<run>_cpu_us_per_record_<what>).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

# The checkout this file is in, before any installed copy: `python bench/ingest.py`
# puts only bench/ on the path, and an editable install elsewhere would be measured
# instead (spawned workers inherit the path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.store import BatchMeta, open_store
from pipelines.record import Kind, Record

PG_DSN = os.environ.get("PRIVTEL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
AGENTS = 4
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used; 0 if it is gone or unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def box_cpu() -> float:
    """CPU seconds all cores of the box spent busy (not idle or waiting for I/O)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / TICK


def broker_pid() -> int | None:
    """The local Mosquitto's pid, if one runs here (its CPU is the broker's share)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/comm") as f:
                    if f.read().strip() == "mosquitto":
                        return int(entry.name)
            except OSError:
                continue
    return None


class CpuMeter:
    """Samples the CPU of the given processes, of the broker (all its clients, this
    run's and any other on the box) and of the box between start and stop."""

    def __init__(self, workers: list[int], backends: list[int | None]) -> None:
        self.workers, self.backends, self.broker = workers, backends, broker_pid()

    def sample(self) -> tuple[float, float, float, float]:
        return (sum(proc_cpu(p) for p in self.workers),
                sum(proc_cpu(p) for p in self.backends), proc_cpu(self.broker), box_cpu())

    def start(self) -> None:
        self.t0 = self.sample()

    def stop(self, records: int) -> dict[str, float]:
        t1 = self.sample()
        w, b, mq, box = (round((y - x) / records * 1e6, 2)
                         for x, y in zip(self.t0, t1, strict=True))
        return {"workers": w, "db_backends": b, "broker": mq, "box": box}


def backend_pid(store: Any) -> int | None:
    """The PostgreSQL backend serving this store's connection (None for SQLite)."""
    info = getattr(getattr(store, "_db", None), "info", None)
    return getattr(info, "backend_pid", None)


def make_records(tenant: str, n: int, offset: int, now: float) -> list[Record]:
    """Interface rows as an SNMP poll yields them: 48 per device poll sharing its time,
    polls half a second apart, so times rise from batch to batch as in production
    (an index led by time sees appends, not a single key repeated)."""
    return [Record(kind=Kind.METRIC, tenant=tenant, site=f"site{i % 7}",
                   device=f"dev{(offset + i) % 97:04x}", name="if",
                   fields={"if_index": i % 48, "if_name": f"ge-0/0/{i % 48}", "if_descr": "eth",
                           "if_alias": "", "in_octets": 10_000_000 + offset + i,
                           "out_octets": 20_000_000 + offset + i, "in_errors": i % 3,
                           "out_errors": 0, "in_discards": 0, "out_discards": i % 2,
                           "oper_status": 1, "admin_status": 1, "speed_bps": 1_000_000_000},
                   ts=now - 3600 + (offset + i) // 48 * 0.5) for i in range(n)]


def raw_worker(url: str, tenant: str, batches: list[tuple[int, int]], now: float,
               start: Any, release: Any, done: Any) -> None:
    from collector.retention import RetentionService

    store = open_store(url)
    tagger = RetentionService(None)
    work = []
    for n, size in batches:
        recs = make_records(tenant, size, n * size, now)
        meta = BatchMeta(agent_id=f"raw{n % AGENTS}", batch_id=os.urandom(16).hex(), seq=n,
                         tenant=tenant, created=now, received_at=now)
        work.append((meta, tagger.tag(recs, now=now)))
    done.put(("ready", os.getpid(), backend_pid(store)))
    start.wait()
    for meta, tagged in work:
        store.write_batch(meta, tagged)
    done.put("done")
    release.wait()  # the parent reads this backend's CPU time before it goes away
    store.close()


def ingest_worker(url: str, broker: str, group: str, tenant: str, index: int,
                  collector_pem: bytes, agent_raw: dict[str, bytes], stop: Any, out: Any,
                  check_threads: int | None) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from prometheus_client import CollectorRegistry

    import collector.ingest as ingest_module
    from collector.ingest import IngestWorker
    from collector.outputs import build_outputs
    from collector.retention import RetentionService
    from collector.store.sink import StoreSink
    from pipelines.keys import load_collector_private_key

    spent: dict[str, float] = {}

    def timed(stage: str, f: Any) -> Any:
        """`f`, adding the CPU time of its thread to `spent[stage]`."""
        def call(*args: Any) -> Any:
            t = time.thread_time()
            try:
                return f(*args)
            finally:
                spent[stage] = spent.get(stage, 0.0) + time.thread_time() - t
        return call

    async def main() -> None:
        ck = load_collector_private_key(collector_pem)
        agents = {a: ed25519.Ed25519PublicKey.from_public_bytes(k) for a, k in agent_raw.items()}
        store = open_store(url)
        reg = CollectorRegistry()
        outputs = build_outputs(["noc"], reg)
        await outputs.start()
        sink = StoreSink(store, timed("tag", RetentionService(None).tag), outputs)
        sink.write = timed("commit", sink.write)  # type: ignore[method-assign]
        store.write_batch = timed("store", store.write_batch)  # type: ignore[method-assign]
        if hasattr(ingest_module, "held_back"):  # absent before the re-check moved to the pool
            ingest_module.held_back = timed("recheck", ingest_module.held_back)
        for o in outputs.outputs:
            o.noc.observe = timed("noc", o.noc.observe)  # type: ignore[attr-defined]
        w = IngestWorker(broker_url=broker, sink=sink.sink, quarantine=sink.quarantine,
                         agent_keys=agents, collector_keys={ck.key_id: ck}, registry=reg,
                         shared_group=group, topic_filter=f"privtel/v1/{tenant}/+/batches",
                         client_id=f"{group}-w{index}", session_expiry_s=0,
                         check_threads=check_threads)
        w._check = timed("check", w._check)  # type: ignore[method-assign]
        async with w:
            await asyncio.wait_for(w.subscribed.wait(), 30)
            out.put(("ready", index, os.getpid(), backend_pid(store)))
            while not stop.is_set():
                await asyncio.sleep(0.05)
        out.put(("received", index, reg.get_sample_value("privtel_batches_received_total"),
                 reg.get_sample_value("privtel_batches_accepted_total"), dict(spent)))
        await outputs.close()
        store.close()

    profile_dir = os.environ.get("PRIVTEL_BENCH_PROFILE")
    if not profile_dir:
        asyncio.run(main())
        return
    try:  # every thread, CPU time: the commit runs on a worker thread
        import yappi
    except ImportError:
        import cProfile

        with cProfile.Profile(time.thread_time) as prof:  # the event loop thread's CPU only
            asyncio.run(main())
        prof.dump_stats(f"{profile_dir}/ingest-w{index}.prof")
        return
    yappi.set_clock_type("cpu")
    yappi.start()
    asyncio.run(main())
    yappi.stop()
    yappi.get_func_stats().save(f"{profile_dir}/ingest-w{index}.prof", type="pstat")


def wait_stored(url: str, tenant: str, batches: int, records: int, timeout: float) -> float:
    """Poll the small batches table (a batch and its records commit together), then
    check the record count once."""
    store = open_store(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if store.count_batches(tenant=tenant) >= batches:
                done = time.perf_counter()
                got = store.count_records(tenant=tenant)
                if got != records:
                    raise SystemExit(f"stored {got} records, expected {records}")
                return done
            time.sleep(0.05)
    finally:
        store.close()
    raise SystemExit(f"timed out: the store did not reach {batches} batches in {timeout} s")


def run_raw(ctx: Any, url: str, tenant: str, n_batches: int, size: int, workers: int,
            now: float) -> tuple[float, dict[str, float]]:
    start, release, done = ctx.Event(), ctx.Event(), ctx.Queue()
    plan = [[(n, size) for n in range(i, n_batches, workers)] for i in range(workers)]
    procs = [ctx.Process(target=raw_worker, args=(url, tenant, p, now, start, release, done))
             for p in plan]
    for p in procs:
        p.start()
    pids, backends = [], []
    for _ in procs:
        msg = done.get(timeout=300)
        assert msg[0] == "ready"
        pids.append(msg[1])
        backends.append(msg[2])
    cpu = CpuMeter(pids, backends)
    cpu.start()
    t0 = time.perf_counter()
    start.set()
    for _ in procs:
        assert done.get(timeout=600) == "done"
    t1 = time.perf_counter()
    used = cpu.stop(n_batches * size)
    release.set()
    for p in procs:
        p.join(30)
    return n_batches * size / (t1 - t0), used


def run_verified(ctx: Any, url: str, broker: str, tenant: str, n_batches: int, size: int,
                 workers: int, now: float, check_threads: int | None = None
                 ) -> tuple[float, list[float], dict[str, float]]:
    import aiomqtt
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from pipelines import keys
    from pipelines.envelope import Header, seal, topic_for

    collector = keys.generate_collector_key()
    signers = {f"agent{i}": ed25519.Ed25519PrivateKey.generate() for i in range(AGENTS)}
    messages = []
    for n in range(n_batches):
        agent = f"agent{n % AGENTS}"
        h = Header(tenant=tenant, agent_id=agent, batch_id=os.urandom(16).hex(),
                   seq=n // AGENTS, created=now)
        messages.append((topic_for(tenant, agent),
                         seal(h, make_records(tenant, size, n * size, now), collector.public,
                              signers[agent])))
    agent_raw = {a: k.public_key().public_bytes_raw() for a, k in signers.items()}
    group = f"bench{os.urandom(3).hex()}"
    stop, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=ingest_worker, args=(url, broker, group, tenant, i,
                                                     collector.pem, agent_raw, stop, out,
                                                     check_threads))
             for i in range(workers)]
    for p in procs:
        p.start()
    pids, backends = [], []
    for _ in procs:
        msg = out.get(timeout=60)
        assert msg[0] == "ready"
        pids.append(msg[2])
        backends.append(msg[3])
    cpu = CpuMeter(pids, backends)
    host, port = broker.removeprefix("mqtt://").split(":")

    async def publish() -> None:
        async with aiomqtt.Client(host, int(port), timeout=30, max_inflight_messages=100,
                                  identifier=f"{group}-pub") as c:
            sem = asyncio.Semaphore(8)

            async def one(topic: str, payload: bytes) -> None:
                async with sem:
                    await c.publish(topic, payload, qos=1, timeout=30)

            await asyncio.gather(*(one(t, p) for t, p in messages))

    cpu.start()
    t0 = time.perf_counter()
    asyncio.run(publish())
    t1 = wait_stored(url, tenant, n_batches, n_batches * size, 600)
    used = cpu.stop(n_batches * size)
    stop.set()
    shares = []
    for _ in procs:
        msg = out.get(timeout=60)
        shares.append(msg[2] or 0.0)
        for stage, cpu_s in msg[4].items():
            used[f"in_{stage}"] = round(used.get(f"in_{stage}", 0.0)
                                        + cpu_s / (n_batches * size) * 1e6, 2)
    for p in procs:
        p.join(30)
    return n_batches * size / (t1 - t0), shares, used


def stage_costs(size: int) -> dict[str, float]:
    """Microseconds per record of each in-process stage of verified ingest, best of 3,
    to show where the time goes when the ratio to the raw rate is low."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from prometheus_client import CollectorRegistry

    import collector.recheck as recheck_module
    from collector.metrics.noc import NocMetrics
    from collector.retention import RetentionService
    from collector.store.postgres import _copy_text
    from pipelines import envelope, keys
    from pipelines.envelope import Header, seal
    from pipelines.record import decode

    now = time.time()
    ck, sk = keys.generate_collector_key(), ed25519.Ed25519PrivateKey.generate()
    batches = [make_records("bench", size, n * size, now) for n in range(10)]
    sealed = [seal(Header(tenant="bench", agent_id="a", batch_id=os.urandom(16).hex(), seq=n,
                          created=now), b, ck.public, sk) for n, b in enumerate(batches)]
    agents, cks = {"a": sk.public_key()}, {ck.key_id: ck}
    verified = [envelope.verify(m, agents) for m in sealed]
    suite = keys.suite(verified[0].header.suite)
    compressed = [suite.decrypt(v.ciphertext, ck.key,
                                info=envelope.HPKE_INFO_PREFIX + v.header_json)
                  for v in verified]
    bodies = [envelope._decompress(c, envelope.MAX_BODY_BYTES) for c in compressed]
    tagger = RetentionService(None)
    tagged = [tagger.tag(b, now=now) for b in batches]
    noc = NocMetrics(CollectorRegistry())
    meta = BatchMeta(agent_id="a", batch_id="b", seq=0, tenant="bench", created=now,
                     received_at=now)

    # the batch-wide verdict (ingest runs it on its check pool); before it, record by record
    recheck: Any = getattr(recheck_module, "held_back", None) or (
        lambda b: [r for r in b if recheck_module.findings(r)])

    def best(f: Any) -> float:
        times = []
        for _ in range(3):
            t = time.process_time()
            f()
            times.append(time.process_time() - t)
        return round(min(times) / (10 * size) * 1e6, 2)

    return {
        "verify_us": best(lambda: [envelope.verify(m, agents) for m in sealed]),
        "decrypt_us": best(lambda: [suite.decrypt(v.ciphertext, ck.key,
                                                  info=envelope.HPKE_INFO_PREFIX + v.header_json)
                                    for v in verified]),
        "decompress_us": best(lambda: [envelope._decompress(c, envelope.MAX_BODY_BYTES)
                                       for c in compressed]),
        "decode_validate_us": best(lambda: [decode(b) for b in bodies]),
        "verify_decrypt_decode_us": best(lambda: [envelope.open_sealed(m, agents, cks)
                                                  for m in sealed]),
        "leak_recheck_us": best(lambda: [recheck(b) for b in batches]),
        "retention_tag_us": best(lambda: [tagger.tag(b, now=now) for b in batches]),
        "noc_observe_us": best(lambda: [noc.observe(b) for b in batches]),
        "copy_encode_us": best(lambda: [_copy_text(meta, t) for t in tagged]),
        "worker_path_us": best(lambda: worker_path(sealed, agents, cks, tagger, meta, now)),
    }


def worker_path(sealed: list[bytes], agents: Any, cks: Any, tagger: Any, meta: BatchMeta,
                now: float) -> None:
    """What an ingest worker does per batch between the broker and the driver, in one
    thread: its check (split, verify, decrypt, decode, admission, the leak verdict),
    the re-check's screen, retention tagging and the COPY text."""
    import inspect

    from prometheus_client import CollectorRegistry

    from collector.ingest import IngestWorker
    from collector.recheck import screen
    from collector.store.postgres import _copy_text
    from pipelines.envelope import topic_for

    w = IngestWorker(broker_url="mqtt://127.0.0.1:1883", sink=None,  # type: ignore[arg-type]
                     quarantine=None,  # type: ignore[arg-type]
                     agent_keys=agents, collector_keys=cks, registry=CollectorRegistry())
    held = "held" in inspect.signature(screen).parameters

    async def kept(*_: Any) -> None:
        return None

    async def run() -> None:
        for m in sealed:
            c = w._check(topic_for("bench", "a"), m)
            if c.error is not None:
                raise SystemExit(f"worker path: {c.error}")
            c = await (screen(c, kept, held=c.held) if held else screen(c, kept))
            _copy_text(meta, tagger.tag(c.records, now=now))

    asyncio.run(run())


def bench_backend(ctx: Any, backend: str, args: argparse.Namespace, tmp: Path,
                  workers: int) -> dict[str, Any]:
    now = time.time()
    n_batches = max(1, args.records // args.batch)
    suffix = os.urandom(4).hex()
    if backend == "sqlite":
        raw_url = f"sqlite:///{tmp}/raw-{suffix}.db"
        ing_url = f"sqlite:///{tmp}/ingest-{suffix}.db"
        cleanup: list[str] = []
    else:
        raw_url = f"{args.pg}?schema=privtel_bench_raw_{suffix}"
        ing_url = f"{args.pg}?schema=privtel_bench_ing_{suffix}"
        cleanup = [f"privtel_bench_raw_{suffix}", f"privtel_bench_ing_{suffix}"]
    try:
        for url in (raw_url, ing_url):
            s = open_store(url)
            s.migrate()
            s.close()
        raw, raw_cpu = run_raw(ctx, raw_url, "bench", n_batches, args.batch, workers, now)
        verified, shares, cpu = run_verified(ctx, ing_url, args.broker, f"b{suffix}",
                                             n_batches, args.batch, workers, now,
                                             args.check_threads)
    finally:
        if cleanup:
            import psycopg

            with psycopg.connect(args.pg, autocommit=True) as conn:
                for schema in cleanup:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return {"raw": raw, "verified": verified, "shares": shares, "workers": workers,
            "raw_cpu": raw_cpu, "cpu": cpu}


def scale_counts(args: argparse.Namespace) -> list[int]:
    """Worker counts for the scaling series: --scale, or the powers of two up to
    --workers when that is 4 or more (the main run already shows 1 and 2)."""
    if args.scale:
        return [int(w) for w in args.scale.split(",")]
    if args.workers < 4:
        return []
    return [1 << i for i in range(args.workers.bit_length()) if 1 << i <= args.workers]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2, help="PostgreSQL workers (default 2)")
    ap.add_argument("--sqlite-workers", type=int, default=1,
                    help="SQLite workers (default 1: SQLite has one writer at a time)")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--pg", default=PG_DSN)
    ap.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    ap.add_argument("--check-threads", type=int, default=None,
                    help="threads per worker checking the next batches (default one per "
                    "core; 0 checks on the event loop, as before the pool)")
    ap.add_argument("--scale", default=None,
                    help="PostgreSQL worker counts to run one after another, e.g. 1,2,4 "
                    "(default: 1, 2, 4, ... up to --workers when it is 4 or more)")
    ap.add_argument("--api-indexes", action="store_true",
                    help="no effect: the query API's indexes are in the schema (0004)")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    result: dict[str, Any] = {"records": args.records, "batch_records": args.batch,
                              "cpus": os.cpu_count(), "api_indexes": args.api_indexes}
    print(f"ingest bench: {args.records} records in batches of {args.batch}, "
          f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start")
    costs = stage_costs(args.batch)
    print("  per record, one core: " + ", ".join(f"{k} {v}" for k, v in costs.items()))
    result.update(costs)
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            workers = args.sqlite_workers if backend == "sqlite" else args.workers
            r = bench_backend(ctx, backend, args, Path(tmp), workers)
            ratio = r["verified"] / r["raw"]
            print(f"  {backend:<9} {r['workers']} worker(s)  raw insert {r['raw']:>10,.0f} rec/s   "
                  "verified ingest "
                  f"{r['verified']:>10,.0f} rec/s   ratio {ratio:.2f}   batches per worker "
                  f"{[int(s) for s in r['shares']]}")
            result[f"{backend}_records_per_s"] = round(r["verified"])
            result[f"{backend}_raw_insert_per_s"] = round(r["raw"])
            result[f"{backend}_ratio"] = round(ratio, 3)
            result[f"{backend}_workers"] = r["workers"]
            result[f"{backend}_batches_per_worker"] = [int(s) for s in r["shares"]]
            for run, used in (("raw", r["raw_cpu"]), ("verified", r["cpu"])):
                print(f"    {run:<8} CPU us per record: " + ", ".join(
                    f"{k} {v}" for k, v in used.items()))
                for k, v in used.items():
                    result[f"{backend}_{run}_cpu_us_per_record_{k}"] = v
        if "postgres" in args.backends.split(","):
            for w in scale_counts(args):
                r = bench_backend(ctx, "postgres", args, Path(tmp), w)
                print(f"  scale     {w} worker(s)  raw insert {r['raw']:>10,.0f} rec/s   "
                      f"verified ingest {r['verified']:>10,.0f} rec/s   ratio "
                      f"{r['verified'] / r['raw']:.2f}   worker CPU us per record "
                      f"{r['cpu']['workers']}   batches per worker "
                      f"{[int(s) for s in r['shares']]}")
                result.setdefault("postgres_scale", []).append({
                    "workers": w, "records_per_s": round(r["verified"]),
                    "raw_insert_per_s": round(r["raw"]),
                    "worker_cpu_us_per_record": r["cpu"]["workers"],
                    "db_backend_cpu_us_per_record": r["cpu"]["db_backends"]})
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
