"""Builders for the API tests (imported by basename): a seeded store whose
records were pseudonymised with known tenant keys, users, TOTP codes."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyotp
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette 1.x prefers httpx2 for its TestClient
    from starlette.testclient import TestClient

from collector.api import ApiConfig, create_app
from collector.auth import TOTP_STEP, Users
from collector.search import TenantKeys
from collector.store import BatchMeta, TaggedRecord, open_store
from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.record import Kind, Record

KEYS = {"acme": "11" * 16 + "22" * 16, "globex": "33" * 16 + "44" * 16,
        "initech": "55" * 16 + "66" * 16}
T0 = 1_760_000_000.0
SUBJECT = "192.0.2.7"       # the data subject's address
NEIGHBOUR = "192.0.2.99"    # same /24, someone else
OTHER = "198.51.100.20"     # elsewhere


def tenant_keys(*tenants: str) -> TenantKeys:
    names = tenants or tuple(KEYS)
    return TenantKeys({t: [TenantKey.from_hex(KEYS[t])] for t in names})


def pseudo(tenant: str, addr: str) -> str:
    return Pseudonymiser(TenantKey.from_hex(KEYS[tenant])).ip(addr)


def raw_records(tenant: str) -> list[Record]:
    """Ten records per tenant over ten minutes, across kinds, three addresses."""
    mk = [
        (Kind.LOG, "syslog", {"message": f"sshd: Accepted password from {SUBJECT} port 5022"}),
        (Kind.EVENT, "fw.drop", {"src_ip": SUBJECT, "dst_ip": OTHER, "action": "drop"}),
        (Kind.LOG, "syslog", {"message": f"sshd: Failed password from {NEIGHBOUR}"}),
        (Kind.EVENT, "fw.drop", {"src_ip": OTHER, "dst_ip": NEIGHBOUR, "action": "drop"}),
        (Kind.METRIC, "if", {"if_name": "eth0", "in_octets": 100}),
        (Kind.HEALTH, "device.health", {"up": 1, "reason": None, "protocol": "snmp"}),
        (Kind.LOG, "syslog", {"message": "kernel: link up on eth1"}),
        (Kind.EVENT, "dhcp.lease", {"client_ip": SUBJECT, "hostname": "laptop-7"}),
        (Kind.INVENTORY, "snmp.system", {"sys_descr": "RouterOS", "uptime_s": 5}),
        (Kind.LOG, "syslog", {"message": f"ntp: peer {OTHER} unreachable"}),
    ]
    p = Pseudonymiser(TenantKey.from_hex(KEYS[tenant]))
    out = []
    for i, (kind, name, fields) in enumerate(mk):
        site = "hq" if i % 2 == 0 else "branch"
        r = Record(kind=kind, tenant=tenant, site=site, device=f"dev{i % 3}", name=name,
                   fields=fields, ts=T0 + 60 * i)
        out.append(p.record(r))
    return out


def seed(url: str, tenants: tuple[str, ...] = ("acme", "globex")) -> dict[str, list[Record]]:
    store = open_store(url)
    out = {}
    try:
        store.migrate()
        for t in tenants:
            recs = raw_records(t)
            meta = BatchMeta(agent_id=f"agent-{t}", batch_id=f"b-{os.urandom(4).hex()}", seq=1,
                             tenant=t, created=T0, received_at=T0 + 1)
            store.write_batch(meta, [TaggedRecord(r, "logs", "legitimate interest", None)
                                     for r in recs])
            out[t] = recs
    finally:
        store.close()
    return out


@dataclass
class Env:
    client: TestClient
    url: str
    records: dict[str, list[Record]]
    secrets: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> Any:
        return self.client.app.state.api  # type: ignore[attr-defined]

    def user(self, name: str, role: str, tenants: str, mfa: bool = False) -> str:
        users = Users(self.api.db)
        token = users.add(name, role, tenants)
        if mfa:
            uri = users.enrol_totp(name)
            self.secrets[name] = pyotp.parse_uri(uri).secret
        self.tokens[name] = token
        return token

    def h(self, name: str, totp: bool = False, step_offset: int = 0) -> dict[str, str]:
        """Headers for a user; with `totp`, a fresh code for a step not used before."""
        out = {"Authorization": f"Bearer {self.tokens[name]}"}
        if totp:
            out["X-TOTP"] = self.code(name, step_offset)
        return out

    def code(self, name: str, step_offset: int = 0) -> str:
        """Codes are single use; each call resets the user's last-used step, so
        tests can take several MFA actions within one 30 s step."""
        with self.api.db.tx(write=True) as cur:
            cur.execute("UPDATE api_users SET totp_last_step = 0 WHERE name = ?", (name,))
        import time

        return pyotp.TOTP(self.secrets[name], interval=TOTP_STEP).at(
            time.time() + step_offset * TOTP_STEP)


def make_env(url: str, tenants: tuple[str, ...] = ("acme", "globex"),
             keys: TenantKeys | None = None, **cfg: Any) -> Env:
    records = seed(url, tenants)
    app = create_app(ApiConfig(store_url=url, keys=keys or tenant_keys(), index_interval_s=0.0,
                               **cfg))
    return Env(TestClient(app), url, records)


@pytest.fixture
def env(store_url: str) -> Iterator[Env]:
    """A seeded API on each backend; conftests that want it import it by name."""
    e = make_env(store_url)
    try:
        yield e
    finally:
        e.client.close()
        e.api.close()
