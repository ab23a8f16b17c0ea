"""Shared helpers for the SSH tests: a credentials store, devices, simulators."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from agents.credentials import Credential, CredentialStore
from agents.pollers import Device
from agents.ssh.poller import SshOptions
from privtel.sim import SshDeviceSim

USER = "netops"
PASSWORD = "Pw-7f3c1e9a-not-in-logs"
WRONG_PASSWORD = "Pw-wrong-0b5d2e44"
ENABLE = "En-4c2a99e1-never-shown"


def make_store(tmp: Path, **extra: Credential) -> CredentialStore:
    store = CredentialStore(tmp / "credentials.enc", os.urandom(32))
    store.set("lab", Credential(username=USER, password=PASSWORD))
    store.set("wrong", Credential(username=USER, password=WRONG_PASSWORD))
    for name, cred in extra.items():
        store.set(name, cred)
    return store


def secrets_of(store: CredentialStore) -> list[str]:
    out: list[str] = []
    for cred in store.load().values():
        for s in cred.secrets():
            out.append(s)
            out.extend(line for line in s.splitlines() if len(line) >= 16 and "-----" not in line)
    return out


def device(name: str, port: int, known_hosts: Path, *, device_type: str = "cisco_ios",
           credential: str = "lab", policy: str = "strict", command_timeout_s: float = 5.0,
           connect_timeout_s: float = 5.0, poll_timeout_s: float = 30.0,
           interval_s: float = 60.0, **opts: object) -> Device:
    options = SshOptions(device_type=device_type, credential=credential,
                         known_hosts=known_hosts, host_key_policy=policy,
                         command_timeout_s=command_timeout_s,
                         connect_timeout_s=connect_timeout_s, poll_timeout_s=poll_timeout_s,
                         **opts)  # type: ignore[arg-type]
    return Device(name=name, address="127.0.0.1", port=port, protocol="ssh",
                  interval_s=interval_s, tenant="acme", site="lab", options=options)


def trust(known_hosts: Path, sim: SshDeviceSim) -> None:
    with known_hosts.open("a") as f:
        f.write(f"[127.0.0.1]:{sim.port} {sim.public_host_key}\n")


@contextlib.asynccontextmanager
async def running(vendor: str, **kw: object) -> AsyncIterator[SshDeviceSim]:
    sim = SshDeviceSim(vendor, 0, {USER: PASSWORD}, **kw)  # type: ignore[arg-type]
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def by_name(records: list, name: str) -> list:
    return [r for r in records if r.name == name]


class SimFarm:
    """Many simulators on their own event loop in a background thread, so the loop
    under test carries only the pollers, as on a real agent whose devices are remote."""

    def __init__(self, vendors: list[str]) -> None:
        import asyncio
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sim-farm",
                                        daemon=True)
        self.sims = [SshDeviceSim(v, 0, {USER: PASSWORD}) for v in vendors]

    def __enter__(self) -> SimFarm:
        import asyncio

        self._thread.start()

        async def start() -> None:
            await asyncio.gather(*(s.start() for s in self.sims))

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio

        async def stop() -> None:
            await asyncio.gather(*(s.stop() for s in self.sims))

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
