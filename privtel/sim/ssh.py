"""An SSH network device that answers from recorded CLI output.

Netmiko drives a device through an interactive PTY: it waits for the echo of
what it typed and for a vendor prompt, so the simulator behaves like a
terminal (character echo, CRLF line ends, a prompt after each command) rather
than an exec server. Recordings are plain text files under
`recordings/<vendor>/<command>.txt`, where the command is lowercased and every
run of other characters becomes `_`; `{{hostname}}` in a recording is replaced
with the simulated device's hostname.

Faults for tests: `garbage` answers every show command with noise,
`bad_prompt` never shows a recognisable prompt, `hang` accepts a command and
never answers it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncssh

RECORDINGS = Path(__file__).parent / "recordings"
FAULTS = ("garbage", "bad_prompt", "hang")


@dataclass(frozen=True, slots=True)
class Vendor:
    prompt: str
    setup: Mapping[str, str]
    invalid: str
    log_command: str
    banner: str = ""


VENDORS: dict[str, Vendor] = {
    "cisco_ios": Vendor(
        prompt="{hostname}#",
        setup={"terminal width 511": "", "terminal length 0": ""},
        invalid="                    ^\r\n% Invalid input detected at '^' marker.",
        log_command="show logging",
    ),
    "cisco_nxos": Vendor(
        prompt="{hostname}#",
        setup={"terminal width 511": "", "terminal length 0": ""},
        invalid="                    ^\r\n% Invalid command at '^' marker.",
        log_command="show logging logfile",
        banner="Cisco Nexus Operating System (NX-OS) Software\r\n",
    ),
    "arista_eos": Vendor(
        prompt="{hostname}#",
        setup={"terminal width 511": "Width set to 511 columns.",
               "terminal length 0": "Pagination disabled."},
        invalid="% Invalid input",
        log_command="show logging",
    ),
    "juniper_junos": Vendor(
        prompt="{user}@{hostname}> ",
        setup={"set cli screen-width 511": "Screen width set to 511",
               "set cli complete-on-space off": "Disabling complete-on-space",
               "set cli screen-length 0": "Screen length set to 0"},
        invalid="                   ^\r\nunknown command.",
        log_command="show log messages | last 200",
        banner="--- JUNOS 21.4R3-S4.9 Kernel 64-bit  JNPR-12.1-20230321.be2dd5e_buil\r\n",
    ),
}
DEFAULT_HOSTNAMES = {"cisco_ios": "rtr-ios-1", "cisco_nxos": "nx-core-1",
                     "arista_eos": "leaf-eos-1", "juniper_junos": "mx-junos-1"}


def recording_name(command: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", command.lower()).strip("_") + ".txt"


class SshDeviceSim:
    """One simulated device listening on 127.0.0.1. `users` maps user name to
    password; `authorized_keys` maps user name to accepted public keys."""

    def __init__(self, vendor: str, port: int = 0, users: Mapping[str, str] | None = None,
                 host_key: asyncssh.SSHKey | None = None, *, hostname: str | None = None,
                 authorized_keys: Mapping[str, list[asyncssh.SSHKey]] | None = None,
                 fault: str | None = None, host: str = "127.0.0.1",
                 recordings: Path | None = None, enable_secret: str | None = None) -> None:
        if vendor not in VENDORS:
            raise ValueError(f"vendor must be one of {', '.join(sorted(VENDORS))}, "
                             f"not {vendor!r}")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}, not {fault!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0-65535, not {port}")
        self.vendor = vendor
        self.spec = VENDORS[vendor]
        self.hostname = hostname or DEFAULT_HOSTNAMES[vendor]
        self.host, self._port = host, port
        self.users = dict(users or {})
        self.authorized_keys = {u: list(k) for u, k in (authorized_keys or {}).items()}
        self.host_key = host_key or asyncssh.generate_private_key("ssh-ed25519")
        self.fault = fault
        self.enable_secret = enable_secret
        self.overrides: dict[str, str] = {}
        self.commands: list[str] = []
        self.connections = 0
        self._dir = (recordings or RECORDINGS) / vendor
        self._log = self._load_log()
        self._server: asyncssh.SSHAcceptor | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def public_host_key(self) -> str:
        """The host key as an OpenSSH public key line, for a known_hosts file."""
        return self.host_key.export_public_key("openssh").decode().strip()

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = await asyncssh.create_server(
            lambda: _Server(self), self.host, self._port,
            server_host_keys=[self.host_key], line_editor=False,
            login_timeout=30, keepalive_interval=0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SshDeviceSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def add_log(self, line: str) -> None:
        """Append a line to the device's log buffer, as if it just happened."""
        self._log.append(line.replace("{{hostname}}", self.hostname))

    def prompt(self, user: str, enabled: bool = True) -> str:
        if self.fault == "bad_prompt":
            return "Press any key to continue "
        p = self.spec.prompt.format(hostname=self.hostname, user=user)
        return p[:-1] + ">" if not enabled and p.endswith("#") else p

    def answer(self, command: str) -> str | None:
        """What the device prints for one command line; None means hang."""
        command = command.strip()
        if not command:
            return ""
        self.commands.append(command)
        if command in self.spec.setup:
            return self.spec.setup[command]
        if self.fault == "hang":
            return None
        if command in self.overrides:
            return self.overrides[command]
        if self.fault == "garbage" and command.startswith("show"):
            return "\x07%%%% ~~ 0xDEADBEEF ~~ ??? unparsable ??? %%%%\r\n@@ ## $$ !! ::"
        if command == self.spec.log_command:
            head = self._read("log_header.txt")
            return (head + "\r\n\r\n" if head else "") + "\r\n".join(self._log)
        text = self._read(recording_name(command))
        return self.spec.invalid if text is None else text

    def _read(self, name: str) -> str | None:
        p = self._dir / name
        if not p.is_file():
            return None
        text = p.read_text().replace("{{hostname}}", self.hostname).rstrip("\n")
        return text.replace("\r\n", "\n").replace("\n", "\r\n")

    def _load_log(self) -> list[str]:
        text = self._read("log_buffer.txt")
        return text.split("\r\n") if text else []


