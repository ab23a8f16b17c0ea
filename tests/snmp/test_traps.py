"""Traps and informs sent with net-snmp's snmptrap/snmpinform arrive as event records."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from agents.snmp.traps import TrapConfig, TrapReceiver, TrapUser, parse_trap_config, trap_fields
from pipelines.config import ConfigError, parse_toml
from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.record import Kind, Record

SENDER_ENGINE = "8000000001020304"
TRAP_USER = TrapUser("trapper", "sha256", "trap-auth-pass", "aes", "trap-priv-pass",
                     bytes.fromhex(SENDER_ENGINE))
INFORM_USER = TrapUser("informer", "sha", "inform-auth-pass", "aes256", "inform-priv-pass")
LINK_DOWN = ["1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.7", "i", "7",
             "1.3.6.1.2.1.2.2.1.7.7", "i", "1", "1.3.6.1.2.1.2.2.1.8.7", "i", "2",
             "1.3.6.1.6.3.18.1.3.0", "a", "10.20.30.40"]


class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.arrived = asyncio.Event()

    async def __call__(self, records: list[Record]) -> None:
        self.records.extend(records)
        self.arrived.set()

    async def next(self) -> Record:
        await asyncio.wait_for(self.arrived.wait(), 10)
        self.arrived.clear()
        return self.records[-1]


@pytest.fixture
async def receiver():
    sink = Sink()
    rcv = TrapReceiver(TrapConfig("127.0.0.1", 0, ("public",), (TRAP_USER, INFORM_USER)),
                       sink, tenant="acme", site="lab",
                       devices_by_address={"127.0.0.1": "edge-router"})
    await rcv.start()
    yield rcv, sink
    await rcv.close()


async def send(*args: str) -> subprocess.CompletedProcess[bytes]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out, err)


def target(rcv: TrapReceiver) -> str:
    return f"udp:127.0.0.1:{rcv.port}"


async def test_v2c_link_down(receiver) -> None:
    rcv, sink = receiver
    res = await send("snmptrap", "-M", "/dev/null", "-v2c", "-c", "public", target(rcv), "12345",
                     *LINK_DOWN)
    assert res.returncode == 0, res.stderr
    r = await sink.next()
    assert r.kind == Kind.EVENT and r.name == "snmp.trap" and r.device == "edge-router"
    f = r.fields
    assert f["trap"] == "linkDown" and f["pdu"] == "trap" and f["version"] == "2c"
    assert (f["if_index"], f["admin_status"], f["oper_status"]) == (7, 1, 2)
    assert f["uptime_s"] == 123.45 and f["agent_ip"] == "10.20.30.40"
    assert f["source_ip"] == "127.0.0.1"
    # pseudonymised like everything else: the reported address is gone from the record
    p = Pseudonymiser(TenantKey(bytes(range(32)), 1)).record(r)
    text = repr(p.to_dict())
    assert "10.20.30.40" not in text and "127.0.0.1" not in text
    assert p.fields["trap"] == "linkDown" and p.fields["if_index"] == 7


async def test_v3_trap_authpriv(receiver) -> None:
    rcv, sink = receiver
    res = await send("snmptrap", "-M", "/dev/null", "-v3", "-e", "0x" + SENDER_ENGINE,
                     "-u", "trapper", "-l", "authPriv", "-a", "SHA-256", "-A", "trap-auth-pass",
                     "-x", "AES", "-X", "trap-priv-pass", target(rcv), "", "1.3.6.1.6.3.1.1.5.1")
    assert res.returncode == 0, res.stderr
    r = await sink.next()
    assert r.fields["trap"] == "coldStart" and r.fields["version"] == "3"


async def test_v3_trap_with_wrong_key_is_dropped(receiver) -> None:
    rcv, sink = receiver
    res = await send("snmptrap", "-M", "/dev/null", "-v3", "-e", "0x" + SENDER_ENGINE,
                     "-u", "trapper", "-l", "authPriv", "-a", "SHA-256", "-A", "wrong-auth-pass",
                     "-x", "AES", "-X", "trap-priv-pass", target(rcv), "", "1.3.6.1.6.3.1.1.5.1")
    assert res.returncode == 0
    res = await send("snmptrap", "-M", "/dev/null", "-v2c", "-c", "public", target(rcv), "",
                     "1.3.6.1.6.3.1.1.5.2")
    r = await sink.next()
    assert r.fields["trap"] == "warmStart"  # the forged one never became a record
    assert [x.fields["trap"] for x in sink.records] == ["warmStart"]


@pytest.mark.parametrize("version", ["2c", "3"])
async def test_inform_is_acknowledged(receiver, version: str) -> None:
    rcv, sink = receiver
    auth = (["-v2c", "-c", "public"] if version == "2c" else
            ["-v3", "-u", "informer", "-l", "authPriv", "-a", "SHA", "-A", "inform-auth-pass",
             "-x", "AES-256", "-X", "inform-priv-pass"])
    # snmpinform exits 0 only once the receiver has answered the inform
    res = await send("snmpinform", "-M", "/dev/null", "-t", "2", "-r", "1", *auth, target(rcv),
                     "", "1.3.6.1.6.3.1.1.5.4", "1.3.6.1.2.1.2.2.1.1.3", "i", "3")
    assert res.returncode == 0, res.stderr
    r = await sink.next()
    assert r.fields["pdu"] == "inform" and r.fields["trap"] == "linkUp"
    assert r.fields["if_index"] == 3 and r.fields["version"] == version


async def test_unknown_trap_kept_generically(receiver) -> None:
    rcv, sink = receiver
    res = await send("snmptrap", "-M", "/dev/null", "-v2c", "-c", "public", target(rcv), "",
                     "1.3.6.1.4.1.99999.0.1", "1.3.6.1.4.1.99999.1.1", "s", "disk on fire",
                     "1.3.6.1.4.1.99999.1.2", "a", "10.9.8.7")
    assert res.returncode == 0
    f = (await sink.next()).fields
    assert f["trap"] == "unknown" and f["trap_oid"] == "1.3.6.1.4.1.99999.0.1"
    assert f["vb1_oid"] == "1.3.6.1.4.1.99999.1.1" and f["vb1_value"] == "disk on fire"
    assert f["vb2_ip"] == "10.9.8.7"


def test_trap_fields_without_trap_oid() -> None:
    f = trap_fields([], source_ip="127.0.0.1", version="2c", pdu="trap")
    assert f["trap"] == "unknown" and f["trap_oid"] is None


def test_trap_config() -> None:
    cfg = parse_trap_config(parse_toml('''
port = 10162
communities = ["a"]
[[users]]
user = "u"
auth_protocol = "sha"
auth_key = "12345678"
engine_id = "0x8000000001020304"
''', "agent.toml"))
    assert cfg.port == 10162 and cfg.users[0].engine_id == bytes.fromhex(SENDER_ENGINE)


@pytest.mark.parametrize(("text", "message"), [
    ('port = 0', "agent.toml: port: must be at least 1"),
    ('listen = "localhost"', "agent.toml: listen: must be an IP address"),
    ('[[users]]\nuser = "u"\nauth_protocol = "sha"\nauth_key = "short"',
     "agent.toml: users[0].auth_key: must be at least 8 characters"),
    ('[[users]]\nuser = "u"\nengine_id = "zz"', "agent.toml: users[0].engine_id: must be hex"),
    ('communities = []', "agent.toml: communities: no communities and no users"),
    ('colour = "red"', "agent.toml: colour: unknown key"),
])
def test_trap_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_trap_config(parse_toml(text, "agent.toml"))
    assert str(e.value).startswith(message)


async def test_v1_trap_is_translated(receiver) -> None:
    rcv, sink = receiver
    # v1 linkDown (generic 2) from agent-addr 10.20.30.41 for ifIndex 5
    res = await send("snmptrap", "-M", "/dev/null", "-v1", "-c", "public", target(rcv),
                     "1.3.6.1.4.1.8072.3.2.10", "10.20.30.41", "2", "0", "4242",
                     "1.3.6.1.2.1.2.2.1.1.5", "i", "5")
    assert res.returncode == 0, res.stderr
    f = (await sink.next()).fields
    assert f["version"] == "1" and f["trap"] == "linkDown" and f["if_index"] == 5
    assert f["agent_ip"] == "10.20.30.41" and f["uptime_s"] == 42.42
