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
