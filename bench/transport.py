"""Transport benchmark: sealed batches through the real broker vs raw payloads of the same size.

Runs against Mosquitto on 127.0.0.1:1883 (or --broker). In one run it measures

- seal and open alone (CPU only, batches/s);
- the agent-to-collector path: Shipper (spool with fsync, seal, QoS 1 publish,
  delete on PUBACK) -> broker -> IngestWorker (verify, decrypt, decode, ack
  after a no-op sink), timed from the first submit to the last batch accepted;
  once with both sides in this process, once with the collector in a process of
  its own, as deployed (the targets are judged on both);
- the end-to-end-acknowledged path: the same, plus the collector's signed
  receipts (ReceiptPublisher) back to the Shipper, which keeps each batch
  until its receipt; timed from the first submit until the agent's spool is
  empty (every batch receipted). Target: at most 10% below the sealed path;
- the agent side alone: the same Shipper to a plain subscriber (no opening);
- raw QoS 1 publishes of random payloads of the sealed batches' mean size with
  the same in-flight window, timed to the last message received.

Records are submitted by `--submitters` concurrent callers (an agent's pollers
and syslog receiver submit at the same time; the spool commits them in groups),
each awaiting its own submit. Targets (issue 16): the sealed path at least half
the raw QoS 1 rate and at least 100,000 records/s.

Prints the figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlsplit

# measure the tree this file is in, not whichever checkout the venv has installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiomqtt
from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client import CollectorRegistry

from agents.config import AgentConfig, KeysConfig, MqttConfig
from agents.pollers import PollerContext
from agents.shipper import Shipper
from agents.spool import SpoolConfig
from collector.ingest import IngestWorker
from collector.receipts import ReceiptPublisher
from pipelines import keys
from pipelines.envelope import Header, open_sealed, seal
from pipelines.record import Kind, Record, new_id


async def _wait(ev: asyncio.Event, timeout: float, what: Callable[[], str]) -> None:
    try:
        await asyncio.wait_for(ev.wait(), timeout)
    except TimeoutError:
        raise SystemExit(f"bench: timed out after {timeout:.0f} s: {what()}") from None


TARGET_VS_RAW, TARGET_RECORDS_PER_S = 0.5, 100_000


async def submit_all(s: Shipper, batches: list[list[Record]], submitters: int) -> None:
    """Every batch submitted by `submitters` concurrent callers, each in turn awaiting
    its submit (durable when it returns), as an agent's pollers do."""
    todo = iter(batches)

    async def caller() -> None:
        for b in todo:
            await s.submit(b)

    await asyncio.gather(*(caller() for _ in range(max(1, submitters))))


def make_records(tenant: str, n: int, start: int) -> list[Record]:
    return [Record(kind=Kind.METRIC, tenant=tenant, site="site-1", device=f"dev-{i % 50:03d}",
                   name="if", fields={"if_index": i % 48, "if_descr": f"GigabitEthernet0/{i % 48}",
                                      "in_octets": 10_000_000 + i * 1500,
                                      "out_octets": 9_000_000 + i * 1400, "in_errors": i % 3,
                                      "oper_status": 1, "speed_bps": 1_000_000_000})
            for i in range(start, start + n)]


def cpu_rates(batches: list[list[Record]], tenant: str, agent: str, suite: str,
              ) -> tuple[float, float, float]:
    ck = keys.generate_collector_key(suite)
    sk = ed25519.Ed25519PrivateKey.generate()
    t0 = time.perf_counter()
    sealed = [seal(Header(tenant, agent, new_id(), i, time.time()), b, ck.public, sk)
              for i, b in enumerate(batches)]
    t1 = time.perf_counter()
    for data in sealed:
        open_sealed(data, {agent: sk.public_key()}, {ck.key_id: ck})
    t2 = time.perf_counter()
    mean = sum(map(len, sealed)) / len(sealed)
    return len(batches) / (t1 - t0), len(batches) / (t2 - t1), mean


def _agent_config(tmp: Path, url: str, agent: str, tenant: str, batch_records: int,
                  suite: str, inflight: int, state: str = "state") -> AgentConfig:
    return AgentConfig(
        file=str(tmp / "agent.toml"), agent_id=agent, tenant=tenant, site="site-1",
        state_dir=tmp / state,
        keys=KeysConfig(signing_key=tmp / "none", collector_public_key=tmp / "none",
                        tenant_key=tmp / "none"),
        mqtt=MqttConfig(url=url), devices=(), pollers=PollerContext(tmp / state),
        batch_max_records=batch_records, batch_max_age_s=0.05, suite=suite,
        spool=SpoolConfig(inflight=inflight))


