"""An objection reaches the real agent: `privtel dsr object` records it through the
API and publishes the signed, pseudonymised suppression list on the real
Mosquitto; the running agent drops (and counts) the subject's records before
the spool while everyone else's reach the collector's store; `dsr unobject`
(TOTP) lifts it and the subject's records flow again. A list signed with
another key is refused and the one in force stays."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import orjson
import pyotp
from peers.ports import free_port

from agents import config as agent_config
from agents.runtime import Agent
from collector import config as collector_config
from collector.api import ApiConfig, create_app
from collector.api.serve import server
from collector.auth import TOTP_STEP, Users
from collector.runtime import Collector
from collector.search import TenantKeys
from pipelines.keys import generate_signing_key, signing_key_pem, verify_key_pem
from pipelines.record import Kind, Record
from pipelines.suppression import SuppressionList, sign_list
from plumbing.keyfiles import read_tenant_key
from privtel.cli import main
from privtel.demo.run import running, write_configs

SUBJECT, OTHER = "192.0.2.7", "198.51.100.20"


def private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


async def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def records(tenant: str, site: str, n: int) -> list[Record]:
    out = []
    for i in range(n):
        out.append(Record(kind=Kind.EVENT, tenant=tenant, site=site, device="fw-1",
                          name="fw.drop", fields={"src_ip": SUBJECT, "dst_ip": OTHER}))
        out.append(Record(kind=Kind.LOG, tenant=tenant, site=site, device="fw-1",
                          name="syslog", fields={"message": f"conn from {OTHER} port {i}"}))
    return out


async def test_objection_is_enforced_by_the_agent(tmp_path: Path, mosquitto: str) -> None:
    tenant = f"obj{os.urandom(4).hex()}"
    agent_path, collector_path = write_configs(
        tmp_path, broker_url=mosquitto, protocol="5", devices=[], interval_s=60,
        metrics_port=0, tenant=tenant, agent_id="obj-agent")
    sk = generate_signing_key()
    sk_file = private(tmp_path / "suppress.key", signing_key_pem(sk))
    pub = tmp_path / "suppress.pub"
    pub.write_bytes(verify_key_pem(sk.public_key()))
    acfg = agent_config.load(agent_path)
    acfg = replace(acfg, keys=replace(acfg.keys, suppression_public_key=pub))
    ccfg = collector_config.load(collector_path)

    keys = TenantKeys({tenant: [read_tenant_key(acfg.keys.tenant_key, 1)]})
    app = create_app(ApiConfig(store_url=f"sqlite:///{tmp_path / 'api.db'}", keys=keys,
                               index_interval_s=0.0))
    users = Users(app.state.api.db)
    token = private(tmp_path / "dora.token", users.add("dora", "dpo", tenant).encode())
    secret = pyotp.parse_uri(users.enrol_totp("dora")).secret
    subject = tmp_path / "subject.txt"
    subject.write_text(f"{SUBJECT}\n")
    port = free_port()
    srv = server(app, host="127.0.0.1", port=port, log_level="warning")
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    await wait_for(lambda: srv.started, 20, "the API")
    base = ["--api", f"http://127.0.0.1:{port}", "--token-file", str(token), "--tenant",
            tenant, "--addresses-file", str(subject), "--signing-key", str(sk_file),
            "--broker", mosquitto, "--mqtt-client-id", f"dpo-{tenant}"]
    try:
        # recorded and published before the agent runs: the retained list reaches it
        assert await asyncio.to_thread(main, ["dsr", "object", *base, "--reason", "DSR-21"]) == 0
        collector = Collector(ccfg, topic_filter=f"privtel/v1/{tenant}/+/batches")
        agent = Agent(acfg)
        started = asyncio.Event()
        on_started = agent._started
        agent._started = lambda: (on_started(), started.set())  # type: ignore[method-assign]
        def polled() -> int:  # the agent's own heartbeats are not the subject's records
            return (collector.store.count_records(tenant=tenant)
                    - collector.store.count_records(tenant=tenant, name="agent.heartbeat"))

        async with running(collector, agent):
            await wait_for(lambda: bool(agent.suppressor.ranges), 20, "the suppression list")
            await asyncio.wait_for(started.wait(), 20)  # every component is up
            await agent._emit(records(tenant, acfg.site, 5))
            await wait_for(lambda: polled() >= 5, 30, "the other records")
            assert agent.registry.get_sample_value(
                "privtel_agent_records_suppressed_total") == 5
            # a forged list (another key) changes nothing
            forged = sign_list(SuppressionList(tenant, time.time() + 60, ()),
                               generate_signing_key())
            assert not agent.suppressor.update(forged) and agent.suppressor.ranges

            code = pyotp.TOTP(secret, interval=TOTP_STEP).now()
            assert await asyncio.to_thread(main, ["dsr", "unobject", *base, "--reason",
                                                  "DSR-21 withdrawn", "--totp", code]) == 0
            await wait_for(lambda: not agent.suppressor.ranges, 20, "the lifted list")
            await agent._emit(records(tenant, acfg.site, 2))
            await wait_for(lambda: polled() >= 9, 30, "the subject's records after the lift")
            stored = collector.store.count_records(tenant=tenant, name="fw.drop")
            assert stored == 2 and polled() == 9
        assert agent.registry.get_sample_value("privtel_agent_records_suppressed_total") == 5
        assert agent.registry.get_sample_value(
            "privtel_agent_suppression_lists_rejected_total") == 1
    finally:
        srv.should_exit = True
        t.join(timeout=10)
    with app.state.api.db.tx() as cur:
        rows = cur.execute("SELECT action, outcome, detail FROM audit_log WHERE action LIKE "
                           "'dsr.%' ORDER BY seq").fetchall()
    assert [(a, o) for a, o, _ in rows] == [("dsr.object", "done"), ("dsr.unobject", "done")]
    assert orjson.loads(rows[0][2])["suppression_ranges"] == {tenant: 1}
    assert SUBJECT not in str(rows)
    app.state.api.close()
