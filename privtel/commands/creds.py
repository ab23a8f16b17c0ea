"""`privtel creds keygen/set/list/rm/migrate`: the encrypted credentials file devices refer
to by name.

Secrets are never taken from the command line (other users can read a process's
arguments): each comes from an environment variable (`--password-env VAR`),
from standard input (`--password-stdin`, one secret per invocation), or, for an
SSH key, from a file (`--private-key-file`).

`migrate` moves the SNMP secrets an agent config still holds inline (device
communities and v3 keys, trap communities and trap users' keys) into the store
and rewrites the config to name them, keeping comments and a 0600 backup of
the old file (which still holds the secrets: delete it once the agent runs).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from agents.credentials import (
    FILE_ENV,
    KEY_ENV,
    KEY_FILE_ENV,
    Credential,
    CredentialError,
    CredentialStore,
    generate_key_file,
    load_key,
)
from pipelines.config import ConfigError, require_private
from plumbing.files import write_private

SECRETS = ("password", "passphrase", "enable_secret", "snmp_community", "snmp_auth_key",
           "snmp_priv_key")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("creds", help="manage the encrypted device credentials file")
    sub = p.add_subparsers(dest="creds_command", required=True, metavar="ACTION")

    def store_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--file", type=Path, default=None,
                       help=f"credentials file (default ${FILE_ENV})")
        q.add_argument("--key-file", type=Path, default=None,
                       help=f"key file, mode 0600 (default ${KEY_ENV} or ${KEY_FILE_ENV})")

    kg = sub.add_parser("keygen", help="write a new random key file (mode 0600)")
    kg.add_argument("key_file", type=Path)
    kg.set_defaults(func=keygen)

    s = sub.add_parser("set", help="add or replace a named credential")
    s.add_argument("name")
    store_args(s)
    s.add_argument("--username", default=None)
    s.add_argument("--private-key-file", type=Path, default=None,
                   help="SSH private key (OpenSSH or PEM) to store")
    for name in SECRETS:
        flag = name.replace("_", "-")
        s.add_argument(f"--{flag}-env", metavar="VAR", default=None,
                       help=f"read the {name.replace('_', ' ')} from environment variable VAR")
        s.add_argument(f"--{flag}-stdin", action="store_true",
                       help=f"read the {name.replace('_', ' ')} from the first line of stdin")
    s.set_defaults(func=set_cred)

    ls = sub.add_parser("list", help="names, user names and which kinds of secret are set")
    store_args(ls)
    ls.set_defaults(func=list_creds)

    rm = sub.add_parser("rm", help="remove a named credential")
    rm.add_argument("name")
    store_args(rm)
    rm.set_defaults(func=rm_cred)

    mg = sub.add_parser("migrate", help="move SNMP secrets written inline in an agent config "
                        "into the store and rewrite the config to name them (keeps a 0600 "
                        "backup)")
    mg.add_argument("--config", type=Path, required=True, metavar="AGENT_TOML")
    store_args(mg)
    mg.set_defaults(func=migrate)


def _store(args: argparse.Namespace) -> CredentialStore:
    path = args.file or os.environ.get(FILE_ENV)
    if not path:
        raise CredentialError(f"no credentials file: pass --file or set {FILE_ENV}")
    return CredentialStore(path, load_key(key_file=args.key_file))


def _fail(e: Exception) -> int:
    print(f"privtel: error: {e}", file=sys.stderr)
    return 2


def keygen(args: argparse.Namespace) -> int:
    try:
        path = generate_key_file(args.key_file)
    except CredentialError as e:
        return _fail(e)
    print(f"wrote {path} (mode 0600); point {KEY_FILE_ENV} at it or pass --key-file")
    return 0


def set_cred(args: argparse.Namespace) -> int:
    try:
        values: dict[str, str] = {}
        stdin_used = [n for n in SECRETS if getattr(args, f"{n}_stdin")]
        if len(stdin_used) > 1:
            raise CredentialError("only one secret can be read from stdin per command")
        for name in SECRETS:
            var = getattr(args, f"{name}_env")
            if var is not None and name in stdin_used:
                raise CredentialError(f"give the {name} by --*-env or --*-stdin, not both")
            if var is not None:
                if not os.environ.get(var):
                    raise CredentialError(f"environment variable {var} is unset or empty")
                values[name] = os.environ[var]
            elif name in stdin_used:
                line = sys.stdin.readline().rstrip("\r\n")
                if not line:
                    raise CredentialError(f"no {name} on stdin")
                values[name] = line
        if args.private_key_file is not None:
            try:
                values["private_key"] = args.private_key_file.read_text()
            except OSError as e:
                raise CredentialError(f"{args.private_key_file}: cannot read "
                                      f"({e.strerror})") from None
        if args.username is not None:
            values["username"] = args.username
        if not any(k in values for k in (*SECRETS, "private_key")):
            raise CredentialError("a credential needs at least one secret "
                                  "(e.g. --password-stdin or --private-key-file)")
        store = _store(args)
        store.set(args.name, Credential(**values))
    except CredentialError as e:
        return _fail(e)
    print(f"stored credential {args.name!r} in {store.path}")
    return 0


def list_creds(args: argparse.Namespace) -> int:
    try:
        creds = _store(args).load()
    except CredentialError as e:
        return _fail(e)
    for name in sorted(creds):
        c = creds[name]
        print(f"{name}\tuser={c.username or '-'}\t{','.join(c.kinds())}")
    return 0


def rm_cred(args: argparse.Namespace) -> int:
    try:
        _store(args).remove(args.name)
    except CredentialError as e:
        return _fail(e)
    print(f"removed credential {args.name!r}")
    return 0


_SNMP_SECRETS = {"community": "snmp_community", "auth_key": "snmp_auth_key",
                 "priv_key": "snmp_priv_key"}


class _Moves:
    """Credentials to add, named uniquely against the store and each other."""

    def __init__(self, existing: dict[str, Credential]) -> None:
        self.existing = existing
        self.added: dict[str, Credential] = {}
        self.lines: list[str] = []

    def add(self, stem: str, cred: Credential, where: str, keys: list[str]) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.\-]+", "-", stem).strip("-.")[:56] or "snmp"
        name, n = stem, 1
        while True:
            have = self.added.get(name, self.existing.get(name))
            if have is None or have == cred:
                break
            n += 1
            name = f"{stem}-{n}"
        self.added[name] = cred
        self.lines.append(f"{where}: {', '.join(keys)} -> credential {name!r}")
        return name


def _take(table: Any, keys: dict[str, str]) -> dict[str, str]:
    """Remove the inline secrets in `table`, returned as credential fields."""
    out = {}
    for key, cred_field in keys.items():
        if key in table:
            value = table[key]
            if not isinstance(value, str) or not value:
                raise CredentialError(f"{key} must be a non-empty string")
            out[cred_field] = str(value)
            del table[key]
    return out


def _plan(doc: Any, moves: _Moves) -> None:
    for i, d in enumerate(doc.get("devices", [])):
        snmp = d.get("snmp")
        if d.get("protocol", "snmp") != "snmp" or snmp is None:
            continue
        where = f"devices[{i}].snmp"
        found = [k for k in _SNMP_SECRETS if k in snmp]
        if not found:
            continue
        if "credential" in snmp:
            raise CredentialError(f"{where} has both credential and inline secrets; "
                                  "remove one by hand")
        user = snmp.get("user")
        fields = _take(snmp, _SNMP_SECRETS)
        cred = Credential(username=str(user) if user else None, **fields)
        snmp["credential"] = moves.add(f"{d.get('name', i)}-snmp", cred, where, found)
    traps = doc.get("traps")
    if traps is None:
        return
    if "communities" in traps:
        names = [moves.add(f"trap-community-{j + 1}", Credential(snmp_community=str(c)),
                           f"traps.communities[{j}]", ["community"])
                 for j, c in enumerate(traps["communities"])]
        del traps["communities"]
        traps["community_credentials"] = names + list(traps.get("community_credentials", []))
    for j, u in enumerate(traps.get("users", [])):
        found = [k for k in ("auth_key", "priv_key") if k in u]
        if not found:
            continue
        where = f"traps.users[{j}]"
        if "credential" in u:
            raise CredentialError(f"{where} has both credential and inline keys; "
                                  "remove one by hand")
        fields = _take(u, {k: _SNMP_SECRETS[k] for k in ("auth_key", "priv_key")})
        user = u.get("user")
        cred = Credential(username=str(user) if user else None, **fields)
        u["credential"] = moves.add(f"trap-{user or j + 1}", cred, where, found)


def _named(config: Path, given: Path | None, in_config: object, env: str | None
           ) -> Path | None:
    """A path from the command line (as given), else from the config (relative to it),
    else from the environment."""
    if given is not None:
        return given
    if in_config:
        return config.parent / str(in_config)
    return Path(env) if env else None


def _backup(path: Path, data: bytes) -> Path:
    for n in range(1, 1000):
        backup = path.with_name(f"{path.name}.bak" + ("" if n == 1 else f".{n}"))
        try:
            write_private(backup, data, exclusive=True)
            return backup
        except FileExistsError:
            continue
    raise CredentialError(f"{path}: too many backups beside it; remove old ones")


def migrate(args: argparse.Namespace) -> int:
    from agents import config as agent_config

    path: Path = args.config
    try:
        require_private(str(path), path.stat().st_mode)
        original = path.read_bytes()
        doc = tomlkit.parse(original.decode("utf-8"))
        creds = doc.get("credentials")
        store_path = _named(path, args.file, (creds or {}).get("file"),
                            os.environ.get(FILE_ENV))
        key_path = _named(path, args.key_file, (creds or {}).get("key_file"), None)
        if store_path is None:
            raise CredentialError("no credential store: name [credentials] file in the config "
                                  "or pass --file (and --key-file)")
        store = CredentialStore(store_path, load_key(key_file=key_path))
        moves = _Moves(store.load())
        _plan(doc, moves)
        if not moves.added:
            print(f"{path}: no inline SNMP secrets; nothing to migrate")
            return 0
        if creds is None:
            creds = tomlkit.table()
            doc["credentials"] = creds
        creds.setdefault("file", str(store_path.resolve()))
        if key_path is not None:
            creds.setdefault("key_file", str(key_path.resolve()))
        for name, cred in moves.added.items():
            store.set(name, cred)
        backup = _backup(path, original)
        write_private(path, tomlkit.dumps(doc).encode("utf-8"))
        try:
            agent_config.load(path)
        except (ConfigError, CredentialError) as e:
            write_private(path, original)
            raise CredentialError(f"the rewritten config does not load, the old one is back: "
                                  f"{e}") from None
    except (CredentialError, ConfigError, TOMLKitError, UnicodeDecodeError) as e:
        return _fail(e)
    except OSError as e:
        return _fail(CredentialError(f"{e.filename}: {e.strerror}"))
    for line in moves.lines:
        print(line)
    print(f"stored {len(moves.added)} credential(s) in {store.path}; rewrote {path}")
    print(f"backup of the old config, secrets still in clear: {backup} (mode 0600); "
          "delete it once the agent runs")
    return 0