async def _refuse(reason: str, topic: str, h: Header | None, payload: bytes) -> None:
    raise RuntimeError(f"benchmark batch rejected: {reason}")


class _Counted:
    """An IngestWorker whose no-op sink counts accepted batches until `total`."""

    def __init__(self, url: str, tenant: str, agent: str, vk: ed25519.Ed25519PublicKey,
                 ck: keys.CollectorPrivateKey, total: int) -> None:
        self.total, self.count, self.got = total, 0, asyncio.Event()
        self.worker = IngestWorker(broker_url=url, sink=self._sink, quarantine=_refuse,
                                   agent_keys={agent: vk}, collector_keys={ck.key_id: ck},
                                   registry=CollectorRegistry(), client_id=f"bench-{agent}",
                                   topic_filter=f"privtel/v1/{tenant}/+/batches")

    async def _sink(self, h: Header, recs: list[Record]) -> bool:
        self.count += 1
        if self.count >= self.total:
            self.got.set()
        return True

    async def wait(self) -> None:
        await _wait(self.got, 120,
                    lambda: f"ingest accepted {self.count} of {self.total} batches")


async def sealed_path(url: str, tmp: Path, batches: list[list[Record]], tenant: str, agent: str,
                      suite: str, inflight: int, submitters: int = 1) -> tuple[float, int]:
    ck = keys.generate_collector_key(suite)
    sk = ed25519.Ed25519PrivateKey.generate()
    c = _Counted(url, tenant, agent, sk.public_key(), ck, len(batches))
    cfg = _agent_config(tmp, url, agent, tenant, len(batches[0]), suite, inflight)
    async with c.worker as w:
        await asyncio.wait_for(w.subscribed.wait(), 10)
        async with Shipper(cfg, registry=CollectorRegistry(), signing_key=sk,
                           collector_public_key=ck.public) as s:
            t0 = time.perf_counter()
            await submit_all(s, batches, submitters)
            await c.wait()
            elapsed = time.perf_counter() - t0
            st = await asyncio.to_thread(s.spool.stats)
            assert st.pending_records == 0
    return elapsed, len(batches)


def _collector_process(url: str, tenant: str, agent: str, ck_pem: bytes, vk_pem: bytes,
                       total: int, conn: Connection) -> None:
    """The collector side of `split_path`: says "ready" once subscribed and "done" when
    it has every batch."""
    ck = keys.load_collector_private_key(ck_pem)
    vk = keys.load_verify_key(vk_pem)

    async def run() -> None:
        c = _Counted(url, tenant, agent, vk, ck, total)
        async with c.worker as w:
            await asyncio.wait_for(w.subscribed.wait(), 10)
            conn.send("ready")
            await c.wait()
            conn.send("done")

    asyncio.run(run())


async def split_path(url: str, tmp: Path, batches: list[list[Record]], tenant: str, agent: str,
                     suite: str, inflight: int, submitters: int = 1) -> float:
    """As `sealed_path`, with the collector in a process of its own, as deployed (agent
    and collector are different machines): each side has its own interpreter and GIL."""
    ck = keys.generate_collector_key(suite)
    sk = ed25519.Ed25519PrivateKey.generate()
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=_collector_process, args=(url, tenant, agent, ck.pem,
                                         keys.verify_key_pem(sk.public_key()), len(batches),
                                         theirs), daemon=True)
    child.start()
    try:
        if not await asyncio.to_thread(ours.poll, 30) or ours.recv() != "ready":
            raise SystemExit("bench: the collector process did not subscribe")
        cfg = _agent_config(tmp, url, agent, tenant, len(batches[0]), suite, inflight,
                            state="state-split")
        async with Shipper(cfg, registry=CollectorRegistry(), signing_key=sk,
                           collector_public_key=ck.public) as s:
            t0 = time.perf_counter()
            await submit_all(s, batches, submitters)
            if not await asyncio.to_thread(ours.poll, 120) or ours.recv() != "done":
                raise SystemExit("bench: the collector process did not get every batch")
            return time.perf_counter() - t0
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()


