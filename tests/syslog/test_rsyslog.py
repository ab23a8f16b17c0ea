"""A private rsyslogd relays `logger` messages to the agent over UDP, TCP and TLS
(RFC 5425, client certificate required): each copy is stored once per transport,
pseudonymised, mapped to the configured device at the sender's address."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from peers.ports import free_port
from syslog_kit import Rsyslogd, agent_with_syslog, run

from agents.runtime import load_pseudonymiser
from privtel.cli import main as privtel

ADDR = "203.0.113.77"
DEVICE = """
[[devices]]
name = "core-sw1"
address = "127.0.0.1"
port = {port}
site = "branch-7"
interval_s = 3600
[devices.snmp]
version = "2c"
community = "unused"
timeout_s = 0.5
retries = 0
"""


def syslog_toml(certs: Path) -> str:
    return f"""
[syslog]
[[syslog.listeners]]
protocol = "udp"
address = "127.0.0.1"
port = 0
[[syslog.listeners]]
protocol = "tcp"
address = "127.0.0.1"
port = 0
[[syslog.listeners]]
protocol = "tls"
address = "127.0.0.1"
port = 0
[syslog.tls]
cert_file = "{certs / 'broker.crt'}"
key_file = "{certs / 'broker.key'}"
client_ca_file = "{certs / 'ca.crt'}"
"""


def rsyslog_conf(certs: Path, inport: int, udp: int, tcp: int, tls: int) -> str:
    q = 'queue.type="LinkedList" action.resumeRetryCount="-1" action.resumeInterval="1"'
    return f"""
global(workDirectory="@WORK@" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{certs / 'ca.crt'}"
       defaultNetstreamDriverCertFile="{certs / 'agent-relayt.relay.crt'}"
       defaultNetstreamDriverKeyFile="{certs / 'agent-relayt.relay.key'}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{inport}" ruleset="fwd")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{udp}" protocol="udp"
         template="RSYSLOG_ForwardFormat")
  action(type="omfwd" target="127.0.0.1" port="{tcp}" protocol="tcp"
         template="RSYSLOG_TraditionalForwardFormat" {q})
  action(type="omfwd" target="127.0.0.1" port="{tls}" protocol="tcp" TCP_Framing="octet-counted"
         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="localhost" template="RSYSLOG_SyslogProtocol23Format" {q})
}}
"""


async def wait_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "rsyslogd did not start listening"
            await asyncio.sleep(0.2)


async def test_rsyslog_forwards_over_udp_tcp_and_tls(tmp_path: Path, mosquitto: str) -> None:
    certs = tmp_path / "certs"
    assert privtel(["certs", "init", "--dir", str(certs), "--agent", "relayt/relay"]) == 0
    async with agent_with_syslog(tmp_path, mosquitto, syslog_toml(certs),
                                 DEVICE.format(port=free_port())) as ag:
        inport = free_port()
        conf = rsyslog_conf(certs, inport, ag.port("udp-0"), ag.port("tcp-0"),
                            ag.port("tls-0"))
        with Rsyslogd(tmp_path / "rsyslog", conf):
            await wait_listening(inport)
            sent = {"rs-auth": "authpriv.notice", "rs-dhcp": "local4.warning",
                    "rs-mail": "mail.crit"}
            for marker, pri in sent.items():
                await run("logger", "-n", "127.0.0.1", "-P", str(inport), "-T",
                          "--rfc5424", "-p", pri, "-t", "relayed",
                          f"{marker} lease 10.9.8.7 for {ADDR} granted")
            found = {m: await ag.wait_stored(m + " ", 3) for m in sent}
        pz = load_pseudonymiser(ag.cfg)
    codes = {"authpriv.notice": (10, 5), "local4.warning": (20, 4), "mail.crit": (2, 2)}
    for marker, recs in found.items():
        assert sorted(r["fields"]["transport"] for r in recs) == ["tcp", "tls", "udp"]
        for r in recs:
            f = r["fields"]
            assert (f["facility"], f["severity"]) == codes[sent[marker]], (marker, f)
            assert r["device"] == pz.device_token("core-sw1") and r["site"] == "branch-7"
            assert f.get("app_name") == "relayed", str(f)
            assert f"lease {pz.ip('10.9.8.7')} for {pz.ip(ADDR)} granted" in f["message"]
            assert ADDR not in r["raw"] and "10.9.8.7" not in r["raw"]
            assert "127.0.0.1" not in r["raw"] and "core-sw1" not in r["raw"]
    assert ag.agent.syslog is not None
    assert len(ag.agent.syslog.senders.known) == 1 and not ag.agent.syslog.senders.unknown
