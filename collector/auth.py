"""Who may do what: API tokens, roles, tenant scope, TOTP, and the one matrix.

A token is `ptk_<id>_<secret>`: the id (public, 16 hex) finds the row, the
secret (32 random bytes) is checked against its SHA-256. Tokens are random,
not passwords, so a fast hash is right: nobody can guess their way to a
preimage, and the database never holds anything that authenticates.

The TOTP secret, unlike the token, must be kept readable to check codes. With
a server key file (`api serve --totp-key-file`) it is sealed with AES-256-GCM
(the user name as associated data, so a sealed secret cannot be moved to
another user's row); a copy of the database alone then yields no second
factor. Secrets enrolled before the key was configured are sealed when the
API starts with it (`Users.seal_totp_secrets`).

Every request goes through `authorize(principal, action, tenants, totp)`,
which reads `MATRIX`; nothing else in the API decides access.
"""

from __future__ import annotations

import base64
import enum
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from pipelines.digest import same, sha256_hex

if TYPE_CHECKING:
    from collector.store import Db

ROLES = ("noc", "security", "dpo", "admin")
ALL_TENANTS = "*"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.@\-]{0,62}$")
_TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")
_TOKEN_RE = re.compile(r"^ptk_([0-9a-f]{16})_([A-Za-z0-9_\-]{43})$")
TOTP_STEP = 30
_TOTP_WINDOW = 1
_TOTP_LOOKBACK = 20
_TOTP_SECRET_BYTES = 20  # RFC 4226's recommended 160 bits, base32 in the store and the URI
_SEALED = "enc1:"


def _totp(secret_b32: str) -> TOTP:
    """RFC 6238 with what every authenticator app assumes: SHA-1, 6 digits, 30 s."""
    return TOTP(base64.b32decode(secret_b32), 6, SHA1(), TOTP_STEP, enforce_key_length=True)


class Action(enum.StrEnum):
    STATS = "stats"
    SEARCH = "search"
    SEARCH_INDICATOR = "search.indicator"
    SEARCH_EXPORT = "search.export"
    DSR_EXPORT = "dsr.export"
    DSR_ERASE = "dsr.erase"
    DSR_RESTRICT = "dsr.restrict"
    DSR_UNRESTRICT = "dsr.unrestrict"
    DSR_CORRECT = "dsr.correct"
    DSR_LIST = "dsr.list"
    DSR_OBJECT = "dsr.object"
    DSR_EXPORT_REIDENTIFY = "dsr.export.reidentify"
    DSR_UNOBJECT = "dsr.unobject"
    AUDIT_VERIFY = "audit.verify"
    REIDENTIFY = "reidentify"  # `privtel reidentify --store`: pseudonyms back to raw values
    HOLD_ADD = "hold.add"
    HOLD_LIST = "hold.list"
    HOLD_RELEASE = "hold.release"
    TENANT_OFFBOARD = "tenant.offboard"


A = Action
# role -> actions it may take. Reading restricted records is implied by the DSR
# actions only: search and search export never return them, whoever asks.
MATRIX: dict[str, frozenset[Action]] = {
    "noc": frozenset({A.STATS}),
    "security": frozenset({A.STATS, A.SEARCH, A.SEARCH_INDICATOR, A.SEARCH_EXPORT,
                           A.REIDENTIFY}),
    "dpo": frozenset({A.STATS, A.DSR_EXPORT, A.DSR_ERASE, A.DSR_RESTRICT, A.DSR_UNRESTRICT,
                      A.DSR_CORRECT, A.DSR_LIST, A.AUDIT_VERIFY, A.REIDENTIFY, A.HOLD_ADD,
                      A.HOLD_LIST, A.HOLD_RELEASE, A.DSR_OBJECT, A.DSR_UNOBJECT,
                      A.DSR_EXPORT_REIDENTIFY}),
    "admin": frozenset(Action),
}
# Actions that reveal a person's data or delete it: the token alone is not enough.
# Lifting a restriction reveals: the records reach the security team's search again.
# Placing or releasing a hold decides whether records may be deleted; offboarding
# deletes a whole tenant; lifting an objection starts collecting a person's data again.
NEEDS_TOTP: frozenset[Action] = frozenset({A.DSR_EXPORT, A.DSR_ERASE, A.DSR_UNRESTRICT,
                                           A.HOLD_ADD, A.HOLD_RELEASE, A.TENANT_OFFBOARD,
                                           A.DSR_UNOBJECT, A.DSR_EXPORT_REIDENTIFY,
                                           A.REIDENTIFY})

# Actions the CLI decides against this same matrix on the operator's machine
# (they touch files the API never holds: key files, the broker's ACL); no route.
LOCAL_ACTIONS: frozenset[Action] = frozenset({A.TENANT_OFFBOARD, A.REIDENTIFY})