async def e2e_path(url: str, tmp: Path, batches: list[list[Record]], tenant: str, agent: str,
                   suite: str, inflight: int, submitters: int = 1) -> float:
    """As `sealed_path`, with end-to-end receipts: done when every batch was receipted."""
    ck = keys.generate_collector_key(suite)
    sk, rkey = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()

    async def sink(h: Header, recs: list[Record]) -> bool:
        return True

    creg = CollectorRegistry()
    cfg = _agent_config(tmp, url, agent, tenant, len(batches[0]), suite, inflight,
                        state="state-e2e")
    box: list[IngestWorker] = []
    receipts = ReceiptPublisher(lambda: box[0].transport.sender(), rkey, registry=creg)
    box.append(IngestWorker(
        broker_url=url, sink=sink, quarantine=_refuse,
        agent_keys={agent: sk.public_key()}, collector_keys={ck.key_id: ck},
        registry=creg, client_id=f"bench-{agent}", on_outcome=receipts.offer,
        topic_filter=f"privtel/v1/{tenant}/+/batches"))
    async with receipts, box[0] as w:
        await asyncio.wait_for(w.subscribed.wait(), 10)
        async with Shipper(cfg, registry=CollectorRegistry(), signing_key=sk,
                           collector_public_key=ck.public,
                           collector_receipt_key=rkey.public_key()) as s:
            t0 = time.perf_counter()
            await submit_all(s, batches, submitters)
            if not await s.flush(120):
                raise SystemExit("bench: not every batch was receipted within 120 s")
            elapsed = time.perf_counter() - t0
    return elapsed


async def agent_path(url: str, tmp: Path, batches: list[list[Record]], tenant: str, agent: str,
                     suite: str, inflight: int, submitters: int = 1) -> float:
    """Shipper (spool, seal, QoS 1, delete on PUBACK) to a plain subscriber: no opening."""
    ck = keys.generate_collector_key(suite)
    sk = ed25519.Ed25519PrivateKey.generate()
    u = urlsplit(url)
    done = asyncio.Event()
    cfg = _agent_config(tmp, url, agent, tenant, len(batches[0]), suite, inflight,
                        state="state-agent")
    async with aiomqtt.Client(u.hostname or "127.0.0.1", u.port or 1883, timeout=10,
                              protocol=aiomqtt.ProtocolVersion.V5) as sub:
        await sub.subscribe(f"privtel/v1/{tenant}/{agent}/batches", qos=1)

        async def consume() -> None:
            seen = 0
            async for _ in sub.messages:
                seen += 1
                if seen >= len(batches):
                    done.set()
                    return

        consumer = asyncio.create_task(consume())
        async with Shipper(cfg, registry=CollectorRegistry(), signing_key=sk,
                           collector_public_key=ck.public) as s:
            t0 = time.perf_counter()
            await submit_all(s, batches, submitters)
            await _wait(done, 120, lambda: "the subscriber did not receive every batch")
            elapsed = time.perf_counter() - t0
        consumer.cancel()
    return elapsed


