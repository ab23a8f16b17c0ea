"""Shared test fixtures: the real services this machine runs, checked before use."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
PG_DSN = os.environ.get("PRIVTEL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mosquitto() -> str:
    """URL of the real Mosquitto; a clear failure (not a skip) when it is down."""
    if not _reachable(MQTT_HOST, MQTT_PORT):
        pytest.fail(f"Mosquitto is not answering on {MQTT_HOST}:{MQTT_PORT}; "
                    "start it with: mosquitto -d -c /etc/mosquitto/mosquitto.conf")
    return f"mqtt://{MQTT_HOST}:{MQTT_PORT}"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    if not _reachable("127.0.0.1", 5432):
        pytest.fail("PostgreSQL is not answering on 127.0.0.1:5432; start it with: "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    return PG_DSN



@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL per test: SQLite by default, or (with `indirect` param "postgres") a
    PostgreSQL schema of its own, dropped afterwards."""
    from peers.pg import drop_schema, pg_schema_url

    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    dsn = request.getfixturevalue("pg_dsn")
    schema = f"privtel_test_{os.urandom(6).hex()}"
    try:
        yield pg_schema_url(dsn, schema)
    finally:
        drop_schema(dsn, schema)


@pytest.fixture
def with_example_credentials(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The shipped agent example names SNMP secrets in a credential store: this turns its text
    into one whose store exists and holds them, so the real loader can check it."""
    from agents.credentials import Credential, CredentialStore, generate_key_file, load_key

    key = generate_key_file(tmp_path / "creds.key")
    store = CredentialStore(tmp_path / "creds.enc", load_key(key_file=key))
    store.set("core-1-snmp", Credential(snmp_community="example-community"))
    store.set("fw-1-snmp", Credential(snmp_auth_key="example-auth", snmp_priv_key="ex-priv1"))

    def fill(text: str) -> str:
        return (text.replace("/etc/privtel/credentials.enc", str(store.path))
                .replace("/etc/privtel/keys/credentials.key", str(key)))
    return fill


# `peers`: the test talks to a real service (broker, database, snmpd, sshd, rsyslog,
# Prometheus...); `slow`: whole processes end to end. `pytest -m "not peers"` runs the
# pure tests in seconds. Marked here, from what a test uses, so a new test needs nothing.
_PEER_FIXTURES = frozenset({"mosquitto", "pg_dsn", "store_url"})
_PEER_HELPERS = frozenset({"peers", "transport_helpers", "syslog_kit", "e2e_kit", "deploy_kit",
                           "api_kit", "collector_kit", "helpers", "agent_driver",
                           "collector_driver", "faults_kit"})
_PEER_DIRS = frozenset({"e2e", "faults", "deploy", "syslog"})
_SLOW_DIRS = frozenset({"e2e", "faults"})


def _helper_of(value: object) -> str:
    name = getattr(value, "__module__", None) or getattr(value, "__name__", "")
    return name.split(".")[0] if isinstance(name, str) else ""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    seen: dict[str, bool] = {}
    for item in items:
        path = Path(str(item.path))
        folder = path.parent.name if path.parent != tests else ""
        if path.name not in seen:
            mod = getattr(item, "module", None)
            seen[path.name] = folder in _PEER_DIRS or any(
                _helper_of(v) in _PEER_HELPERS for v in vars(mod).values()) if mod else False
        if seen[path.name] or _PEER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.peers)
        if folder in _SLOW_DIRS or path.name == "test_benches.py":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A CLI command run in-process (`privtel.logs.setup`) replaces the root handlers and
    quietens library loggers; undo that so the next test's caplog sees what it expects."""
    import logging

    root = logging.getLogger()
    names = ("amqtt", "transitions", "pysnmp", "paramiko", "netmiko", "asyncssh")
    saved = (root.level, list(root.handlers), [logging.getLogger(n).level for n in names])
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for n, level in zip(names, saved[2], strict=True):
        logging.getLogger(n).setLevel(level)
