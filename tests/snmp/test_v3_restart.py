"""SNMPv3 across a real snmpd restart: the engine state a poller cached goes stale.

A rebooted device keeps its engine id and raises snmpEngineBoots (its time
restarts near 0), so our first request after the reboot carries old boots and
is refused with a notInTimeWindow report (RFC 3414 3.2.7). A replaced device,
or one that lost its persistent store, has a new engine id and refuses us with
unknownEngineID. Both must heal on the next poll without the agent being
restarted. The injected-clock tests in test_v3_fast.py fake the first case;
these make a real snmpd do it. The evidence that we re-synchronised, and did
no more than that, is the restarted agent's own usmStats counters, read over
v2c so that reading them adds nothing to them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import by_name, device, v3_options
from peers.snmpd import SnmpPeer, V3User, run_snmpd
from pysnmp.hlapi.v3arch.asyncio import SnmpEngine, UdpTransportTarget
from pysnmp.proto.mpmod.rfc3412 import SnmpV3MessageProcessingModel

from agents.snmp.client import PysnmpClient, _cannot_forget, forget_peer_engine
from agents.snmp.fastclient import FastClient, FastTransport
from agents.snmp.poller import SnmpPoller

USER = V3User("u_restart", "SHA-256", "authpass-restart", "AES", "privpass-restart")
SYS_NAME = "1.3.6.1.2.1.1.5.0"
SYS_NAME_OID = (1, 3, 6, 1, 2, 1, 1, 5, 0)
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
ENGINE_ID = "1.3.6.1.6.3.10.2.1.1.0"
ENGINE_BOOTS = "1.3.6.1.6.3.10.2.1.2.0"
NOT_IN_TIME_WINDOWS = "1.3.6.1.6.3.15.1.1.2.0"
UNKNOWN_ENGINE_IDS = "1.3.6.1.6.3.15.1.1.4.0"


def engine_of(peer: SnmpPeer) -> tuple[bytes, int]:
    """(snmpEngineID, snmpEngineBoots) as the agent itself reports them."""
    # a long Hex-STRING wraps over lines, which parse_cli does not join
    text = peer.cli("snmpget", "-Oqv", ENGINE_ID).strip().strip('"')
    return bytes.fromhex(text), int(peer.snmpget(ENGINE_BOOTS)[ENGINE_BOOTS])


def usm_stats(peer: SnmpPeer) -> tuple[int, int]:
    """(usmStatsNotInTimeWindows, usmStatsUnknownEngineIDs): the reports the agent sent."""
    got = peer.snmpget(NOT_IN_TIME_WINDOWS, UNKNOWN_ENGINE_IDS)
    return int(got[NOT_IN_TIME_WINDOWS]), int(got[UNKNOWN_ENGINE_IDS])


def ticks(peer: SnmpPeer) -> int:
    return int(peer.cli("snmpget", "-Oqvt", SYS_UPTIME))


async def poll(poller: SnmpPoller, dev: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    recs = await poller.poll(dev)
    (health,) = by_name(recs, "device.health")
    systems = by_name(recs, "snmp.system")
    return health.fields, systems[0].fields if systems else {}


def persist_dir(tmp_path: Path) -> Path:
    d = tmp_path / "persist"
    d.mkdir()
    return d


@pytest.mark.parametrize("engine", ["fast", "pysnmp"])
async def test_poller_resyncs_after_reboot(tmp_path: Path, engine: str) -> None:
    store = persist_dir(tmp_path)
    poller = SnmpPoller()
    try:
        with run_snmpd(users=[USER], persist_dir=store, sys_name="edge-a") as first:
            dev = device(first, options=v3_options(USER, engine=engine, profiles=("system",)))
            health, system = await poll(poller, dev)
            assert (health["up"], system["sys_name"]) == (1, "edge-a")
            engine_id, boots = engine_of(first)
        with run_snmpd(users=[USER], persist_dir=store, sys_name="edge-a-rebooted",
                       port=first.port) as second:
            # the restart is the one we meant: same engine, one more boot, nothing sent yet
            assert engine_of(second) == (engine_id, boots + 1)
            assert usm_stats(second) == (0, 0)
            low = ticks(second)
            health, system = await poll(poller, dev)
            high = ticks(second)
            assert (health["up"], health["reason"]) == (1, None)
            assert system["sys_name"] == second.snmpget(SYS_NAME)[SYS_NAME] == "edge-a-rebooted"
            assert low <= round(system["uptime_s"] * 100) <= high
            # one stale request refused with notInTimeWindow, then in sync: no rediscovery
            assert usm_stats(second) == (1, 0)
            health, _ = await poll(poller, dev)
            assert health["up"] == 1 and usm_stats(second) == (1, 0)
    finally:
        await poller.close()


@pytest.mark.parametrize("engine", ["fast", "pysnmp"])
async def test_poller_rediscovers_a_new_engine_id(engine: str) -> None:
    """The fast client rediscovers within the poll that meets the new id. pysnmp 7.1
    cannot: it names the old id again and drops the agent's report (see
    client.forget_peer_engine), so that poll times out and the next must heal."""
    # the pysnmp poll that meets the new id waits out one whole timeout (short, yet
    # long enough for a loaded CI box to answer the polls that must succeed)
    short = {"timeout_s": 3.0, "retries": 0} if engine == "pysnmp" else {}
    opts = v3_options(USER, engine=engine, profiles=("system",), **short)
    poller = SnmpPoller()
    try:
        with run_snmpd(users=[USER], sys_name="edge-b") as first:
            dev = device(first, options=opts)
            health, _ = await poll(poller, dev)
            assert health["up"] == 1
            old_id, _ = engine_of(first)
        # a fresh persistent store: a new engine id, as after a board swap or a wiped agent
        with run_snmpd(users=[USER], sys_name="edge-b-replaced", port=first.port) as second:
            new_id, boots = engine_of(second)
            assert new_id != old_id and boots == 1
            if engine == "pysnmp":
                # should a pysnmp release heal here, this fails and the workaround can go
                health, system = await poll(poller, dev)
                assert (health["up"], health["reason"], system) == (0, "timeout", {})
                # the one stale request, refused; no retry and no discovery yet
                assert usm_stats(second) == (0, 1)
            low = ticks(second)
            health, system = await poll(poller, dev)
            high = ticks(second)
            assert (health["up"], health["reason"]) == (1, None)
            assert system["sys_name"] == second.snmpget(SYS_NAME)[SYS_NAME] == "edge-b-replaced"
            assert low <= round(system["uptime_s"] * 100) <= high
            # the stale request, then our discovery probe: both answered unknownEngineID
            assert usm_stats(second) == (0, 2)
            health, _ = await poll(poller, dev)
            assert health["up"] == 1 and usm_stats(second) == (0, 2)
    finally:
        await poller.close()


def v3_model(engine: SnmpEngine) -> SnmpV3MessageProcessingModel:
    return next(m for m in engine.message_processing_subsystems.values()
                if isinstance(m, SnmpV3MessageProcessingModel))


async def test_pysnmp_forgets_one_address_of_a_shared_engine() -> None:
    """Forgetting a replaced device's engine id leaves the devices it shares a pysnmp
    engine with alone, and leaves pysnmp's expiry clock able to run past the entry."""
    engine = SnmpEngine()
    opts = v3_options(USER, profiles=("system",))
    try:
        with run_snmpd(users=[USER], sys_name="a") as a, \
                run_snmpd(users=[USER], sys_name="b") as b:
            for peer in (a, b):
                (vb,) = await PysnmpClient(engine, peer.host, peer.port, opts).get([SYS_NAME_OID])
                assert vb[2] == peer.sys_name.encode()
            mp = v3_model(engine)
            at_a = (UdpTransportTarget.TRANSPORT_DOMAIN, (a.host, a.port))
            at_b = (UdpTransportTarget.TRANSPORT_DOMAIN, (b.host, b.port))
            assert bytes(mp.get_peer_engine_info(*at_a)[0]) == engine_of(a)[0]
            assert bytes(mp.get_peer_engine_info(*at_b)[0]) == engine_of(b)[0]
            assert forget_peer_engine(engine, *at_a) is True
            assert mp.get_peer_engine_info(*at_a) == (None, None, None)
            assert bytes(mp.get_peer_engine_info(*at_b)[0]) == engine_of(b)[0]
            assert forget_peer_engine(engine, *at_a) is False
            # run pysnmp's expiry clock past its 300 s lifetime: a's slot must not raise
            for _ in range(int(300 / engine.transport_dispatcher.get_timer_resolution()) + 2):
                mp.receive_timer_tick(engine, 0.0)
            assert mp.get_peer_engine_info(*at_b) == (None, None, None)
    finally:
        engine.close_dispatcher()