class _Server(asyncssh.SSHServer):
    def __init__(self, sim: SshDeviceSim) -> None:
        self.sim = sim
        self.user = ""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.sim.connections += 1

    def begin_auth(self, username: str) -> bool:
        self.user = username
        return True

    def password_auth_supported(self) -> bool:
        return bool(self.sim.users)

    def validate_password(self, username: str, password: str) -> bool:
        expected = self.sim.users.get(username)
        return expected is not None and expected == password

    def public_key_auth_supported(self) -> bool:
        return bool(self.sim.authorized_keys)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        wanted = key.export_public_key("openssh").split()[:2]
        return any(k.export_public_key("openssh").split()[:2] == wanted
                   for k in self.sim.authorized_keys.get(username, []))

    def session_requested(self) -> asyncssh.SSHServerSession[str]:
        return _Session(self.sim, self.user)


class _Session(asyncssh.SSHServerSession[str]):
    """A PTY shell: echo, CRLF, prompt. Netmiko's reads key off exactly these."""

    def __init__(self, sim: SshDeviceSim, user: str) -> None:
        self.sim, self.user = sim, user
        self._chan: asyncssh.SSHServerChannel[str] | None = None
        self._line = ""
        self._last_cr = False
        self._hung = False
        self._enabled = sim.enable_secret is None
        self._out: list[str] = []
        self._want_secret = False

    def connection_made(self, chan: asyncssh.SSHServerChannel[str]) -> None:  # type: ignore[override]
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int],
                      term_modes: Mapping[int, int]) -> bool:
        return True

    def shell_requested(self) -> bool:
        return True

    def session_started(self) -> None:
        self._write(self.sim.spec.banner + "\r\n" + self._prompt())
        self._flush()

    def _prompt(self) -> str:
        return self.sim.prompt(self.user, self._enabled)

    def data_received(self, data: str, datatype: asyncssh.DataType) -> None:
        try:
            self._feed(data)
        finally:
            self._flush()

    def _feed(self, data: str) -> None:
        for ch in data:
            if ch in "\r\n":
                if ch == "\n" and self._last_cr:
                    self._last_cr = False
                    continue
                self._last_cr = ch == "\r"
                line, self._line = self._line, ""
                self._write("\r\n")
                self._command(line)
            else:
                self._last_cr = False
                self._line += ch
                if not self._want_secret:
                    self._write(ch)

    def _command(self, line: str) -> None:
        if self._hung:
            return
        if self._want_secret:
            self._want_secret = False
            self._enabled = line == self.sim.enable_secret
            self._write(("" if self._enabled else "% Access denied\r\n") + self._prompt())
            return
        if line.strip() == "enable" and self.sim.enable_secret is not None:
            self.sim.commands.append("enable")
            if self._enabled:
                self._write(self._prompt())
            else:
                self._want_secret = True
                self._write("Password: ")
            return
        if line.strip() in ("exit", "logout", "quit"):
            self._flush()
            if self._chan is not None:
                self._chan.close()
            return
        out = self.sim.answer(line)
        if out is None:
            self._hung = True
            return
        body = out + "\r\n" if out else ""
        self._write(body + self._prompt())

    def _write(self, text: str) -> None:
        self._out.append(text)

    def _flush(self) -> None:
        """One channel write per burst of input: a client that hangs up right after
        typing `exit` then costs one failed send, not one per echoed character."""
        text, self._out = "".join(self._out), []
        if text and self._chan is not None and not self._chan.is_closing():
            self._chan.write(text)

    def eof_received(self) -> bool:
        return False

    def break_received(self, msec: int) -> bool:
        return False


async def serve_forever(vendor: str, port: int, users: Mapping[str, str]) -> None:
    """Run one simulator until cancelled: what `privtel demo` starts."""
    async with SshDeviceSim(vendor, port, users):
        await asyncio.Event().wait()
