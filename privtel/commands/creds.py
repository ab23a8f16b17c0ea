"""`privtel creds keygen/set/list/rm`: the encrypted credentials file devices refer to by name.

Secrets are never taken from the command line (other users can read a process's
arguments): each comes from an environment variable (`--password-env VAR`),
from standard input (`--password-stdin`, one secret per invocation), or, for an
SSH key, from a file (`--private-key-file`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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

SECRETS = ("password", "passphrase", "enable_secret", "snmp_auth_key", "snmp_priv_key")


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