def test_forgetting_is_a_no_op_where_pysnmp_moved_its_cache(
        caplog: pytest.LogCaptureFixture) -> None:
    engine = SnmpEngine()
    delattr(v3_model(engine), "_SnmpV3MessageProcessingModel__engineIdCache")
    _cannot_forget.cache_clear()
    with caplog.at_level(logging.DEBUG, logger="agents.snmp.client"):
        for _ in range(2):
            assert forget_peer_engine(engine, UdpTransportTarget.TRANSPORT_DOMAIN,
                                      ("127.0.0.1", 161)) is False
    assert len([r for r in caplog.records if "engine id cache" in r.getMessage()]) == 1


@pytest.mark.parametrize("keep_store", [True, False], ids=["rebooted", "replaced"])
async def test_fast_client_engine_state_follows_the_agent(tmp_path: Path,
                                                          keep_store: bool) -> None:
    """The fast client's public engine cache tracks the device: a reboot is absorbed by
    adopting the reported boots and time, only a new engine id costs a discovery."""
    store = persist_dir(tmp_path)
    transport = FastTransport()
    try:
        with run_snmpd(users=[USER], persist_dir=store) as first:
            c = FastClient(transport, first.host, first.port, v3_options(USER))
            (vb,) = await c.get([SYS_NAME_OID])
            assert vb[2] == first.sys_name.encode()
            assert c.engine is not None and c.discoveries == 1
            assert (c.engine.engine_id, c.engine.boots) == engine_of(first)
        with run_snmpd(users=[USER], persist_dir=store if keep_store else None,
                       sys_name="after-restart", port=first.port) as second:
            truth = engine_of(second)
            (vb,) = await c.get([SYS_NAME_OID])
            assert vb[2] == b"after-restart"
            assert c.engine is not None
            assert (c.engine.engine_id, c.engine.boots) == truth
            assert c.discoveries == (1 if keep_store else 2)
            assert usm_stats(second) == ((1, 0) if keep_store else (0, 2))
    finally:
        transport.close()
