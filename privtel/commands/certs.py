"""`privtel certs`: a small private CA for the broker, the collector and each agent.

For a test or small deployment: one CA, a server certificate for Mosquitto,
client certificates whose common name is the collector's or agent's identity
(Mosquitto's ``use_identity_as_username`` turns it into the username the ACL
matches, and ``use_username_as_clientid`` into the client id, so no client can
take over another's session), and the ACL file itself, where each agent may
publish only to its own topic and the collector may only subscribe.

The two identity spaces cannot meet: an agent's common name is
``<tenant>.<agent id>`` and a name never contains a dot, while a collector's
is a plain name. A larger deployment uses its
own PKI; the file names and the ACL shape stay the same.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipelines.envelope import topic_for
from pipelines.keys import ANNOUNCE_TOPIC
from pipelines.names import is_name
from pipelines.receipt import receipt_topic
from pipelines.suppression import suppress_topic


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("certs", help="issue TLS certificates and the broker ACL")
    sub = p.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="create a CA, broker, collector and agent certificates "
                          "and a Mosquitto ACL in DIR")
    init.add_argument("--dir", required=True, type=Path)
    init.add_argument("--agent", action="append", default=[], metavar="TENANT/AGENT_ID",
                      help="an agent to certify (repeatable)")
    init.add_argument("--collector-id", default="collector",
                      help="common name of the collector's client certificate")
    init.add_argument("--host", action="append", default=None,
                      help="broker host name or address for its certificate (repeatable; "
                      "default localhost and 127.0.0.1)")
    init.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(func=_guard(init_certs))
    add = sub.add_parser("add-agent", help="certify one more agent with the CA in DIR and add "
                         "its ACL entry")
    add.add_argument("--dir", required=True, type=Path)
    add.add_argument("--agent", required=True, metavar="TENANT/AGENT_ID")
    add.add_argument("--days", type=int, default=825)
    add.add_argument("--force", action="store_true")
    add.set_defaults(func=_guard(add_agent))
    addc = sub.add_parser("add-collector", help="certify one more collector worker (its own "
                          "identity, so workers never share a session) and add its ACL entry")
    addc.add_argument("--dir", required=True, type=Path)
    addc.add_argument("--collector-id", required=True)
    addc.add_argument("--days", type=int, default=825)
    addc.add_argument("--force", action="store_true")
    addc.set_defaults(func=_guard(add_collector))


def _guard(fn: object) -> object:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)  # type: ignore[operator,no-any-return]
        except FileExistsError as e:
            print(f"privtel: error: {e}", file=sys.stderr)
            return 2
    return run


def _agent_arg(value: str) -> tuple[str, str]:
    tenant, _, agent = value.partition("/")
    if not (is_name(tenant) and is_name(agent)):
        raise ValueError(f"--agent must be TENANT/AGENT_ID in lowercase letters, digits, '-' "
                         f"or '_', not {value!r}")
    return tenant, agent


def _write(path: Path, data: bytes, force: bool, mode: int = 0o600) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass --force to replace it") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)


def _key_pem(k: ec.EllipticCurvePrivateKey) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "privtel"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(cn: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate | None,
           days: int, *, server_hosts: list[str] | None = None,
           client: bool = False) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1()) if ca_cert is not None else ca_key
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(cn))
         .issuer_name(ca_cert.subject if ca_cert else _name(cn))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False))
    if ca_cert is None:
        b = (b.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
             .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                          False), True))
    else:
        b = (b.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 ca_key.public_key()), False)
             .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False,
                                          False), True))
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [
            ExtendedKeyUsageOID.SERVER_AUTH]
        b = b.add_extension(x509.ExtendedKeyUsage(usages), False)
    if server_hosts:
        names: list[x509.GeneralName] = []
        for h in server_hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(names), False)
    return key, b.sign(ca_key, hashes.SHA256())


def _cert_pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def agent_identity(tenant: str, agent: str) -> str:
    """The agent's certificate common name, MQTT username and client id."""
    return f"{tenant}.{agent}"


def acl_entry(tenant: str, agent: str) -> str:
    return (f"user {agent_identity(tenant, agent)}\ntopic write {topic_for(tenant, agent)}\n"
            f"topic read {receipt_topic(tenant, agent)}\ntopic read {ANNOUNCE_TOPIC}\n"
            f"topic read {suppress_topic(tenant)}\n\n")


