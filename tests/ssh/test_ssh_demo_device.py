"""The demo's SSH device: the config tables it hands out parse, and polling it
through the agent's own config path, poller context and registry works with no
environment variable set and without any secret in view."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from factories import agent_head
from ssh_kit import by_name

from agents import config as agent_config
from agents.credentials import FILE_ENV, KEY_ENV, KEY_FILE_ENV, CredentialStore, load_key
from agents.pollers import REGISTRY
from agents.ssh.poller import KNOWN_HOSTS_ENV, SshPoller
from pipelines.record import encode
from privtel.sim.demo import start_demo_ssh

AGENT = agent_head("demo")


async def test_demo_device_polls_through_config_and_registry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (FILE_ENV, KEY_ENV, KEY_FILE_ENV, KNOWN_HOSTS_ENV):
        monkeypatch.delenv(name, raising=False)
    demo = await start_demo_ssh(tmp_path / "demo")
    try:
        cfg = agent_config.parse(AGENT + demo.config_toml() + demo.device_toml(),
                                 str(tmp_path / "agent.toml"), base=tmp_path)
        assert cfg.pollers.credentials_file == demo.credentials_file
        assert cfg.pollers.ssh_known_hosts == demo.known_hosts
        poller = REGISTRY["ssh"].make(cfg.pollers)
        assert isinstance(poller, SshPoller)
        try:
            records = await poller.poll(cfg.devices[0])
        finally:
            await poller.close()
    finally:
        await demo.stop()
    (health,) = by_name(records, "device.health")
    assert health.fields["up"] == 1, health.fields
    assert by_name(records, "ssh.inventory")[0].fields["serial"] == "FDO2307A1BC"
    store = CredentialStore(demo.credentials_file, load_key(key_file=demo.key_file))
    password = store.get("demo-ssh").password
    assert password and password not in encode(records).decode()
    assert password.encode() not in demo.credentials_file.read_bytes()
    assert "127.0.0.1" not in demo.known_hosts.read_text()
    for p in (demo.key_file, demo.credentials_file, demo.known_hosts):
        assert os.stat(p).st_mode & 0o077 == 0
