"""The GETBULK hot path that reuses the previous OID's decoded prefix: table-shaped
replies (one column's rows, then the next column) decode exactly as pysnmp reads them,
and a reply broken anywhere on that path is a clear, counted `SnmpDecodeError`."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fastcodec import fast_decode, pysnmp_decode, pysnmp_encode, values

from agents.snmp.errors import SnmpDecodeError
from agents.snmp.fastclient import FastClient, FastTransport
from agents.snmp.fastcodec import GETBULK, RESPONSE, decode_v2c, enc_int, enc_oid, tlv
from agents.snmp.options import SnmpOptions
from agents.snmp.walk import walk

IF_ENTRY = (1, 3, 6, 1, 2, 1, 2, 2, 1)
# last arcs of one, two and three bytes (the fast path reads one or two)
arcs = st.integers(0, 127) | st.integers(128, 16383) | st.integers(16384, 2**32 - 1)
# an index of one arc mostly, sometimes several (ipAddrTable-like)
indexes = st.lists(arcs, min_size=1, max_size=1) | st.lists(arcs, min_size=2, max_size=4)
bases = st.sampled_from([IF_ENTRY, (1, 3), (1, 3, 6, 1, 4, 1, 200000, 1), (2, 100, 3)])


@st.composite
def table_reply(draw: st.DrawFn) -> list:
    base = draw(bases)
    cols = sorted(draw(st.sets(st.integers(1, 200), min_size=1, max_size=3)))
    rows = sorted(draw(st.sets(st.tuples(*[arcs]) | indexes.map(tuple), min_size=1,
                               max_size=25)))
    return [((*base, c, *r), draw(values)) for c in cols for r in rows]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vbs=table_reply())
def test_table_replies_decode_as_pysnmp_does(vbs) -> None:
    data = pysnmp_encode(b"public", 11, 0, 0, vbs)
    assert fast_decode(data) == pysnmp_decode(data)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vbs=table_reply(), data=st.data())
def test_broken_table_replies_are_errors_or_agree(vbs, data) -> None:
    good = pysnmp_encode(b"public", 11, 0, 0, vbs)
    i = data.draw(st.integers(0, len(good) - 1))
    if data.draw(st.booleans()):
        bad = good[:i] + bytes([good[i] ^ data.draw(st.integers(1, 255))]) + good[i + 1:]
    else:
        bad = good[:i]
    try:
        ours = fast_decode(bad)
    except SnmpDecodeError:
        return
    assert ours == pysnmp_decode(bad)


def reply(rid: int, varbinds_body: bytes) -> bytes:
    pdu = tlv(RESPONSE, enc_int(rid) + enc_int(0) + enc_int(0) + tlv(0x30, varbinds_body))
    return tlv(0x30, enc_int(1) + tlv(0x04, b"public") + pdu)


def vb(oid_body: bytes, value: bytes = b"\x02\x01\x05") -> bytes:
    return tlv(0x30, tlv(0x06, oid_body) + value)


ROW1 = enc_oid((*IF_ENTRY, 2, 1))[2:]  # the OID's content bytes
HEAD = ROW1[:-1]
BROKEN = {
    # after a good row, so the prefix is cached: the next OID stops mid-arc
    "OID ends mid-arc": vb(ROW1) + vb(HEAD + b"\x81"),
    # a two-byte last arc with a 0x80 lead byte is not minimal BER
    "non-minimal OID arc": vb(ROW1) + vb(HEAD + b"\x80\x05"),
    # the first varbind's OID is empty, in the long length form
    "empty OID": tlv(0x30, b"\x06\x81\x00\x05\x00"),
    # the value claims more bytes than its varbind holds
    "varbind lengths do not add up": vb(ROW1) + tlv(0x30, tlv(0x06, HEAD + b"\x02")
                                                     + b"\x02\x05\x01"),
    "integer value out of range": vb(ROW1) + vb(HEAD + b"\x02", b"\x41\x05\x01\x00\x00\x00\x00"),
}


@pytest.mark.parametrize("why", sorted(BROKEN))
def test_each_broken_reply_names_its_fault(why: str) -> None:
    with pytest.raises(SnmpDecodeError) as e:
        decode_v2c(reply(1, BROKEN[why]))
    assert why in e.value.detail


async def test_a_broken_reply_fails_the_walk_at_once_and_is_counted() -> None:
    """A device answering with a broken table: the walk ends as malformed (not a
    timeout), the transport counts it, and the rows before it are kept."""
    dev = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dev.bind(("127.0.0.1", 0))
    dev.setblocking(False)
    loop = asyncio.get_running_loop()
    sent = 0

    async def agent() -> None:
        nonlocal sent
        while True:
            data, addr = await loop.sock_recvfrom(dev, 65535)
            pdu = decode_v2c(data).pdu
            assert pdu.type == GETBULK
            start = pdu.varbinds[0][0]
            if sent == 0:  # one good batch of rows, then the broken one
                body = b"".join(vb(enc_oid((*IF_ENTRY, 2, i))[2:]) for i in range(1, 4))
            else:
                body = BROKEN["OID ends mid-arc"]
                assert start == (*IF_ENTRY, 2, 3)
            sent += 1
            await loop.sock_sendto(dev, reply(pdu.request_id, body), addr)

    task = asyncio.create_task(agent())
    t = FastTransport()
    try:
        c = FastClient(t, "127.0.0.1", dev.getsockname()[1],
                       SnmpOptions(timeout_s=5, retries=0, max_repetitions=10))
        res = await asyncio.wait_for(walk(c, IF_ENTRY, 10), 10)
    finally:
        task.cancel()
        t.close()
        dev.close()
    assert [o for o, _, _ in res.varbinds] == [(*IF_ENTRY, 2, i) for i in range(1, 4)]
    assert res.error is not None and res.error.reason == "partial_walk"
    assert t.malformed == 1 and sent == 2
