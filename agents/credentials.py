"""Device secrets, kept apart from the inventory and encrypted at rest.

The inventory (agent config) names a credential; the secret itself lives in a
separate file sealed with AES-256-GCM under a key that is *not* in that file:
it comes from an environment variable or from a key file readable only by its
owner. Losing the credentials file alone therefore reveals nothing, and the
inventory can be shared for review without leaking a password.

Nothing in this module ever puts a secret into an exception message or a
`repr`; `redacting_filter` strips known secrets from third-party log lines
(netmiko and paramiko log what they write to a channel at DEBUG).

File layout: ``MAGIC || nonce(12) || AESGCM(key, nonce, json, aad=MAGIC)``.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipelines.config import ConfigError, Section, require_private
from plumbing.files import open_private, write_private

MAGIC = b"PRIVTEL-CREDS-1\n"
KEY_ENV = "PRIVTEL_CREDS_KEY"
KEY_FILE_ENV = "PRIVTEL_CREDS_KEY_FILE"
FILE_ENV = "PRIVTEL_CREDENTIALS"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
SECRET_FIELDS = ("password", "private_key", "passphrase", "enable_secret",
                 "snmp_community", "snmp_auth_key", "snmp_priv_key")


class CredentialError(ValueError):
    """A credential that cannot be read, found or stored; never carries a secret."""


@dataclass(frozen=True, slots=True)
class Credential:
    """One named login. Secret fields are hidden from `repr` so a stray log of
    the object shows only which kinds of secret are present."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    enable_secret: str | None = field(default=None, repr=False)
    snmp_community: str | None = field(default=None, repr=False)
    snmp_auth_key: str | None = field(default=None, repr=False)
    snmp_priv_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and (not isinstance(v, str) or not v):
                raise CredentialError(f"credential field {f.name} must be a non-empty string")

    def kinds(self) -> list[str]:
        """Which secret fields are set: what `privtel creds list` may show."""
        return [n for n in SECRET_FIELDS if getattr(self, n) is not None]

    def secrets(self) -> list[str]:
        return [v for n in SECRET_FIELDS if (v := getattr(self, n)) is not None]

    def to_dict(self) -> dict[str, str]:
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Credential:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CredentialError(f"unknown credential fields: {', '.join(unknown)}")
        return cls(**d)  # type: ignore[arg-type]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CredentialError(
            f"credential name {name!r} must be 1-64 of letters, digits, '.', '_' or '-'")
    return name


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii") + b"==")
    except (ValueError, UnicodeEncodeError):
        raise CredentialError(f"{where}: key is not base64") from None
    if len(key) != 32:
        raise CredentialError(f"{where}: key must be 32 bytes (base64), got {len(key)}")
    return key


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def load_key(*, key_file: str | os.PathLike[str] | None = None,
             environ: Mapping[str, str] | None = None) -> bytes:
    """The store key: an explicit key file, else $PRIVTEL_CREDS_KEY, else the
    file named by $PRIVTEL_CREDS_KEY_FILE. A key file others can read is refused."""
    env = os.environ if environ is None else environ
    if key_file is None and env.get(KEY_ENV):
        return _decode_key(env[KEY_ENV], KEY_ENV)
    if key_file is None:
        key_file = env.get(KEY_FILE_ENV) or None
    if key_file is None:
        raise CredentialError(
            f"no credentials key: set {KEY_ENV} or {KEY_FILE_ENV}, or pass a key file")
    p = Path(key_file)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CredentialError(f"{p}: key file does not exist") from None
    require_private(str(p), st.st_mode)
    return _decode_key(p.read_text(), str(p))


