"""`privtel keys init`: the key files a first deployment needs, written owner-only.

The collector's receipt key (Ed25519, `collector-receipt.key`) signs its
end-to-end receipts; its public half goes to every agent as
`collector_receipt_key`. With `--passphrase-file` the collector, receipt and
agent private keys are written as encrypted PKCS#8; the configs then name the
same file as `passphrase_file` in their `[keys]` table. The tenant key is a
raw secret, not a PEM key: it stays a 0600 file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines import keys
from pipelines.config import ConfigError, require_private
from pipelines.names import is_name
from plumbing.files import write_private


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("keys", help="generate and inspect key material")
    sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = sub.add_parser(
        "init", help="write a collector HPKE key pair, a collector receipt key pair, an agent "
        "Ed25519 key pair and a tenant "
        "pseudonymisation key (files mode 0600)")
    init.add_argument("--dir", required=True, type=Path, help="directory to write into")
    init.add_argument("--agent-id", default="agent1", help="agent id (default agent1)")
    init.add_argument("--tenant", default="default", help="tenant name (default 'default')")
    init.add_argument("--suite", default="x25519", choices=keys.SUITES,
                      help="HPKE suite of the collector key (default x25519)")
    init.add_argument("--force", action="store_true", help="overwrite existing key files")
    init.add_argument("--passphrase-file", type=Path, metavar="FILE", default=None,
                      help="encrypt the private keys (PKCS#8) with the passphrase in FILE "
                      "(one line, mode 0600; refused if group or others can read it)")
    init.set_defaults(func=init_keys)


def key_files(directory: Path, agent_id: str, tenant: str) -> dict[str, Path]:
    """Where `keys init` puts each file; other commands (demo, configs) use the same names."""
    return {
        "collector_key": directory / "collector.key",
        "collector_pub": directory / "collector.pub",
        "receipt_key": directory / "collector-receipt.key",
        "receipt_pub": directory / "collector-receipt.pub",
        "agent_key": directory / f"agent-{agent_id}.key",
        "agent_pub": directory / f"agent-{agent_id}.pub",
        "tenant_key": directory / f"tenant-{tenant}.key",
    }


def _write_private(path: Path, data: bytes, force: bool) -> None:
    try:
        write_private(path, data, exclusive=not force)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass --force to replace it") from None


def init_keys(args: argparse.Namespace) -> int:
    try:
        return _init(args)
    except (FileExistsError, ConfigError, keys.KeyFormatError) as e:
        print(f"privtel: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"privtel: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2


def read_passphrase(path: Path) -> bytes:
    """The passphrase in `path`, refused if group or others can read the file."""
    require_private(str(path), path.stat().st_mode)
    return keys.parse_passphrase(path.read_bytes())


def write_key_files(directory: Path, agent_id: str, tenant: str, *, suite: str = "x25519",
                    force: bool = False, passphrase: bytes | None = None
                    ) -> tuple[dict[str, Path], str, str]:
    """The first deployment's key files, owner-only; (paths, collector key id, agent key id).
    With `passphrase` the three private keys are encrypted PKCS#8."""
    for what, v in (("--agent-id", agent_id), ("--tenant", tenant)):
        if not is_name(v):
            raise ValueError(f"{what} must be lowercase letters, digits, '-' or '_' "
                             f"(at most 63), not {v!r}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = key_files(directory, agent_id, tenant)
    if not force:
        for path in files.values():
            if path.exists():
                raise FileExistsError(f"{path} already exists; pass --force to replace it")
    collector = keys.generate_collector_key(suite)
    agent = keys.generate_signing_key()
    receipt = keys.generate_signing_key()
    collector_pem = (collector.pem if passphrase is None
                     else keys.encrypt_private_pem(collector.pem, passphrase))
    _write_private(files["collector_key"], collector_pem, force)
    _write_private(files["collector_pub"], collector.public.pem, force)
    _write_private(files["receipt_key"], keys.signing_key_pem(receipt, passphrase), force)
    _write_private(files["receipt_pub"], keys.verify_key_pem(receipt.public_key()), force)
    _write_private(files["agent_key"], keys.signing_key_pem(agent, passphrase), force)
    _write_private(files["agent_pub"], keys.verify_key_pem(agent.public_key()), force)
    _write_private(files["tenant_key"], (keys.generate_tenant_key() + "\n").encode(), force)
    return files, collector.key_id, keys.signing_key_id(agent)


def _init(args: argparse.Namespace) -> int:
    phrase = None if args.passphrase_file is None else read_passphrase(args.passphrase_file)
    files, collector_id, agent_id = write_key_files(
        args.dir, args.agent_id, args.tenant, suite=args.suite, force=args.force,
        passphrase=phrase)
    print(f"collector key ({args.suite}) id {collector_id}: {files['collector_key']}, "
          f"{files['collector_pub']}")
    print(f"collector receipt key: {files['receipt_key']} (collector [keys] receipt_key), "
          f"{files['receipt_pub']} (agent [keys] collector_receipt_key)")
    print(f"agent {args.agent_id} signing key id {agent_id}: "
          f"{files['agent_key']}, {files['agent_pub']}")
    print(f"tenant {args.tenant} pseudonymisation key: {files['tenant_key']}")
    if phrase is not None:
        print(f"private keys encrypted (PKCS#8); set passphrase_file = "
              f"\"{args.passphrase_file}\" in [keys] of both configs")
    return 0