class AuthError(Exception):
    """Refused; `status` is the HTTP status the API answers with, `reason` the
    sentence it shows. Never names another tenant or echoes a secret."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


class UserError(ValueError):
    """Bad input to user management (CLI); the message says what to change."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    tenants: tuple[str, ...]  # ("*",) for every tenant
    token_id: str
    has_totp: bool

    def may_see(self, tenant: str) -> bool:
        return ALL_TENANTS in self.tenants or tenant in self.tenants


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    role: str
    tenants: tuple[str, ...]
    token_id: str
    mfa: bool
    created_at: float
    expires_at: float | None
    revoked_at: float | None


def _hash(secret: str) -> str:
    return sha256_hex(secret.encode("ascii"))


def parse_tenants(text: str) -> tuple[str, ...]:
    parts = tuple(sorted({p.strip() for p in text.split(",") if p.strip()}))
    if not parts:
        raise UserError("tenant scope must name at least one tenant, or '*' for all")
    if ALL_TENANTS in parts:
        if len(parts) > 1:
            raise UserError("tenant scope '*' cannot be combined with named tenants")
        return parts
    for p in parts:
        if not _TENANT_RE.match(p):
            raise UserError("tenant names are lowercase letters, digits, '-' or '_' "
                            "(at most 63 characters)")
    return parts


