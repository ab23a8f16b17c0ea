"""SIGHUP reload and the poller context: devices may change on a reload, but a
change to `[credentials]`, `[ssh]` or `[snmp]` needs a restart and is refused
with the running config kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agents import config as agent_config
from agents.runtime import Agent
from privtel.demo.run import write_keys


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _config(tmp: Path, tables: str = "") -> str:
    files = write_keys(tmp / "keys", "reload-agent", "acme")
    return f"""
[agent]
id = "reload-agent"
tenant = "acme"
site = "lab"
state_dir = "state"
[keys]
signing_key = "{files['agent_key']}"
collector_public_key = "{files['collector_pub']}"
tenant_key = "{files['tenant_key']}"
{tables}
"""


def test_reload_refuses_a_changed_poller_context(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "agent.toml"
    _write(path, _config(tmp_path, "[ssh]\nmax_concurrent = 4\n"))
    agent = Agent(agent_config.load(path), registry=CollectorRegistry())
    assert agent.reload() is True  # same settings: fine
    _write(path, _config(tmp_path, "[ssh]\nmax_concurrent = 8\n"))
    assert agent.reload() is False
    assert "restart the agent" in caplog.text
    assert agent.cfg.pollers.ssh_max_concurrent == 4
