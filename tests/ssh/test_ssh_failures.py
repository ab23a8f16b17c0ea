"""Failures become data: each fault gives one health record with its reason code,
and no secret reaches a record or a log line (netmiko and paramiko at DEBUG included)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from peers.ports import free_port
from ssh_kit import (
    ENABLE,
    PASSWORD,
    USER,
    by_name,
    device,
    make_store,
    running,
    secrets_of,
    trust,
)

from agents.credentials import Credential, CredentialStore
from agents.ssh.poller import SshPoller
from pipelines.record import Record, encode
from privtel.sim import SshDeviceSim


@pytest.fixture
def store(tmp_path: Path) -> CredentialStore:
    return make_store(tmp_path, admin=Credential(username=USER, password=PASSWORD,
                                                 enable_secret=ENABLE))


@pytest.fixture
async def poller(store: CredentialStore) -> AsyncIterator[SshPoller]:
    p = SshPoller(credentials=store, max_concurrent=4)
    yield p
    await p.close()


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_clean(records: list[Record], caplog: pytest.LogCaptureFixture,
                 store: CredentialStore) -> None:
    secrets = secrets_of(store)
    assert secrets and ENABLE in secrets
    blob = encode(records).decode()
    logs = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for s in secrets:
        assert s not in blob
        assert s not in logs
    assert "127.0.0.1" not in blob
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("agents")]
    assert not [m for m in ours if "127.0.0.1" in m]


def only_health(records: list[Record]) -> dict:
    assert len(records) == 1
    (h,) = records
    assert h.name == "device.health" and h.kind.value == "health"
    assert h.fields["up"] == 0 and h.fields["protocol"] == "ssh"
    return dict(h.fields)


async def test_auth_failure(poller: SshPoller, store: CredentialStore, known_hosts: Path,
                            caplog: pytest.LogCaptureFixture) -> None:
    async with running("cisco_ios") as sim:
        trust(known_hosts, sim)
        records = await poller.poll(device("r1", sim.port, known_hosts, credential="wrong"))
    assert only_health(records)["reason"] == "auth_failed"
    assert sim.commands == []
    assert_clean(records, caplog, store)


async def test_enable_secret_sent_by_netmiko_leaks_nothing(
        poller: SshPoller, store: CredentialStore, known_hosts: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    async with running("cisco_ios", enable_secret=ENABLE) as sim:
        trust(known_hosts, sim)
        records = await poller.poll(device("r1", sim.port, known_hosts, credential="admin"))
        async with running("cisco_ios", enable_secret="other-secret") as locked:
            trust(known_hosts, locked)
            denied = await poller.poll(device("r2", locked.port, known_hosts,
                                              credential="admin"))
    assert by_name(records, "device.health")[0].fields["up"] == 1
    assert "enable" in sim.commands and "show version" in sim.commands
    assert len(by_name(records, "if.errors")) == 2
    assert only_health(denied)["reason"] == "auth_failed"
    assert "enable" in locked.commands and "show version" not in locked.commands
    assert any("write_channel" in r.getMessage() for r in caplog.records), \
        "netmiko debug logging should be captured"
    assert_clean(records + denied, caplog, store)


async def test_host_key_mismatch(poller: SshPoller, store: CredentialStore, known_hosts: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    async with running("cisco_ios") as sim:
        other = SshDeviceSim("cisco_ios")
        known_hosts.write_text(f"[127.0.0.1]:{sim.port} {other.public_host_key}\n")
        records = await poller.poll(device("r1", sim.port, known_hosts))
    assert only_health(records)["reason"] == "host_key_mismatch"
    assert sim.commands == []
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
                and r.name == "agents.ssh.poller"]
    assert any("r1: host_key_mismatch" in w and "remove its entry" in w for w in warnings)
    assert_clean(records, caplog, store)


async def test_unknown_host_key_refused_by_default(
        poller: SshPoller, store: CredentialStore, known_hosts: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    async with running("cisco_ios") as sim:
        records = await poller.poll(device("r1", sim.port, known_hosts))
    assert only_health(records)["reason"] == "host_key_unknown"
    assert sim.commands == []
    assert known_hosts.read_text() == ""


async def test_trust_on_first_use_then_mismatch(poller: SshPoller, store: CredentialStore,
                                                known_hosts: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    async with running("cisco_ios") as sim:
        port = sim.port
        dev = device("r1", port, known_hosts, policy="tofu")
        first = await poller.poll(dev)
        second = await poller.poll(dev)
    text = known_hosts.read_text()
    assert by_name(first, "device.health")[0].fields["up"] == 1
    assert by_name(second, "device.health")[0].fields["up"] == 1
    assert len(text.splitlines()) == 1
    assert text.startswith("|1|") and "127.0.0.1" not in text
    assert sim.public_host_key.split()[1] in text

    impostor = SshDeviceSim("cisco_ios", port, {USER: PASSWORD})
    await impostor.start()
    try:
        third = await poller.poll(dev)
    finally:
        await impostor.stop()
    assert only_health(third)["reason"] == "host_key_mismatch"
    assert impostor.commands == []
    assert_clean(first + second + third, caplog, store)


async def test_refused(poller: SshPoller, known_hosts: Path) -> None:
    records = await poller.poll(device("r1", free_port(), known_hosts))
    assert only_health(records)["reason"] == "refused"


async def test_timeout_when_no_ssh_banner(poller: SshPoller, known_hosts: Path) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        records = await poller.poll(device("r1", port, known_hosts, connect_timeout_s=1.0))
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()
    assert held, "the poller never connected"
    assert only_health(records)["reason"] == "timeout"


async def test_unexpected_prompt(poller: SshPoller, known_hosts: Path) -> None:
    async with running("cisco_ios", fault="bad_prompt") as sim:
        trust(known_hosts, sim)
        records = await poller.poll(device("r1", sim.port, known_hosts, command_timeout_s=1.0))
    assert only_health(records)["reason"] == "unexpected_prompt"
    assert "show version" not in sim.commands


async def test_device_that_stops_answering_times_out(poller: SshPoller,
                                                     known_hosts: Path) -> None:
    async with running("juniper_junos", fault="hang") as sim:
        trust(known_hosts, sim)
        records = await poller.poll(device("r1", sim.port, known_hosts,
                                           device_type="juniper_junos",
                                           command_timeout_s=30.0, poll_timeout_s=1.5))
    assert only_health(records)["reason"] == "timeout"
    assert sim.commands[-1] == "show version"


async def test_garbage_output_is_a_parse_error_event_not_a_crash(
        poller: SshPoller, store: CredentialStore, known_hosts: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    async with running("arista_eos", fault="garbage") as sim:
        trust(known_hosts, sim)
        records = await poller.poll(device("leaf", sim.port, known_hosts,
                                           device_type="arista_eos"))
    (health,) = by_name(records, "device.health")
    assert health.fields["up"] == 1
    assert health.fields["reason"] == "parse_error"
    events = by_name(records, "ssh.parse_error")
    assert {e.fields["command"] for e in events} == {
        "show version", "show processes top once | include Cpu",
        "show interfaces counters errors"}
    assert all(e.kind.value == "event" and e.fields["reason"] == "parse_error" for e in events)
    assert "DEADBEEF" not in encode(records).decode()
    assert not by_name(records, "ssh.inventory") and not by_name(records, "if.errors")
    assert_clean(records, caplog, store)


async def test_missing_credential(poller: SshPoller, known_hosts: Path) -> None:
    async with running("cisco_ios") as sim:
        trust(known_hosts, sim)
        records = await poller.poll(device("r1", sim.port, known_hosts, credential="nobody"))
    assert only_health(records)["reason"] == "no_credential"
    assert sim.connections == 0


async def test_every_failed_poll_is_reported_and_success_recovers(
        poller: SshPoller, known_hosts: Path) -> None:
    async with running("cisco_ios") as sim:
        trust(known_hosts, sim)
        bad = device("r1", sim.port, known_hosts, credential="wrong")
        reasons = [only_health(await poller.poll(bad))["reason"] for _ in range(2)]
        ok = await poller.poll(device("r1", sim.port, known_hosts))
    assert reasons == ["auth_failed", "auth_failed"]
    assert sim.connections == 3
    assert by_name(ok, "device.health")[0].fields["up"] == 1


async def test_unusable_private_key_is_auth_failed(tmp_path: Path, known_hosts: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    bad = ("-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA-x9\n"
           "-----END OPENSSH PRIVATE KEY-----\n")
    store = make_store(tmp_path, broken=Credential(username=USER, private_key=bad))
    poller = SshPoller(credentials=store)
    try:
        async with running("cisco_ios") as sim:
            trust(known_hosts, sim)
            records = await poller.poll(device("r1", sim.port, known_hosts, credential="broken"))
    finally:
        await poller.close()
    assert only_health(records)["reason"] == "auth_failed"
    assert "bm90IGEga2V5IGF0IGFsbA-x9" not in caplog.text


async def test_close_aborts_a_session_in_flight(store: CredentialStore,
                                                known_hosts: Path) -> None:
    poller = SshPoller(credentials=store)
    async with running("cisco_ios", fault="hang") as sim:
        trust(known_hosts, sim)
        task = asyncio.create_task(poller.poll(device("r1", sim.port, known_hosts,
                                                      command_timeout_s=60,
                                                      poll_timeout_s=120)))
        while "show version" not in sim.commands:
            await asyncio.sleep(0.05)
        await poller.close()
        records = await asyncio.wait_for(task, 30)
    assert only_health(records)["reason"] == "timeout"
    after = await poller.poll(device("r1", sim.port, known_hosts))
    assert only_health(after)["reason"] == "error"