class TotpSealer:
    """AES-256-GCM over a user's TOTP secret, bound to the user's name."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise UserError("the TOTP key must be 32 bytes (64 hex characters)")
        self._aead = AESGCM(key)

    def seal(self, name: str, secret: str) -> str:
        nonce = os.urandom(12)
        box = self._aead.encrypt(nonce, secret.encode("ascii"), name.encode())
        return _SEALED + base64.b64encode(nonce + box).decode("ascii")

    def open(self, name: str, stored: str) -> str:
        raw = base64.b64decode(stored.removeprefix(_SEALED))
        try:
            return self._aead.decrypt(raw[:12], raw[12:], name.encode()).decode("ascii")
        except InvalidTag:
            raise AuthError(500, "mfa_unavailable", "the stored second factor does not open "
                            "with this server's TOTP key") from None

    def __repr__(self) -> str:
        return "TotpSealer(<key>)"


def parse_totp_key(data: bytes) -> bytes:
    """A TOTP key file holds 64 hex characters."""
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise UserError("the TOTP key file must hold 64 hex characters") from None
    if len(key) != 32:
        raise UserError("the TOTP key file must hold 64 hex characters")
    return key


class Users:
    """User and token management over the `api_users` table. With `totp_key`,
    TOTP secrets are stored sealed (`TotpSealer`)."""

    def __init__(self, db: Db, totp_key: bytes | None = None) -> None:
        self.db = db
        self._sealer = None if totp_key is None else TotpSealer(totp_key)

    def _secret(self, name: str, stored: str) -> str:
        if not stored.startswith(_SEALED):
            return stored
        if self._sealer is None:
            raise AuthError(500, "mfa_unavailable", "second factors are sealed and this "
                            "server has no TOTP key; start it with --totp-key-file")
        return self._sealer.open(name, stored)

    def seal_totp_secrets(self) -> int:
        """Seal every secret still in clear; how many. Run at start with a key."""
        if self._sealer is None:
            return 0
        with self.db.tx(write=True) as cur:
            rows = cur.execute("SELECT name, totp_secret FROM api_users WHERE totp_secret IS "
                               "NOT NULL").fetchall()
            clear = [(n, v) for n, v in rows if not str(v).startswith(_SEALED)]
            for name, secret in clear:
                cur.execute("UPDATE api_users SET totp_secret = ? WHERE name = ?",
                            (self._sealer.seal(name, secret), name))
        return len(clear)

    def add(self, name: str, role: str, tenants: str, *, expires_in_s: float | None = None,
            now: float | None = None) -> str:
        """Create a user; returns the token, which is shown once and stored only hashed."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise UserError("user name must be 1-63 of a-z 0-9 _ . @ - (starting alnum)")
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}")
        scope = parse_tenants(tenants)
        if expires_in_s is not None and expires_in_s <= 0:
            raise UserError("expiry must be in the future")
        now = time.time() if now is None else now
        token_id = os.urandom(8).hex()
        secret = _b64(os.urandom(32))
        with self.db.tx(write=True) as cur:
            if cur.execute("SELECT 1 FROM api_users WHERE name = ?", (name,)).fetchone():
                raise UserError(f"user {name!r} already exists (revoked users keep their name "
                                "for the audit trail; pick another)")
            cur.execute("INSERT INTO api_users (name, role, tenants, token_id, token_hash, "
                        "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (name, role, ",".join(scope), token_id, _hash(secret), now,
                         None if expires_in_s is None else now + expires_in_s))
        return f"ptk_{token_id}_{secret}"

    def list(self) -> list[UserInfo]:
        with self.db.tx() as cur:
            rows = cur.execute("SELECT name, role, tenants, token_id, totp_secret, created_at, "
                               "expires_at, revoked_at FROM api_users ORDER BY name").fetchall()
        return [UserInfo(r[0], r[1], tuple(r[2].split(",")), r[3], r[4] is not None,
                         float(r[5]), r[6], r[7]) for r in rows]

    def revoke(self, name: str, now: float | None = None) -> None:
        with self.db.tx(write=True) as cur:
            cur.execute("UPDATE api_users SET revoked_at = ? WHERE name = ? AND revoked_at "
                        "IS NULL", (time.time() if now is None else now, name))
            if cur.rowcount == 0:
                raise UserError(f"no active user {name!r}")

    def enrol_totp(self, name: str) -> str:
        """A fresh TOTP secret for the user (replacing any old one); shown once as an
        otpauth:// URI for an authenticator app."""
        secret = base64.b32encode(os.urandom(_TOTP_SECRET_BYTES)).decode("ascii")
        stored = secret if self._sealer is None else self._sealer.seal(name, secret)
        with self.db.tx(write=True) as cur:
            cur.execute("UPDATE api_users SET totp_secret = ?, totp_last_step = 0 WHERE name = ?"
                        " AND revoked_at IS NULL", (stored, name))
            if cur.rowcount == 0:
                raise UserError(f"no active user {name!r}")
        return _totp(secret).get_provisioning_uri(name, "privtel")

    def authenticate(self, header: str | None, now: float | None = None) -> Principal:
        """The principal for an `Authorization: Bearer ...` header, or AuthError(401)."""
        if not header:
            raise AuthError(401, "unauthenticated", "missing Authorization: Bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "unauthenticated", "Authorization must be 'Bearer <token>'")
        m = _TOKEN_RE.match(token.strip())
        if not m:
            raise AuthError(401, "bad_token", "token is malformed")
        token_id, secret = m.groups()
        with self.db.tx() as cur:
            row = cur.execute("SELECT name, role, tenants, token_hash, totp_secret, expires_at, "
                              "revoked_at FROM api_users WHERE token_id = ?", (token_id,)
                              ).fetchone()
        # Compare even when the id is unknown, so timing does not tell ids apart.
        stored = row[3] if row else "0" * 64
        ok = same(stored, _hash(secret))
        if row is None or not ok:
            raise AuthError(401, "bad_token", "token is not valid")
        now = time.time() if now is None else now
        if row[6] is not None:
            raise AuthError(401, "bad_token", "token has been revoked")
        if row[5] is not None and now >= row[5]:
            raise AuthError(401, "bad_token", "token has expired")
        return Principal(row[0], row[1], tuple(row[2].split(",")), token_id, row[4] is not None)

    def check_totp(self, principal: Principal, code: str | None, now: float | None = None
                   ) -> None:
        """A code for the current step (one step of clock drift either way), each code
        usable once. A code for an older step is 'expired', so a user whose app or
        clock lags knows what to fix."""
        if not principal.has_totp:
            raise AuthError(403, "mfa_not_enrolled", "this action needs a second factor; "
                            "enrol with `privtel users mfa-enrol`")
        if not code:
            raise AuthError(401, "mfa_required", "this action needs a TOTP code in the "
                            "X-TOTP header")
        if not re.fullmatch(r"\d{6}", code):
            raise AuthError(401, "mfa_failed", "TOTP code must be 6 digits")
        now = time.time() if now is None else now
        with self.db.tx(write=True) as cur:
            row = cur.execute("SELECT totp_secret, totp_last_step FROM api_users WHERE name = ?"
                              + self.db.dialect.row_lock,  # one use per code
                              (principal.name,)).fetchone()
            if row is None or row[0] is None:
                raise AuthError(403, "mfa_not_enrolled", "this action needs a second factor")
            totp = _totp(self._secret(principal.name, row[0]))
            step = int(now // TOTP_STEP)
            matched = None
            for s in range(step + _TOTP_WINDOW, step - _TOTP_LOOKBACK - 1, -1):
                if same(totp.generate(s * TOTP_STEP), code):
                    matched = s
                    break
            if matched is None:
                raise AuthError(401, "mfa_failed", "TOTP code is wrong")
            if matched < step - _TOTP_WINDOW:
                raise AuthError(401, "mfa_expired", "TOTP code has expired; use the current "
                                "code (check the device clock)")
            if matched <= int(row[1]):
                raise AuthError(401, "mfa_replayed", "TOTP code was already used; wait for "
                                "the next one")
            cur.execute("UPDATE api_users SET totp_last_step = ? WHERE name = ?",
                        (matched, principal.name))


def authorize(principal: Principal, action: Action, tenants: tuple[str, ...]) -> None:
    """The single access decision: role may take the action, and every tenant the
    request touches is in the token's scope. A tenant outside the scope is
    refused with the same words whether it exists or not."""
    if action not in MATRIX.get(principal.role, frozenset()):
        raise AuthError(403, "forbidden", f"role {principal.role} may not {action.value}")
    for t in tenants:
        if not principal.may_see(t):
            raise AuthError(403, "forbidden", "tenant is outside this token's scope")


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
