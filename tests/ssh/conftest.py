"""Fixtures for the SSH tests: a real sshd (tests/peers/sshd.py) and a credentials store."""

from __future__ import annotations

from pathlib import Path

import pytest
from peers.sshd import sshd  # noqa: F401  (fixture)
from ssh_kit import make_store

from agents.credentials import CredentialStore


@pytest.fixture
def store(tmp_path: Path) -> CredentialStore:
    return make_store(tmp_path)


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    p = tmp_path / "known_hosts"
    p.touch(mode=0o600)
    return p
