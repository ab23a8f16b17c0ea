"""The SSH poller: netmiko in worker threads, one command profile per device type.

netmiko is blocking, so each device is polled in a thread of a private pool
whose size is the concurrency limit; a device that overstays its deadline is
reported as `timeout` at once and its session is aborted from the loop (the
pool slot stays taken until the thread has really let go, so the limit holds).

netmiko and paramiko errors are translated here and nowhere else, into the
reason codes of the `device.health` contract. Their messages carry the
device address, so they are never copied into a record or a log line.

Host keys are checked against a known_hosts file by default (`strict`);
`tofu` trusts and records an unknown host's key on first contact, but still
refuses a key that changed.

Where credentials, known_hosts and log positions live comes from the agent
config through `PollerContext` (`SshPoller.from_context`); the environment
variables that predate it remain the fallback.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shlex
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
from netmiko import ConnectHandler
from netmiko.exceptions import NetmikoAuthenticationException, ReadTimeout

from agents.credentials import (
    Credential,
    CredentialError,
    CredentialStore,
    load_key,
    redacting_filter,
)
from agents.pollers import Device, PollerContext, PollerSpec, health_record, register
from agents.ssh.logpos import Digester, LogPositions
from agents.ssh.profiles import (
    RECORD_KINDS,
    LogCursor,
    ParseError,
    Profile,
    builtin_profiles,
    finish,
    parse_rows,
    row_fields,
)
from pipelines.config import Section
from pipelines.record import Kind, Record, Scalar
from pipelines.vocab import Reason, RecordName
from plumbing.files import append_private

log = logging.getLogger(__name__)

KNOWN_HOSTS_ENV = "PRIVTEL_SSH_KNOWN_HOSTS"
HOST_KEY_POLICIES = ("strict", "tofu")
PARSE_ERROR_NAME = RecordName.SSH_PARSE_ERROR
_HINTS = {
    Reason.HOST_KEY_MISMATCH: "the device's host key differs from the one in {known_hosts}; "
                         "if the device was really replaced, remove its entry there",
    Reason.HOST_KEY_UNKNOWN: "no host key for it in {known_hosts}; add one (ssh-keyscan) or set "
                        "host_key_policy = \"tofu\" to trust it on first use",
}


@dataclass(frozen=True, slots=True)
class SshOptions:
    """A device's `[devices.ssh]` table."""

    device_type: str
    credential: str
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 20.0
    poll_timeout_s: float = 60.0
    known_hosts: Path | None = None
    host_key_policy: str = "strict"
    log_file: str = "/var/log/syslog"
    max_log_lines: int = 200


def parse_options(s: Section, ctx: PollerContext | None = None) -> SshOptions:
    profiles = builtin_profiles()
    device_type = s.str("device_type", choices=tuple(sorted(profiles)))
    credential = s.str("credential")
    known_hosts = s.str("known_hosts", None)
    opts = SshOptions(
        device_type=device_type,
        credential=credential,
        connect_timeout_s=s.float("connect_timeout_s", 10.0, lo=0.1, hi=300),
        command_timeout_s=s.float("command_timeout_s", 20.0, lo=0.1, hi=600),
        poll_timeout_s=s.float("poll_timeout_s", 60.0, lo=0.5, hi=3600),
        known_hosts=None if known_hosts is None else (
            Path(known_hosts) if os.path.isabs(known_hosts)
            else Path(s.file).parent / known_hosts),
        host_key_policy=s.str("host_key_policy", "strict", choices=HOST_KEY_POLICIES),
        log_file=s.str("log_file", "/var/log/syslog"),
        max_log_lines=s.int("max_log_lines", 200, lo=1, hi=10_000),
    )
    s.done()
    if not credential.strip():
        raise s.error("credential", "must name a credential in the credentials file")
    if opts.poll_timeout_s < opts.connect_timeout_s:
        raise s.error("poll_timeout_s", "must be at least connect_timeout_s")
    if "\n" in opts.log_file or "\0" in opts.log_file:
        raise s.error("log_file", "must be a single-line path")
    return opts


