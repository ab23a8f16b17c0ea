"""The fast path's own USM: engine discovery cached, time windows, wrong privacy key."""

from __future__ import annotations

import dataclasses
import time

import pytest
from helpers import v3_options
from peers.snmpd import DEFAULT_USERS, SnmpPeer

from agents.snmp.errors import SnmpError
from agents.snmp.fastclient import FastClient, FastTransport, fast_path_supports
from agents.snmp.options import SnmpOptions
from agents.snmp.walk import walk

SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)


class JumpyClock:
    """Our clock, the one seam for time faults: jumps `step` seconds on every reading."""

    def __init__(self, step: float) -> None:
        self.t = time.monotonic()
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


@pytest.fixture
async def transport():
    t = FastTransport()
    yield t
    t.close()


async def test_discovery_is_cached_across_requests(snmpd: SnmpPeer, transport) -> None:
    c = FastClient(transport, snmpd.host, snmpd.port, v3_options(DEFAULT_USERS[0]))
    for _ in range(3):
        (vb,) = await c.get([SYS_NAME])
        assert vb[2] == snmpd.sys_name.encode()
    res = await walk(c, (1, 3, 6, 1, 2, 1, 2, 2, 1, 2), 10)
    assert len(res.varbinds) == snmpd.interfaces and res.error is None
    assert c.discoveries == 1
    assert c.engine is not None and 5 <= len(c.engine.engine_id) <= 32


async def test_stale_engine_time_is_resynchronised(snmpd: SnmpPeer, transport) -> None:
    clock = JumpyClock(0.0)
    c = FastClient(transport, snmpd.host, snmpd.port, v3_options(DEFAULT_USERS[1]), clock=clock)
    await c.get([SYS_NAME])
    clock.t += 10_000  # as if the device's clock and ours drifted apart
    (vb,) = await c.get([SYS_NAME])  # notInTimeWindow report -> resync -> answered
    assert vb[2] == snmpd.sys_name.encode()
    assert c.discoveries == 1


async def test_wrong_engine_time(snmpd: SnmpPeer, transport) -> None:
    # a clock that runs away between every reading can never be in the window
    c = FastClient(transport, snmpd.host, snmpd.port,
                   v3_options(DEFAULT_USERS[0], timeout_s=2, retries=0),
                   clock=JumpyClock(1000.0))
    with pytest.raises(SnmpError) as e:
        await c.get([SYS_NAME])
    assert e.value.reason == "wrong_engine_time"


async def test_wrong_privacy_key(snmpd: SnmpPeer, transport) -> None:
    u = dataclasses.replace(DEFAULT_USERS[0], priv_key="not-the-priv-key")
    c = FastClient(transport, snmpd.host, snmpd.port, v3_options(u, timeout_s=2, retries=0))
    with pytest.raises(SnmpError) as e:
        await c.get([SYS_NAME])
    # AES-CFB "decrypts" to garbage that net-snmp cannot parse, so it drops the request
    # without a report: from outside a wrong privacy key looks like a dead device
    assert e.value.reason == "timeout"
    assert c.engine is not None  # discovery (unencrypted) did succeed


def test_fast_path_coverage() -> None:
    assert fast_path_supports(SnmpOptions())
    assert not fast_path_supports(SnmpOptions(version="1"))
    assert fast_path_supports(v3_options(DEFAULT_USERS[2]))
    reeder = dataclasses.replace(v3_options(DEFAULT_USERS[1]), priv_protocol="aes256c")
    assert not fast_path_supports(reeder)


def test_mac_is_checked_over_the_message_in_place() -> None:
    """`usm.verify` reads the received message through a view with the MAC field taken
    as zeros: it accepts what `sign` made over the zeroed message, and nothing else."""
    from agents.snmp import usm
    from agents.snmp.fastcodec import FLAG_AUTH, decode_v3, encode_scoped_pdu, encode_v3

    eng = b"\x80\x00\x1f\x88\x04edge"
    key = usm.localize("sha256", b"authpass-0123", eng)
    msg, off = encode_v3(7, FLAG_AUTH, eng, 3, 100, b"noc", 24, b"",
                         encode_scoped_pdu(eng, b"", b"\xa2\x0b\x02\x01\x07\x02\x01\x00"
                                           b"\x02\x01\x00\x30\x00"), False)
    mac = usm.sign("sha256", key, msg)
    signed = msg[:off] + mac + msg[off + 24:]
    m = decode_v3(signed)
    assert m.auth_span == (off, off + 24) and m.auth_params == mac
    assert usm.verify("sha256", key, signed, m.auth_span, m.auth_params)
    tampered = bytearray(signed)
    tampered[-1] ^= 1
    assert not usm.verify("sha256", key, bytes(tampered), m.auth_span, m.auth_params)
    assert not usm.verify("sha256", key, signed, (off, off + 12), mac[:12])
    assert not usm.verify("sha256", usm.localize("sha256", b"other-pass", eng), signed,
                          m.auth_span, m.auth_params)