async def raw_path(url: str, payload_size: int, n: int, inflight: int) -> float:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 1883
    topic = f"privtel-bench/raw/{os.urandom(4).hex()}"
    payloads = [os.urandom(payload_size) for _ in range(min(n, 32))]
    done = asyncio.Event()
    async with aiomqtt.Client(host, port, protocol=aiomqtt.ProtocolVersion.V5,
                              timeout=10) as sub:
        await sub.subscribe(topic, qos=1)

        async def consume() -> None:
            seen = 0
            async for _ in sub.messages:
                seen += 1
                if seen >= n:
                    done.set()
                    return

        consumer = asyncio.create_task(consume())
        async with aiomqtt.Client(host, port, protocol=aiomqtt.ProtocolVersion.V5, timeout=10,
                                  max_inflight_messages=inflight) as pub:
            pub.pending_calls_threshold = inflight + 1
            t0 = time.perf_counter()
            for i in range(0, n, inflight):
                await asyncio.gather(*(pub.publish(topic, payloads[j % len(payloads)], qos=1)
                                       for j in range(i, min(n, i + inflight))))
            await _wait(done, 120, lambda: "the subscriber did not receive every batch")
            elapsed = time.perf_counter() - t0
        consumer.cancel()
    return elapsed


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--records", type=int, default=200, help="records per batch")
    ap.add_argument("--suite", default="x25519", choices=keys.SUITES)
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--submitters", type=int, default=16, help="concurrent submit callers "
                    "(pollers); 1 submits one batch at a time")
    ap.add_argument("--repeat", type=int, default=3, help="sealed, end-to-end-acknowledged "
                    "and raw runs, alternated; the fastest of each counts (a shared machine "
                    "is noisy)")
    a = ap.parse_args()
    run = os.urandom(3).hex()  # its own tenant: a concurrent run's batches are not ours
    tenant, agent = f"bench{run}", f"bench-{run}"
    batches = [make_records(tenant, a.records, i * a.records) for i in range(a.batches)]
    plain_bytes = sum(len(json.dumps([r.to_dict() for r in b])) for b in batches[:5]) / 5
    seal_rate, open_rate, mean_size = cpu_rates(batches, tenant, agent, a.suite)
    with tempfile.TemporaryDirectory() as tmp:
        sealed_s = e2e_s = raw_s = split_s = float("inf")
        for i in range(max(1, a.repeat)):
            t, ag = f"{tenant}r{i}", f"{agent}r{i}"  # a fresh topic and session per run
            bs = [make_records(t, a.records, j * a.records) for j in range(a.batches)]
            s_s, _ = await sealed_path(a.broker, Path(tmp) / f"s{i}", bs, t, ag, a.suite,
                                       a.inflight, a.submitters)
            e_s = await e2e_path(a.broker, Path(tmp) / f"e{i}", bs, t, ag + "e", a.suite,
                                 a.inflight, a.submitters)
            p_s = await split_path(a.broker, Path(tmp) / f"p{i}", bs, t, ag + "p", a.suite,
                                   a.inflight, a.submitters)
            r_s = await raw_path(a.broker, int(mean_size), a.batches, a.inflight)
            sealed_s, e2e_s, raw_s = min(sealed_s, s_s), min(e2e_s, e_s), min(raw_s, r_s)
            split_s = min(split_s, p_s)
        agent_s = await agent_path(a.broker, Path(tmp), batches, tenant, agent + "x", a.suite,
                                   a.inflight, a.submitters)
    mb = mean_size * a.batches / 1e6
    out = {
        "batches": a.batches, "records_per_batch": a.records, "suite": a.suite,
        "plain_batch_bytes": round(plain_bytes), "sealed_batch_bytes": round(mean_size),
        "seal_batches_per_s": round(seal_rate, 1), "open_batches_per_s": round(open_rate, 1),
        "sealed_batches_per_s": round(a.batches / sealed_s, 1),
        "sealed_records_per_s": round(a.batches * a.records / sealed_s),
        "sealed_mb_per_s": round(mb / sealed_s, 3),
        "e2e_ack_batches_per_s": round(a.batches / e2e_s, 1),
        "e2e_ack_records_per_s": round(a.batches * a.records / e2e_s),
        "e2e_ack_cost": round(1 - sealed_s / e2e_s, 3),
        "agent_batches_per_s": round(a.batches / agent_s, 1),
        "agent_mb_per_s": round(mb / agent_s, 3),
        "raw_batches_per_s": round(a.batches / raw_s, 1),
        "raw_mb_per_s": round(mb / raw_s, 3),
        "sealed_vs_raw": round(raw_s / sealed_s, 3),
        "split_records_per_s": round(a.batches * a.records / split_s),
        "split_vs_raw": round(raw_s / split_s, 3),
        "submitters": a.submitters,
        "target_sealed_vs_raw": TARGET_VS_RAW,
        "target_sealed_records_per_s": TARGET_RECORDS_PER_S,
    }
    out["sealed_meets_targets"] = (out["sealed_vs_raw"] >= TARGET_VS_RAW
                                   and out["sealed_records_per_s"] >= TARGET_RECORDS_PER_S)
    out["split_meets_targets"] = (out["split_vs_raw"] >= TARGET_VS_RAW
                                  and out["split_records_per_s"] >= TARGET_RECORDS_PER_S)
    print(f"batch: {a.records} records, {out['plain_batch_bytes']} B as JSON, "
          f"{out['sealed_batch_bytes']} B sealed ({a.suite})")
    print(f"seal alone: {out['seal_batches_per_s']} batches/s; open alone: "
          f"{out['open_batches_per_s']} batches/s")
    print(f"sealed end to end (spool+seal+QoS1+verify+decrypt): {out['sealed_batches_per_s']} "
          f"batches/s, {out['sealed_records_per_s']} records/s, {out['sealed_mb_per_s']} MB/s")
    print(f"sealed end to end, collector in a process of its own (as deployed): "
          f"{out['split_records_per_s']} records/s, {out['split_vs_raw']:.2f} of raw QoS1: "
          f"{'met' if out['split_meets_targets'] else 'not met'}")
    print(f"end-to-end acknowledged (sealed path + signed receipts, batch kept until its "
          f"receipt): {out['e2e_ack_batches_per_s']} batches/s, {out['e2e_ack_records_per_s']} "
          f"records/s; cost vs sealed {out['e2e_ack_cost'] * 100:.1f}% (target <= 10%)")
    print(f"agent side only (spool+seal+QoS1, plain subscriber): {out['agent_batches_per_s']} "
          f"batches/s, {out['agent_mb_per_s']} MB/s")
    print(f"raw QoS1 payloads of the same size: {out['raw_batches_per_s']} msgs/s, "
          f"{out['raw_mb_per_s']} MB/s")
    print(f"sealed path ({a.submitters} submitters): {out['sealed_records_per_s']} records/s "
          f"(target >= {TARGET_RECORDS_PER_S}), {out['sealed_vs_raw']:.2f} of raw QoS1 "
          f"(target >= {TARGET_VS_RAW}): "
          f"{'met' if out['sealed_meets_targets'] else 'not met'}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