def generate_key_file(path: str | os.PathLike[str]) -> Path:
    """A fresh random key written 0600; never overwrites an existing key."""
    p = Path(path)
    try:
        fd = open_private(p, exclusive=True)
    except FileExistsError:
        raise CredentialError(f"{p}: already exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "w") as f:
        f.write(encode_key(AESGCM.generate_key(bit_length=256)) + "\n")
    return p


class CredentialStore:
    """The credentials file. Reads are cheap and uncached: a `privtel creds set`
    on a running agent is seen at the next poll."""

    def __init__(self, path: str | os.PathLike[str], key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 32:
            raise CredentialError("credentials key must be 32 bytes")
        self.path = Path(path)
        self._aead = AESGCM(key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CredentialStore | None:
        """The store named by $PRIVTEL_CREDENTIALS, or None when it is unset."""
        env = os.environ if environ is None else environ
        path = env.get(FILE_ENV)
        if not path:
            return None
        return cls(path, load_key(environ=env))

    def load(self) -> dict[str, Credential]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        try:
            require_private(str(self.path), st.st_mode)
        except ConfigError as e:
            raise CredentialError(str(e)) from None
        data = self.path.read_bytes()
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 12 + 16:
            raise CredentialError(f"{self.path}: not a privtel credentials file")
        nonce = data[len(MAGIC):len(MAGIC) + 12]
        try:
            plain = self._aead.decrypt(nonce, data[len(MAGIC) + 12:], MAGIC)
        except InvalidTag:
            raise CredentialError(
                f"{self.path}: cannot decrypt: wrong key or the file was altered") from None
        try:
            raw = orjson.loads(plain)
            return {check_name(n): Credential.from_dict(c) for n, c in raw.items()}
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            raise CredentialError(f"{self.path}: decrypted content is malformed") from None

    def names(self) -> list[str]:
        return sorted(self.load())

    def get(self, name: str) -> Credential:
        creds = self.load()
        try:
            return creds[name]
        except KeyError:
            raise CredentialError(
                f"{self.path}: no credential named {name!r}") from None

    def set(self, name: str, cred: Credential) -> None:
        creds = self.load()
        creds[check_name(name)] = cred
        self._write(creds)

    def remove(self, name: str) -> None:
        creds = self.load()
        if name not in creds:
            raise CredentialError(f"{self.path}: no credential named {name!r}")
        del creds[name]
        self._write(creds)

    def _write(self, creds: Mapping[str, Credential]) -> None:
        plain = orjson.dumps({n: c.to_dict() for n, c in sorted(creds.items())})
        nonce = os.urandom(12)
        blob = MAGIC + nonce + self._aead.encrypt(nonce, plain, MAGIC)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, blob)


class ConfigSecrets:
    """How config parsing turns `credential = NAME` into secrets, and the rule that once
    the agent config names a credential store (`[credentials] file`), no secret may
    sit inline in it. Errors name the file and key, never a value. The store is
    opened only when a reference needs it, and read once per parse."""

    def __init__(self, file: Path | None = None, key_file: Path | None = None, *,
                 store: CredentialStore | None = None) -> None:
        self.file, self.key_file = file, key_file
        self._store = store
        self._creds: dict[str, Credential] | None = None

    @property
    def store_configured(self) -> bool:
        return self.file is not None or self._store is not None

    def refuse_inline(self, s: Section, key: str) -> None:
        if key in s and self.store_configured:
            raise s.error(key, "is a secret written inline, but this config names a "
                          "credential store ([credentials] file); move it with `privtel creds "
                          "migrate --config FILE` and refer to it by name (credential = ...)")

    def get(self, s: Section, key: str, name: str) -> Credential:
        try:
            if self._creds is None:
                store = self._store
                if store is None and self.file is not None:
                    store = CredentialStore(self.file, load_key(key_file=self.key_file))
                if store is None:
                    store = CredentialStore.from_env()
                if store is None:
                    raise CredentialError("no credential store is configured "
                                          "([credentials] file)")
                self._creds = store.load()
            try:
                return self._creds[check_name(name)]
            except KeyError:
                raise CredentialError(f"no credential named {name!r} in the credential "
                                      "store") from None
        except CredentialError as e:
            raise s.error(key, str(e)) from None

    def secret(self, s: Section, key: str, name: str, field_name: str) -> str:
        """One secret field of the named credential, which must have it."""
        value = getattr(self.get(s, key, name), field_name)
        if value is None:
            raise s.error(key, f"credential {name!r} has no {field_name}; set it with "
                          f"`privtel creds set {name} --{field_name.replace('_', '-')}-stdin`")
        return str(value)


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites log records that mention a registered secret. Attached to the
    loggers of libraries we hand secrets to; the secret set only grows."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()

    def add(self, secrets: Iterable[str]) -> None:
        new = set(self._secrets)
        for s in secrets:
            if s:
                new.add(s)
                new.update(line for line in s.splitlines() if len(line) >= 8)
        if len(new) != len(self._secrets):
            # replaced, never mutated: worker threads may be filtering meanwhile
            self._secrets = tuple(sorted(new, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if not secrets:
            return True
        try:
            msg = record.getMessage()
        except Exception:  # a malformed call is the handler's to report, not ours
            return True
        clean = redact(msg, secrets)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


_FILTER = RedactingFilter()
_FILTERED_LOGGERS = ("netmiko", "paramiko", "paramiko.transport", "paramiko.transport.sftp",
                     "asyncssh", "privtel", "agents")


def redacting_filter(secrets: Iterable[str] = ()) -> RedactingFilter:
    """The process-wide filter, attached to every existing logger under the
    library prefixes: a logger filter does not see records of its children."""
    _FILTER.add(secrets)
    names = set(_FILTERED_LOGGERS) | {
        n for n in logging.Logger.manager.loggerDict
        if n.split(".")[0] in _FILTERED_LOGGERS}
    for name in names:
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
    return _FILTER
