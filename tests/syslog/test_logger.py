"""util-linux `logger` over UDP and TCP (both framings), IPv4 and IPv6, into the running
agent: every message is stored, pseudonymised, with its facility and severity."""

from __future__ import annotations

import socket
from pathlib import Path

from syslog_kit import agent_with_syslog, run

from agents.runtime import load_pseudonymiser
from pipelines.syslog import FACILITIES, SEVERITIES

SYSLOG = """
[syslog]
[[syslog.listeners]]
protocol = "udp"
address = "::"
port = 0
[[syslog.listeners]]
protocol = "tcp"
address = "::"
port = 0
"""
ADDR = "198.51.100.23"
ADDR6 = "2001:db8:77::15"

CASES = [  # marker, server, transport args, format args, priority
    ("lg-udp-3164", "127.0.0.1", ["-d"], ["--rfc3164"], "auth.warning"),
    ("lg-udp-5424", "127.0.0.1", ["-d"], ["--rfc5424", "--msgid", "LOGIN", "--sd-id",
                                         "origin@32473", "--sd-param", 'sw="x"'], "local3.err"),
    ("lg-tcp-3164", "127.0.0.1", ["-T"], ["--rfc3164"], "daemon.notice"),
    ("lg-tcp-oc-5424", "127.0.0.1", ["-T", "--octet-count"], ["--rfc5424"], "local7.debug"),
    ("lg-udp6-5424", "::1", ["-d"], ["--rfc5424"], "user.info"),
    ("lg-tcp6-oc-3164", "::1", ["-T", "--octet-count"], ["--rfc3164"], "authpriv.crit"),
]


async def test_logger_messages_are_stored_pseudonymised(tmp_path: Path, mosquitto: str) -> None:
    async with agent_with_syslog(tmp_path, mosquitto, SYSLOG) as ag:
        for marker, server, transport, fmt, pri in CASES:
            port = ag.port("udp-0" if "-d" in transport else "tcp-0")
            await run("logger", "-n", server, "-P", str(port), *transport, *fmt, "-p", pri,
                      "-t", "sshd", f"{marker} Failed password for alice from {ADDR} "
                      f"and {ADDR6} port 51000")
        found = {m: (await ag.wait_stored(m + " ", 1)) for m, *_ in CASES}
        pz = load_pseudonymiser(ag.cfg)
        host = socket.gethostname()
    for marker, server, _transport, fmt, pri in CASES:
        (rec,) = found[marker]
        f = rec["fields"]
        fac, sev = pri.split(".")
        assert (FACILITIES[f["facility"]], SEVERITIES[f["severity"]]) == (fac, sev), marker
        assert f["format"] == fmt[0].removeprefix("--"), marker
        assert f["app_name"] == "sshd"
        assert f["source_ip"] == pz.ip(server)
        assert rec["device"] == pz.device_token(server)  # unknown sender, accepted: its address
        assert f"from {pz.ip(ADDR)} and {pz.ip(ADDR6)} port" in f["message"]
        assert f["hostname"] == pz.id_token("host", host)
        for raw in (ADDR, ADDR6, "127.0.0.1", '"::1"', f'"{host}"'):
            assert raw not in rec["raw"], (marker, raw)
    assert found["lg-udp-5424"][0]["fields"]["msgid"] == "LOGIN"
    assert found["lg-udp-5424"][0]["fields"]["structured_data"].endswith('[origin@32473 sw="x"]')
    assert ADDR.encode() not in ag.db_bytes()
