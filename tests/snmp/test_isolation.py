"""Dead, garbage-speaking and slow devices next to a healthy one, through the real scheduler."""

from __future__ import annotations

import asyncio
import os

from helpers import device
from peers.snmpd import SnmpPeer, free_udp_port
from prometheus_client import CollectorRegistry

from agents.scheduler import Scheduler
from agents.snmp.poller import SnmpPoller
from pipelines.record import Record


class Responder(asyncio.DatagramProtocol):
    """A UDP 'device' on 127.0.0.1: answers garbage, or relays to snmpd after a delay."""

    def __init__(self, mode: str, upstream: tuple[str, int] | None = None,
                 delay_s: float = 0.0) -> None:
        self.mode, self.upstream, self.delay_s = mode, upstream, delay_s
        self.transport: asyncio.DatagramTransport | None = None
        self.requests = 0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.requests += 1
        if self.mode == "garbage":
            self.transport.sendto(b"\x30\x82\xff" + os.urandom(20), addr)  # type: ignore[union-attr]
        else:
            asyncio.get_running_loop().create_task(self._relay(data, addr))

    async def _relay(self, data: bytes, addr) -> None:
        await asyncio.sleep(self.delay_s)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()

        class Up(asyncio.DatagramProtocol):
            def datagram_received(self, d: bytes, a) -> None:  # type: ignore[override]
                if not fut.done():
                    fut.set_result(d)

        t, _ = await loop.create_datagram_endpoint(Up, remote_addr=self.upstream)
        try:
            t.sendto(data)
            reply = await asyncio.wait_for(fut, 5)
            self.transport.sendto(reply, addr)  # type: ignore[union-attr]
        finally:
            t.close()


async def serve(proto: Responder) -> tuple[asyncio.DatagramTransport, int]:
    t, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: proto, local_addr=("127.0.0.1", 0))
    return t, t.get_extra_info("sockname")[1]


async def test_bad_devices_do_not_delay_a_healthy_one(snmpd: SnmpPeer) -> None:
    garbage_t, garbage_port = await serve(Responder("garbage"))
    slow = Responder("slow", (snmpd.host, snmpd.port), delay_s=0.05)
    slow_t, slow_port = await serve(slow)
    seen: list[Record] = []
    order: list[str] = []

    async def emit(records: list[Record]) -> None:
        seen.extend(records)
        order.extend(r.device for r in records if r.name == "device.health")

    healthy = device(snmpd, "healthy", timeout_s=1.0, retries=0)
    healthy = type(healthy)(**{**{f: getattr(healthy, f) for f in healthy.__slots__},
                               "interval_s": 0.1})
    devices = [
        healthy,
        device(None, "dead", port=free_udp_port(), timeout_s=1.0, retries=1),
        device(None, "garbage", port=garbage_port, timeout_s=1.0, retries=1),
        device(None, "slow", port=slow_port, timeout_s=2.0, retries=0, max_repetitions=100),
    ]
    poller = SnmpPoller()
    reg = CollectorRegistry()
    sched = Scheduler(devices, emit, registry=reg, pollers={"snmp": poller}, spread=0.0)
    await sched.start()
    try:
        async def wait() -> None:
            while "dead" not in order or order.count("healthy") < 3 or "slow" not in order:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(wait(), 30)
    finally:
        await sched.close()
        await poller.close()
        garbage_t.close()
        slow_t.close()

    def health(name: str) -> dict:
        return next(r.fields for r in seen if r.device == name and r.name == "device.health")

    # the dead device needs two 1 s attempts; the healthy one kept its 0.1 s schedule meanwhile
    assert order.index("dead") > 2 and order[:order.index("dead")].count("healthy") >= 3
    assert health("dead")["reason"] == "timeout" and health("dead")["up"] == 0
    # garbage is recognised as such at once, not left to time out
    assert health("garbage")["reason"] == "malformed_reply"
    assert order.index("garbage") < order.index("dead")
    # slow but within its timeout: a good poll
    assert health("slow")["up"] == 1 and slow.requests > 1
    assert health("healthy")["up"] == 1
    assert reg.get_sample_value("privtel_polls_total",
                                {"protocol": "snmp", "result": "malformed_reply"}) >= 1