class SshFailure(Exception):
    """A poll that failed for a classified reason; carries no device text."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Output:
    rows: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    commands: dict[int, str] = field(default_factory=dict)
    errors: list[ParseError] = field(default_factory=list)


@dataclass(slots=True)
class _DeviceState:
    logs: dict[str, LogCursor] = field(default_factory=dict)
    saved: dict[str, list[str]] | None = None
    before: dict[str, list[str] | None] | None = None


class _Abort:
    """Lets the event loop cut a session short from outside the worker thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._conn: Any = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def attach(self, conn: Any) -> None:
        """Hooks `conn.read_channel`, which every netmiko wait loop calls, so an
        abort ends the loop instead of sleeping out the read timeout."""
        read = conn.read_channel

        def read_or_abort() -> str:
            if self._event.is_set():
                raise SshFailure(Reason.TIMEOUT)
            return str(read())

        conn.read_channel = read_or_abort
        with self._lock:
            self._conn = conn
        if self._event.is_set():
            self._close()

    def set(self) -> None:
        self._event.set()
        self._close()

    def _close(self) -> None:
        with self._lock:
            conn = self._conn
        client = getattr(conn, "remote_conn_pre", None)
        if client is not None:
            try:
                client.close()
            except Exception:
                log.debug("ssh: closing an aborted session failed")


class _TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Accepts an unknown host's key and remembers it for the caller to record.
    A *changed* key never reaches here: paramiko raises BadHostKeyException first."""

    def __init__(self) -> None:
        self.learned: tuple[str, paramiko.PKey] | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.learned = (hostname, key)


def _ssh_client(known_hosts: Path, policy: paramiko.MissingHostKeyPolicy | None,
                ) -> paramiko.SSHClient:
    """Our own client instead of netmiko's: paramiko rewrites a known_hosts file
    it loaded (plain names, default mode) whenever a key is auto-added."""
    client = paramiko.SSHClient()
    if known_hosts.is_file():
        client.get_host_keys().load(str(known_hosts))
    client.set_missing_host_key_policy(policy or paramiko.RejectPolicy())
    return client


def _load_pkey(text: str, passphrase: str | None) -> Any:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except (paramiko.SSHException, ValueError):
            continue
    raise SshFailure(Reason.AUTH_FAILED)


def classify(exc: BaseException, phase: str) -> Reason:
    """The reason code for a netmiko/paramiko failure in a given phase
    ("connect", "prompt", "enable" or "command"). A refused enable secret is
    `auth_failed`: the login worked but the credential is still wrong."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, SshFailure):
            return e.reason
        if isinstance(e, paramiko.BadHostKeyException):
            return Reason.HOST_KEY_MISMATCH
        if isinstance(e, NetmikoAuthenticationException | paramiko.AuthenticationException):
            return Reason.AUTH_FAILED
        if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
            errs = list(e.errors.values())
            if errs and all(isinstance(x, ConnectionRefusedError) for x in errs):
                return Reason.REFUSED
        if isinstance(e, ConnectionRefusedError):
            return Reason.REFUSED
        if isinstance(e, paramiko.SSHException) and "not found in known_hosts" in str(e):
            return Reason.HOST_KEY_UNKNOWN
        if isinstance(e, TimeoutError | socket.timeout):
            return Reason.TIMEOUT
    if isinstance(exc, ReadTimeout) and phase != "prompt":
        return Reason.TIMEOUT
    if phase == "prompt":
        return Reason.UNEXPECTED_PROMPT
    if phase == "enable":
        return Reason.AUTH_FAILED
    text = str(exc).lower()
    if "banner" in text or "timed out" in text or "timeout" in text:
        return Reason.TIMEOUT
    return Reason.ERROR


