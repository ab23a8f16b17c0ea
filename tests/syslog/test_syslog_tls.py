"""TLS listener (RFC 5425): with a client CA set, a sender without a certificate from it
is refused before anything is read; one with a certificate is heard."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from test_syslog_hostile import Sink, until, value

from agents.syslog.config import Listener, SyslogConfig, TlsFiles
from agents.syslog.receiver import SyslogReceiver
from pipelines.config import ConfigError
from privtel.cli import main as privtel


def client_ctx(certs: Path, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if with_cert:
        ctx.load_cert_chain(str(certs / "agent-t.relay.crt"), str(certs / "agent-t.relay.key"))
    return ctx


async def send_tls(port: int, ctx: ssl.SSLContext, data: bytes) -> None:
    _, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                         server_hostname="localhost")
    w.write(data)
    await w.drain()
    w.close()
    await w.wait_closed()


async def test_client_certificate_required_when_a_client_ca_is_set(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert privtel(["certs", "init", "--dir", str(certs), "--agent", "t/relay"]) == 0
    cfg = SyslogConfig((Listener("tls", "127.0.0.1", 0, "s"),), tls=TlsFiles(
        certs / "broker.crt", certs / "broker.key", certs / "ca.crt"))
    registry = CollectorRegistry()
    sink = Sink(registry)
    async with SyslogReceiver(cfg, sink, tenant="acme", site="lab", registry=registry) as r:
        port = r.ports["s"]
        # with TLS 1.3 the client may finish its side before the server refuses it
        with contextlib.suppress(ssl.SSLError, ConnectionError, OSError):
            await send_tls(port, client_ctx(certs, False), b"19 <13>no certificate")
        await send_tls(port, client_ctx(certs, True), b"21 <13>with certificate")
        await until(lambda: "with certificate" in sink.messages())
    assert "no certificate" not in sink.messages()
    assert value(registry, "privtel_agent_syslog_received_total", listener="s",
                 protocol="tls") == 1
    assert value(registry, "privtel_agent_syslog_dropped_total", reason="tls_handshake") == 1


async def test_world_readable_key_is_refused(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert privtel(["certs", "init", "--dir", str(certs), "--agent", "t/relay"]) == 0
    (certs / "broker.key").chmod(0o644)
    cfg = SyslogConfig((Listener("tls", "127.0.0.1", 0, "s"),), tls=TlsFiles(
        certs / "broker.crt", certs / "broker.key"))
    with pytest.raises(ConfigError, match="chmod 600"):
        async with SyslogReceiver(cfg, Sink(CollectorRegistry()), tenant="acme", site="lab"):
            pass
