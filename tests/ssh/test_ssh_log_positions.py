"""Log positions survive an agent restart: a new poller on the same state dir sends
only what the device logged since, and the saved positions hold no log content,
no address and no device name. Against the SSH device simulator."""

from __future__ import annotations

import os
from pathlib import Path

from ssh_kit import PASSWORD, USER, by_name, device, running, trust

from agents.credentials import Credential, CredentialStore, generate_key_file, load_key
from agents.pollers import REGISTRY, PollerContext
from agents.ssh.poller import SshPoller

NEW = ("*Nov 25 14:09:10.001: %LINK-3-UPDOWN: Interface GigabitEthernet0/0/1, changed "
       "state to down (peer 192.0.2.201)")


def _context(tmp: Path, known_hosts: Path) -> PollerContext:
    key_file = generate_key_file(tmp / "creds.key")
    creds = tmp / "creds.enc"
    CredentialStore(creds, load_key(key_file=key_file)).set(
        "lab", Credential(username=USER, password=PASSWORD))
    return PollerContext(state_dir=tmp / "state", credentials_file=creds,
                         credentials_key_file=key_file, ssh_known_hosts=known_hosts)


async def _log_lines(poller: SshPoller, dev: object, kept: bool | None = True) -> list[str]:
    """One poll as the scheduler makes it: `kept` is what the spool did with the
    records (None: the agent died before it could say)."""
    records = await poller.poll(dev)  # type: ignore[arg-type]
    (health,) = by_name(records, "device.health")
    assert health.fields["up"] == 1, health.fields
    if kept is not None:
        await poller.settled(dev, kept)  # type: ignore[arg-type]
    return [r.fields["message"] for r in by_name(records, "log.line")]


async def test_restart_sends_only_new_lines(tmp_path: Path, known_hosts: Path) -> None:
    ctx = _context(tmp_path, known_hosts)
    async with running("cisco_ios") as sim:
        trust(known_hosts, sim)
        dev = device("edge-rtr-7", sim.port, known_hosts)
        first = REGISTRY["ssh"].make(ctx)
        assert isinstance(first, SshPoller)
        try:
            before = await _log_lines(first, dev)
        finally:
            await first.close()

        restarted = REGISTRY["ssh"].make(ctx)
        try:
            after_restart = await _log_lines(restarted, dev)
            sim.add_log(NEW)
            newer = await _log_lines(restarted, dev)
        finally:
            await restarted.close()

        in_memory = SshPoller(credentials=CredentialStore(
            ctx.credentials_file, load_key(key_file=ctx.credentials_key_file)))  # type: ignore[arg-type]
        try:
            without_state = await _log_lines(in_memory, dev)
        finally:
            await in_memory.close()

    assert len(before) == 4
    assert after_restart == []
    assert newer == [NEW]
    assert len(without_state) == 5  # what the first poll after a restart sent before

    pos_dir = ctx.state_dir / "ssh-log-positions"
    files = sorted(pos_dir.iterdir())
    assert os.stat(pos_dir).st_mode & 0o077 == 0
    assert [f.name for f in files if f.suffix == ".json"] and all(
        os.stat(f).st_mode & 0o077 == 0 for f in files)
    blob = b"".join(f.read_bytes() for f in files)
    names = " ".join(f.name for f in files)
    for secret in [*before, NEW, "127.0.0.1", "203.0.113.9", "192.0.2.201", "edge-rtr-7",
                   "rtr-ios-1", "GigabitEthernet", PASSWORD]:
        assert secret.encode() not in blob and secret not in names
    assert not [f for f in files if f.name.endswith(".tmp")]


async def test_damaged_position_resends_once_and_recovers(tmp_path: Path,
                                                          known_hosts: Path) -> None:
    ctx = _context(tmp_path, known_hosts)
    async with running("cisco_ios") as sim:
        trust(known_hosts, sim)
        dev = device("edge-rtr-8", sim.port, known_hosts)
        p = REGISTRY["ssh"].make(ctx)
        try:
            assert len(await _log_lines(p, dev)) == 4
        finally:
            await p.close()
        (saved,) = (ctx.state_dir / "ssh-log-positions").glob("*.json")
        saved.write_bytes(b'{"v": 1, "cursors": ')
        p = REGISTRY["ssh"].make(ctx)
        try:
            assert len(await _log_lines(p, dev)) == 4  # damaged: the buffer once more
            assert await _log_lines(p, dev) == []
        finally:
            await p.close()
        p = REGISTRY["ssh"].make(ctx)
        try:
            assert await _log_lines(p, dev) == []  # and the rewritten position holds
        finally:
            await p.close()


async def test_position_moves_only_once_the_lines_are_spooled(tmp_path: Path,
                                                              known_hosts: Path) -> None:
    ctx = _context(tmp_path, known_hosts)
    async with running("cisco_ios") as sim:
        trust(known_hosts, sim)
        dev = device("edge-rtr-9", sim.port, known_hosts)
        p = REGISTRY["ssh"].make(ctx)
        try:
            refused = await _log_lines(p, dev, kept=False)  # spool full: nothing moves
            again = await _log_lines(p, dev, kept=True)
            sim.add_log(NEW)
            crashed = await _log_lines(p, dev, kept=None)  # died before the spool said
        finally:
            await p.close()
        restarted = REGISTRY["ssh"].make(ctx)
        try:
            after_restart = await _log_lines(restarted, dev)
        finally:
            await restarted.close()
    assert len(refused) == 4 and again == refused
    assert crashed == [NEW]
    assert after_restart == [NEW]  # sent again, not lost