class SshPoller:
    """Polls devices over SSH; `max_concurrent` bounds the threads in use.

    Credentials come from `credentials`, else the file `credentials_file` opened
    with `credentials_key_file` (or the key in the environment), else the store
    named by $PRIVTEL_CREDENTIALS. With a `state_dir`, log positions survive a
    restart (see `logpos.py`); without one they are kept in memory. Retry
    backoff for a failing device is the scheduler's (agents/scheduler.py): a
    second backoff here would make the two disagree about when to try again."""

    def __init__(self, *, credentials: CredentialStore | None = None,
                 max_concurrent: int = 16, profiles: dict[str, Profile] | None = None,
                 known_hosts: Path | None = None, credentials_file: Path | None = None,
                 credentials_key_file: Path | None = None,
                 state_dir: Path | None = None) -> None:
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ValueError(f"max_concurrent must be a positive integer, not {max_concurrent!r}")
        self._credentials = credentials
        self._credentials_file = credentials_file
        self._credentials_key_file = credentials_key_file
        self._profiles = profiles or builtin_profiles()
        env_kh = os.environ.get(KNOWN_HOSTS_ENV)
        self._known_hosts = known_hosts or (Path(env_kh) if env_kh else
                                            Path.home() / ".ssh" / "known_hosts")
        self._positions = LogPositions(state_dir / "ssh-log-positions") if state_dir else None
        self._mark: Digester | None = None if state_dir else Digester()
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent,
                                            thread_name_prefix="privtel-ssh")
        self._slots = asyncio.Semaphore(max_concurrent)
        self._state: dict[str, _DeviceState] = {}
        self._kh_lock = threading.Lock()
        self._closed = False
        self._inflight: set[_Abort] = set()
        self.max_concurrent = max_concurrent

    @classmethod
    def from_context(cls, ctx: PollerContext) -> SshPoller:
        """The agent's poller: known_hosts from config, else $PRIVTEL_SSH_KNOWN_HOSTS,
        else beside the agent's state (not a login user's ~/.ssh)."""
        env_kh = os.environ.get(KNOWN_HOSTS_ENV)
        known_hosts = ctx.ssh_known_hosts or (Path(env_kh) if env_kh else
                                              ctx.ssh_known_hosts_default)
        return cls(max_concurrent=ctx.ssh_max_concurrent, known_hosts=known_hosts,
                   credentials_file=ctx.credentials_file,
                   credentials_key_file=ctx.credentials_key_file, state_dir=ctx.state_dir)

    def forget(self, device_name: str) -> None:
        """Drop a removed device's in-memory state; its saved log position stays,
        so a device taken out and put back does not re-send its buffer."""
        self._state.pop(device_name, None)

    async def close(self) -> None:
        """Stop taking polls and cut the sessions still running short."""
        self._closed = True
        for abort in list(self._inflight):
            abort.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def poll(self, device: Device) -> list[Record]:
        started = time.time()
        opts: SshOptions = device.options
        state = self._state.setdefault(device.name, _DeviceState())
        if self._closed:
            return [health_record(device, up=False, reason=Reason.ERROR, started=started)]
        try:
            cred = await self._credential(opts.credential)
            out = await self._run(device, opts, cred)
            if state.saved is None:
                state.saved = await self._load_positions(device.name)
        except SshFailure as f:
            hint = _HINTS.get(f.reason)
            if hint:
                log.warning("ssh: %s: %s; %s", device.name, f.reason,
                            hint.format(known_hosts=opts.known_hosts or self._known_hosts))
            else:
                log.info("ssh: poll of %s failed: %s", device.name, f.reason)
            return [health_record(device, up=False, reason=f.reason, started=started)]
        state.before = {k: c.tail for k, c in state.logs.items()}
        return self._records(device, opts, state, out, started)

    async def settled(self, device: Device, kept: bool) -> None:
        """Log positions move only once the lines they cover are in the spool: kept,
        the position is saved; not kept (the spool refused them), the cursors go back
        so the next poll sends the same lines again. A crash between poll and spool
        leaves the old position on disk, so the lines are sent again, never lost."""
        state = self._state.get(device.name)
        if state is None or state.before is None:
            return
        before, state.before = state.before, None
        if not kept:
            state.logs = {k: c for k, c in state.logs.items() if k in before}
            for k, c in state.logs.items():
                c.tail = before[k]
            return
        after = {k: c.tail for k, c in state.logs.items() if c.tail is not None}
        if self._positions is not None and after != before:
            try:
                await asyncio.to_thread(self._positions.save, device.name, after)
            except OSError as e:  # the lines are spooled; only a restart re-sends them
                log.warning("ssh: cannot save the log position of %s: %s", device.name,
                            type(e).__name__)

    async def _load_positions(self, device_name: str) -> dict[str, list[str]]:
        positions = self._positions
        if positions is None:
            return {}

        def load() -> dict[str, list[str]]:
            self._mark = positions.digest
            return positions.load(device_name)

        try:
            return await asyncio.to_thread(load)
        except OSError as e:
            log.warning("ssh: log positions unavailable (%s); keeping them in memory",
                        type(e).__name__)
            self._positions, self._mark = None, self._mark or Digester()
            return {}

    def _store(self) -> CredentialStore:
        if self._credentials is not None:
            return self._credentials
        if self._credentials_file is not None:
            return CredentialStore(self._credentials_file,
                                   load_key(key_file=self._credentials_key_file))
        store = CredentialStore.from_env()
        if store is None:
            raise CredentialError("no credentials file configured ([credentials] file)")
        return store

    async def _credential(self, name: str) -> Credential:
        try:
            cred = await asyncio.to_thread(lambda: self._store().get(name))
        except CredentialError as e:  # its text names files and credentials, never secrets
            log.warning("ssh: credential %r cannot be loaded: %s", name, e)
            raise SshFailure(Reason.NO_CREDENTIAL) from None
        redacting_filter(cred.secrets())
        return cred

    async def _run(self, device: Device, opts: SshOptions, cred: Credential) -> _Output:
        await self._slots.acquire()
        cancel = _Abort()
        self._inflight.add(cancel)
        loop = asyncio.get_running_loop()
        try:
            fut = loop.run_in_executor(self._executor, self._collect, device, opts, cred,
                                       cancel, time.monotonic() + opts.poll_timeout_s)
        except RuntimeError:
            self._slots.release()
            self._inflight.discard(cancel)
            raise SshFailure(Reason.ERROR) from None

        def done(_: asyncio.Future[_Output]) -> None:
            self._slots.release()
            self._inflight.discard(cancel)

        fut.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), opts.poll_timeout_s)
        except TimeoutError:
            cancel.set()
            fut.add_done_callback(_swallow)
            raise SshFailure(Reason.TIMEOUT) from None
        except asyncio.CancelledError:
            cancel.set()
            fut.add_done_callback(_swallow)
            raise

    def _collect(self, device: Device, opts: SshOptions, cred: Credential,
                 cancel: _Abort, deadline: float) -> _Output:
        try:
            return self._session(device, opts, cred, cancel, deadline)
        except SshFailure:
            raise
        except Exception as e:  # e.g. netmiko refusing its arguments: still data, not a crash
            log.warning("ssh: session setup for %s failed: %s", device.name, type(e).__name__)
            raise SshFailure(Reason.ERROR) from None

    def _session(self, device: Device, opts: SshOptions, cred: Credential,
                 cancel: _Abort, deadline: float) -> _Output:
        profile = self._profiles[opts.device_type]
        known_hosts = opts.known_hosts or self._known_hosts
        pkey = _load_pkey(cred.private_key, cred.passphrase) if cred.private_key else None
        conn = ConnectHandler(
            device_type=opts.device_type, host=device.address, port=device.port,
            username=cred.username or "", password=cred.password or "",
            secret=cred.enable_secret or "", pkey=pkey, use_keys=False, allow_agent=False,
            conn_timeout=opts.connect_timeout_s, auth_timeout=opts.connect_timeout_s,
            banner_timeout=opts.connect_timeout_s, blocking_timeout=opts.command_timeout_s,
            read_timeout_override=opts.command_timeout_s, auto_connect=False,
            fast_cli=True, session_log=None, encoding="utf-8")
        cancel.attach(conn)
        policy = _TrustOnFirstUse() if opts.host_key_policy == "tofu" else None
        conn._build_ssh_client = lambda: _ssh_client(known_hosts, policy)  # type: ignore[method-assign]
        phase = "connect"
        try:
            conn._modify_connection_params()
            conn.establish_connection()
            if cancel.is_set():
                raise SshFailure(Reason.TIMEOUT)
            if policy is not None and policy.learned is not None:
                self._remember_host_key(device, known_hosts, *policy.learned)
            phase = "prompt"
            conn._try_session_preparation()
            if cred.enable_secret and profile.enable:
                phase = "enable"
                conn.enable()
            phase = "command"
            return self._run_commands(conn, device, opts, profile, cancel, deadline)
        except SshFailure:
            raise
        except Exception as e:
            raise SshFailure(classify(e, phase)) from None
        finally:
            try:
                conn.read_timeout_override = min(1.0, opts.command_timeout_s)
                conn.disconnect()
            except Exception:
                log.debug("ssh: disconnect from %s failed", device.name)

    def _run_commands(self, conn: Any, device: Device, opts: SshOptions, profile: Profile,
                      cancel: _Abort, deadline: float) -> _Output:
        out = _Output()
        values = {"log_file": shlex.quote(opts.log_file), "max_log_lines": opts.max_log_lines}
        for i, cmd in enumerate(profile.commands):
            if cancel.is_set() or time.monotonic() > deadline:
                raise SshFailure(Reason.TIMEOUT)
            line = cmd.render(values)
            conn.read_timeout_override = max(
                0.5, min(opts.command_timeout_s, deadline - time.monotonic()))
            text = conn.send_command(line, strip_prompt=True, strip_command=True)
            out.commands[i] = line
            try:
                out.rows[i] = parse_rows(opts.device_type, cmd, line, text)
            except ParseError as e:
                out.errors.append(e)
        return out

    def _remember_host_key(self, device: Device, known_hosts: Path, name: str,
                           key: paramiko.PKey) -> None:
        """Append a hashed entry, so the file does not list the addresses we poll."""
        with self._kh_lock:
            hk = paramiko.HostKeys()
            if known_hosts.is_file():
                hk.load(str(known_hosts))
            if hk.lookup(name) is not None:
                return
            known_hosts.parent.mkdir(parents=True, exist_ok=True)
            append_private(known_hosts, f"{paramiko.HostKeys.hash_host(name)} "
                           f"{key.get_name()} {key.get_base64()}\n".encode())
        log.info("ssh: trusted the host key of %s on first use", device.name)

    def _records(self, device: Device, opts: SshOptions, state: _DeviceState, out: _Output,
                 started: float) -> list[Record]:
        profile = self._profiles[opts.device_type]
        merged: dict[str, dict[str, Scalar]] = {}
        records: list[Record] = []
        health_extra: dict[str, Scalar] = {}
        errors = list(out.errors)
        now = time.time()

        def emit(name: str, fields: dict[str, Scalar]) -> None:
            records.append(Record(kind=RECORD_KINDS[name], tenant=device.tenant,
                                  site=device.site, device=device.name, name=name,
                                  fields=fields, ts=now))

        for i, cmd in enumerate(profile.commands):
            rows = out.rows.get(i)
            if rows is None:
                continue
            line = out.commands[i]
            if cmd.is_log:
                mark = self._mark or Digester()
                self._mark = mark
                ckey = mark(f"command:{opts.device_type}:{line}")
                cursor = state.logs.get(ckey)
                if cursor is None:
                    cursor = state.logs[ckey] = LogCursor(
                        mark, (state.saved or {}).get(ckey))
                rows = [{"line": ln} for ln in cursor.new_lines([r["line"] for r in rows])]
            for e in cmd.emits:
                try:
                    if e.each:
                        for row in rows:
                            fields = finish(e.record, row_fields(e, row, line))
                            if e.record == RecordName.LOG_LINE:
                                fields["command"] = line
                            emit(e.record, fields)
                    elif e.record == RecordName.DEVICE_HEALTH:
                        health_extra.update(row_fields(e, rows[0], line))
                    else:
                        target = merged.setdefault(e.record, {})
                        for k, v in row_fields(e, rows[0], line).items():
                            if v is not None or k not in target:
                                target[k] = v
                except ParseError as bad:
                    errors.append(bad)
        for name, fields in merged.items():
            if name == RecordName.SSH_INVENTORY:
                fields = {"device_type": opts.device_type, **fields}
            emit(name, finish(name, fields))
        for pe in errors:
            records.append(Record(kind=Kind.EVENT, tenant=device.tenant, site=device.site,
                                  device=device.name, name=PARSE_ERROR_NAME, ts=now,
                                  fields={"command": pe.command, "reason": str(Reason.PARSE_ERROR),
                                          "detail": pe.why}))
        reason = Reason.PARSE_ERROR if errors else None
        if errors:
            log.warning("ssh: %d command(s) of %s gave unparseable output", len(errors),
                        device.name)
        health_extra = {k: v for k, v in health_extra.items() if v is not None}
        records.insert(0, health_record(device, up=True, reason=reason, started=started,
                                        **health_extra))
        return records


def _swallow(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


SPEC = PollerSpec(default_port=22, parse_options=parse_options, make=SshPoller.from_context)
register("ssh", SPEC)

__all__ = ["SPEC", "SshOptions", "SshPoller", "classify", "parse_options"]
