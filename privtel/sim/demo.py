"""One simulated SSH device wired up the way an operator would: what `privtel demo` runs.

It writes, under the demo's work dir, a credentials key file (0600), an
encrypted credentials file holding a random password, and a known_hosts entry
(hashed) for the simulator's host key, then hands back the agent-config tables
that point at them (`[credentials]`, `[ssh]`, the `[[devices]]` entry). The
password exists only in the simulator's memory and in the encrypted file.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import paramiko

from agents.credentials import (
    Credential,
    CredentialStore,
    generate_key_file,
    load_key,
)
from privtel.sim.ssh import SshDeviceSim

DEMO_USER = "demo"
CREDENTIAL = "demo-ssh"


@dataclass(slots=True)
class DemoSshDevice:
    sim: SshDeviceSim
    credentials_file: Path
    key_file: Path
    known_hosts: Path

    def config_toml(self) -> str:
        """The agent-wide tables naming the credentials, its key and known_hosts
        (paths absolute; no secret in them)."""
        return (f'\n[credentials]\nfile = "{self.credentials_file}"\n'
                f'key_file = "{self.key_file}"\n'
                f'\n[ssh]\nknown_hosts = "{self.known_hosts}"\n')

    def device_toml(self, name: str = "sim-ssh", interval_s: float = 10.0) -> str:
        """The `[[devices]]` entry for this device; it needs `config_toml()` beside it."""
        return (f'\n[[devices]]\nname = "{name}"\naddress = "127.0.0.1"\n'
                f'port = {self.sim.port}\nprotocol = "ssh"\ninterval_s = {interval_s}\n'
                f'[devices.ssh]\ndevice_type = "{self.sim.vendor}"\n'
                f'credential = "{CREDENTIAL}"\n'
                f"connect_timeout_s = 5.0\ncommand_timeout_s = 10.0\n")

    async def stop(self) -> None:
        await self.sim.stop()


async def start_demo_ssh(workdir: Path, vendor: str = "cisco_ios",
                         port: int = 0) -> DemoSshDevice:
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(18)
    sim = SshDeviceSim(vendor, port, {DEMO_USER: password})
    await sim.start()
    key_file = workdir / "credentials.key"
    if not key_file.exists():
        generate_key_file(key_file)
    creds = workdir / "credentials.enc"
    CredentialStore(creds, load_key(key_file=key_file)).set(
        CREDENTIAL, Credential(username=DEMO_USER, password=password))
    known_hosts = workdir / "ssh_known_hosts"
    name = f"[127.0.0.1]:{sim.port}"
    kind, b64 = sim.public_host_key.split()[:2]
    with known_hosts.open("a") as f:
        f.write(f"{paramiko.HostKeys.hash_host(name)} {kind} {b64}\n")
    known_hosts.chmod(0o600)
    return DemoSshDevice(sim, creds, key_file, known_hosts)
