"""Builders shared by tests in every folder (imported by basename: tests have no packages).

One place for what tests used to copy: the store backends a test runs on, the
`[agent]`/`[keys]` head of an agent config, owner-only files, and a plain record.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.record import Kind, Record
from plumbing.files import write_private as _write_private

BACKENDS = ["sqlite", "postgres"]
"""Every store backend; the `store_url` fixture (tests/conftest.py) turns one into a URL."""

on_backends = pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
"""Runs a test once per backend, with `store_url` set for it."""


def agent_head(agent_id: str = "edge-1", *, tenant: str = "acme", site: str = "hq",
               state_dir: str = "state") -> str:
    """The `[agent]` and `[keys]` tables a parse-only agent config needs (the key
    files are never opened by `agents.config.parse`)."""
    return f"""
[agent]
id = "{agent_id}"
tenant = "{tenant}"
site = "{site}"
state_dir = "{state_dir}"
[keys]
signing_key = "k"
collector_public_key = "c"
tenant_key = "t"
"""


def write_private(path: Path | str, data: bytes | str) -> Path:
    """`data` at `path`, mode 0600 (text as UTF-8), as config and key files must be."""
    p = Path(path)
    _write_private(p, data.encode() if isinstance(data, str) else data)
    return p


def rec(i: int = 0, *, kind: Kind = Kind.METRIC, tenant: str = "acme", device: str = "dev1",
        name: str = "if", ts: float = 1_700_000_000.0, **fields: object) -> Record:
    """A valid record; `i` varies its fields and time so a run of them are distinct."""
    return Record(kind=kind, tenant=tenant, site="site1", device=device, name=name,
                  fields=fields or {"in_octets": i, "if_name": f"eth{i}"}, ts=ts + i)
