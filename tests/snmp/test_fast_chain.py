"""The fast path's chained walk: each GETBULK reply is accepted and the next request
sent from the socket's callback, with one lazy timer per chain. A lost request must
still be resent under its own id, a silent agent must still end the walk as partial
after timeout x retries, and the privacy key kept per engine must give RFC 3826's
AES-CFB128 message after message."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections import Counter
from collections.abc import Iterator

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.snmp import usm
from agents.snmp.fastclient import FastClient, FastTransport
from agents.snmp.fastcodec import GETBULK, RESPONSE, decode_v2c, enc_int, enc_oid, tlv
from agents.snmp.options import SnmpOptions
from agents.snmp.values import COUNTER32, Oid
from agents.snmp.walk import walk

COLUMN = (1, 3, 6, 1, 2, 1, 2, 2, 1, 10)  # ifInOctets
ROWS = 30
REPS = 5


def _reply(rid: int, oids: list[Oid]) -> bytes:
    body = b"".join(tlv(0x30, enc_oid(o) + enc_int(o[-1] * 10, COUNTER32)) for o in oids)
    pdu = tlv(RESPONSE, enc_int(rid) + enc_int(0) + enc_int(0) + tlv(0x30, body))
    return tlv(0x30, enc_int(1) + tlv(0x04, b"public") + pdu)


def _after(start: Oid) -> list[Oid]:
    """The next REPS rows after `start`, running into the next column at the end."""
    rows = [(*COLUMN, i) for i in range(1, ROWS + 1)] + [
        (1, 3, 6, 1, 2, 1, 2, 2, 1, 11, i) for i in range(1, REPS + 1)]
    return [o for o in rows if o > start][:REPS]


class Agent:
    """A v2c agent on a real UDP socket that can drop chosen transmissions."""

    def __init__(self, drop: set[int], answer_first: int = 10**6) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.drop, self.answer_first = drop, answer_first
        self.seen: list[int] = []  # request-ids in arrival order, resends included

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data, addr = await loop.sock_recvfrom(self.sock, 65535)
            pdu = decode_v2c(data).pdu
            assert pdu.type == GETBULK
            self.seen.append(pdu.request_id)
            n = len(self.seen)
            if n in self.drop or len(set(self.seen)) > self.answer_first:
                continue
            await loop.sock_sendto(self.sock, _reply(pdu.request_id,
                                                     _after(pdu.varbinds[0][0])), addr)


@pytest.fixture
def transport() -> Iterator[FastTransport]:
    t = FastTransport()
    yield t
    t.close()


async def _walk(agent: Agent, t: FastTransport, retries: int):
    task = asyncio.create_task(agent.serve())
    try:
        c = FastClient(t, "127.0.0.1", agent.port,
                       SnmpOptions(timeout_s=0.3, retries=retries, max_repetitions=REPS))
        return await asyncio.wait_for(walk(c, COLUMN, REPS), 30)
    finally:
        task.cancel()
        agent.sock.close()


async def test_a_lost_request_inside_a_chain_is_resent_under_its_id(transport) -> None:
    agent = Agent(drop={3})  # the third request's first transmission is lost
    res = await _walk(agent, transport, retries=2)
    assert res.error is None
    assert [o for o, _, _ in res.varbinds] == [(*COLUMN, i) for i in range(1, ROWS + 1)]
    assert all(t == COUNTER32 and v == o[-1] * 10 for o, t, v in res.varbinds)
    # 6 full batches, then the one that leaves the column: 7 requests, one sent twice
    counts = Counter(agent.seen)
    assert len(counts) == 7 == res.requests
    assert sorted(counts.values()) == [1] * 6 + [2]
    assert agent.seen[2] == agent.seen[3]


async def test_a_chain_whose_agent_falls_silent_ends_as_a_partial_walk(transport) -> None:
    agent = Agent(drop=set(), answer_first=2)
    res = await _walk(agent, transport, retries=1)
    assert [o for o, _, _ in res.varbinds] == [(*COLUMN, i) for i in range(1, 2 * REPS + 1)]
    assert res.error is not None and res.error.reason == "partial_walk"
    counts = Counter(agent.seen)
    assert list(counts.values()) == [1, 1, 2]  # the third request: one try and one retry
    assert not transport._pending  # nothing left waiting


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from([16, 24, 32]).map(os.urandom), size=st.integers(0, 300),
       boots=st.integers(0, 2**31 - 1), etime=st.integers(0, 2**31 - 1),
       salt=st.integers(0, 2**64 - 1))
def test_privacy_key_is_rfc3826_aes_cfb(key: bytes, size: int, boots: int, etime: int,
                                           salt: int) -> None:
    """The IV from boots, time and salt, and AES-CFB128 as `cryptography` computes it,
    both ways, any length."""
    priv = usm.Privacy("aes", key)
    plain = os.urandom(size)
    ct, params = priv.encrypt(boots, etime, salt, plain)
    iv = struct.pack(">IIQ", boots, etime, salt)
    enc = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    assert params == struct.pack(">Q", salt)
    assert ct == enc.update(plain) + enc.finalize()
    assert priv.decrypt(boots, etime, params, memoryview(ct)) == plain
    # and the same key object serves the next message, whatever came before
    assert priv.decrypt(boots, etime, params, ct) == plain