_ACL_HEAD = ("# privtel ACL: collectors subscribe to batches and write only receipts and their "
             "key announcement; each agent only publishes to its own topic and reads its own "
             "receipts.\n")


def collector_acl(collector_id: str) -> str:
    return (f"user {collector_id}\ntopic read privtel/v1/+/+/batches\n"
            f"topic write {receipt_topic('+', '+')}\ntopic write {ANNOUNCE_TOPIC}\n"
            f"topic write {suppress_topic('+')}\n\n")


def _issue_client(directory: Path, cn: str, stem: str, ca_key: ec.EllipticCurvePrivateKey,
                  ca_cert: x509.Certificate, days: int, force: bool) -> None:
    key, cert = _issue(cn, ca_key, ca_cert, days, client=True)
    _write(directory / f"{stem}.key", _key_pem(key), force)
    _write(directory / f"{stem}.crt", _cert_pem(cert), force, 0o644)


def _issue_agent(directory: Path, tenant: str, agent: str, ca_key: ec.EllipticCurvePrivateKey,
                 ca_cert: x509.Certificate, days: int, force: bool) -> None:
    _issue_client(directory, agent_identity(tenant, agent), f"agent-{tenant}.{agent}", ca_key,
                  ca_cert, days, force)


def _load_ca(d: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{d / 'ca.key'} is not an EC private key")
    return ca_key, x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())


def _append_acl(d: Path, user: str, entry: str) -> None:
    acl = d / "acl"
    text = acl.read_text() if acl.exists() else _ACL_HEAD
    if f"user {user}\n" not in text:
        _write(acl, (text + entry).encode(), True, 0o644)


def init_certs(args: argparse.Namespace) -> int:
    agents = [_agent_arg(a) for a in args.agent]
    if not is_name(args.collector_id):
        raise ValueError(f"--collector-id must be lowercase letters, digits, '-' or '_', "
                         f"not {args.collector_id!r}")
    if not 1 <= args.days <= 3650:
        raise ValueError("--days must be between 1 and 3650")
    d: Path = args.dir
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    _, ca_cert = _issue("privtel CA", ca_key, None, args.days)
    _write(d / "ca.key", _key_pem(ca_key), args.force)
    _write(d / "ca.crt", _cert_pem(ca_cert), args.force, 0o644)
    bkey, bcert = _issue("privtel broker", ca_key, ca_cert, args.days,
                         server_hosts=args.host or ["localhost", "127.0.0.1"])
    _write(d / "broker.key", _key_pem(bkey), args.force)
    _write(d / "broker.crt", _cert_pem(bcert), args.force, 0o644)
    _issue_client(d, args.collector_id, "collector", ca_key, ca_cert, args.days, args.force)
    acl = _ACL_HEAD + collector_acl(args.collector_id)
    for tenant, agent in agents:
        _issue_agent(d, tenant, agent, ca_key, ca_cert, args.days, args.force)
        acl += acl_entry(tenant, agent)
    _write(d / "acl", acl.encode(), args.force, 0o644)
    print(f"CA, broker, collector ({args.collector_id}) and {len(agents)} agent "
          f"certificate(s) and the ACL written to {d}")
    return 0


def add_agent(args: argparse.Namespace) -> int:
    tenant, agent = _agent_arg(args.agent)
    d: Path = args.dir
    _issue_agent(d, tenant, agent, *_load_ca(d), args.days, args.force)
    _append_acl(d, agent_identity(tenant, agent), acl_entry(tenant, agent))
    print(f"agent {tenant}/{agent} certified; reload Mosquitto to apply the ACL")
    return 0


def add_collector(args: argparse.Namespace) -> int:
    if not is_name(args.collector_id):
        raise ValueError("--collector-id must be lowercase letters, digits, '-' or '_'")
    d: Path = args.dir
    _issue_client(d, args.collector_id, f"collector-{args.collector_id}", *_load_ca(d),
                  args.days, args.force)
    _append_acl(d, args.collector_id, collector_acl(args.collector_id))
    print(f"collector {args.collector_id} certified; reload Mosquitto to apply the ACL")
    return 0
