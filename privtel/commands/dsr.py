"""`privtel dsr export|erase|restrict|unrestrict|correct|object|unobject`:
data-subject requests via the API.

`object` records an objection and `unobject` lifts one; either way the API
answers with the tenant's suppression list now in force, which this command
signs with the DPO's suppression key and publishes, retained, on the tenant's
suppress topic, where the tenant's agents pick it up and drop the subject's
records before they are spooled.

The subject's identifiers come from `--subject-file` (`class:value` a line,
any identifier class: `user:adaeze`, `email:a@b.ng`, `ip:10.1.2.3`, ...) or
`--addresses-file` (addresses only), or stdin, never from the command line,
so they stay out of shell history and `ps`. Export, erase
and unrestrict (which shows the records to the security team again) need the
current TOTP code (`--totp`, or prompted).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import orjson

from collector import auth
from collector.api.client import ApiClientError
from pipelines import keys
from pipelines.config import ConfigError
from pipelines.suppression import SuppressionList, sign_list, suppress_topic
from plumbing.files import open_private, read_private
from plumbing.transport import SenderOptions, TlsFiles, TransportError, open_sender
from privtel.commands.keys import read_passphrase
from privtel.commands.query import client_args, make_client, read_lines, read_subjects

# which requests ask for a TOTP code: read off the server's matrix, not restated
NEEDS_TOTP = tuple(sorted(a.value.removeprefix("dsr.") for a in auth.NEEDS_TOTP
                          if a.value.startswith("dsr.")))


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("dsr", help="data-subject requests (dpo)")
    sub = p.add_subparsers(dest="dsr_command", required=True, metavar="ACTION")
    helps = {"export": "write every record of the subject to a JSON file (access, portability)",
             "erase": "delete the subject's records and their derived copies, then verify",
             "restrict": "keep the subject's records but hide them from every search",
             "unrestrict": "lift a restriction (Art. 18(3)): the records are searchable again",
             "correct": "attach a correction note to each of the subject's records",
             "object": "record an objection: the tenant's agents stop collecting the "
                       "subject's records (signed suppression list over MQTT)",
             "unobject": "lift an objection: the agents collect the subject's records again"}
    for kind, text in helps.items():
        s = sub.add_parser(kind, help=text)
        client_args(s)
        s.add_argument("--tenant", action="append", required=True, metavar="TENANT",
                       help="tenant to search (repeat for several)")
        s.add_argument("--addresses-file", metavar="FILE",
                       help="the subject's addresses, one per line ('-' for stdin)")
        s.add_argument("--subject-file", metavar="FILE",
                       help="the subject's identifiers of any class, 'class:value' a line: "
                       "ip, net, user, email, mac, host, phone, person ('-' for stdin)")
        s.add_argument("--since")
        s.add_argument("--until")
        s.add_argument("--reason", default="", help="ticket reference, kept with the request")
        if kind in NEEDS_TOTP:
            s.add_argument("--totp", help="current TOTP code (prompted if omitted)")
        if kind == "export":
            s.add_argument("--out", required=True, help="output JSON file (mode 0600)")
            s.add_argument("--progress", action="store_true",
                           help="draw the progress bar even when stderr is not a terminal")
            s.add_argument("--reidentify", action="store_true",
                           help="put the subject's own addresses back in clear, for handing "
                           "to the subject (needs TOTP; schema in docs/dpo.md)")
        if kind == "erase":
            s.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        if kind == "correct":
            s.add_argument("--note", required=True, help="the correction")
            s.add_argument("--field", help="replace this field's value in each record ...")
            s.add_argument("--value", help="... with this (pseudonymised as the agent does; "
                           "the old value is kept only as a SHA-256 digest)")
        if kind in ("object", "unobject"):
            suppression_args(s)
        s.set_defaults(func=cmd_dsr, kind=kind)


def suppression_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--signing-key", type=Path, required=True, metavar="FILE",
                   help="the suppression list signing key (Ed25519 PEM, mode 0600); agents "
                   "hold its public half as [keys] suppression_public_key")
    s.add_argument("--signing-key-passphrase-file", type=Path, metavar="FILE")
    s.add_argument("--broker", default="mqtt://127.0.0.1:1883", metavar="URL")
    s.add_argument("--mqtt-protocol", default="5", choices=("5", "3.1.1"))
    s.add_argument("--mqtt-client-id", default="privtel-dpo-suppress")
    s.add_argument("--mqtt-ca-file", type=Path)
    s.add_argument("--mqtt-cert-file", type=Path, help="a certificate whose ACL may write "
                   "privtel/v1/+/suppress (the collector's, from `privtel certs`)")
    s.add_argument("--mqtt-key-file", type=Path)


async def _publish(args: argparse.Namespace, lists: dict[str, list[str]]) -> None:
    key = keys.load_signing_key(read_private(args.signing_key), None
                                if args.signing_key_passphrase_file is None
                                else read_passphrase(args.signing_key_passphrase_file))
    transport = open_sender(args.broker, SenderOptions(
        client_id=args.mqtt_client_id, protocol=args.mqtt_protocol, timeout_s=10,
        tls=TlsFiles(args.mqtt_ca_file, args.mqtt_cert_file, args.mqtt_key_file)))
    async with asyncio.timeout(30), transport.session() as sender:
        for tenant, ranges in lists.items():
            s = SuppressionList.of(tenant, time.time(), ranges)
            await sender.send(suppress_topic(tenant), sign_list(s, key), retain=True)


class Progress:
    """A one-line bar on stderr: `export [#####.....]  512/1024  50%`."""

    def __init__(self, total: int, stream: TextIO, enabled: bool, width: int = 30) -> None:
        self.total, self.stream, self.enabled, self.width = total, stream, enabled, width
        self.done = 0
        self._last = -1

    def step(self, n: int = 1) -> None:
        self.done += n
        pct = 100 if self.total == 0 else min(100, self.done * 100 // self.total)
        if self.enabled and (pct != self._last or self.done == self.total):
            self._last = pct
            fill = pct * self.width // 100
            self.stream.write(f"\rexport [{'#' * fill}{'.' * (self.width - fill)}] "
                              f"{self.done:>7}/{self.total:<7} {pct:3d}%")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            if self.done == 0:
                self.step(0)
            self.stream.write("\n")
            self.stream.flush()


def _body(args: argparse.Namespace) -> dict[str, Any]:
    if not args.addresses_file and not args.subject_file:
        raise ConfigError("dsr", "", "give --subject-file FILE or --addresses-file FILE")
    if args.addresses_file == "-" and args.subject_file == "-":
        raise ConfigError("dsr", "", "only one of the files may be stdin")
    body: dict[str, Any] = {"tenants": args.tenant}
    if args.addresses_file:
        body["addresses"] = read_lines(args.addresses_file)
    if args.subject_file:
        body["subjects"] = read_subjects(args.subject_file)
    for name in ("since", "until"):
        v = getattr(args, name)
        if v is not None:
            body[name] = float(v) if v.replace(".", "", 1).isdigit() else v
    if args.reason:
        body["reason"] = args.reason
    if args.kind == "correct":
        body["note"] = args.note
        if (args.field is None) != (args.value is None):
            raise ValueError("--field and --value go together")
        if args.field is not None:
            body["field"], body["value"] = args.field, args.value
    return body


def cmd_dsr(args: argparse.Namespace) -> int:
    body = _body(args)
    client = make_client(args)
    headers = {}
    if args.kind in NEEDS_TOTP or getattr(args, "reidentify", False):
        code = getattr(args, "totp", None) or getpass.getpass("TOTP code: ")
        headers["X-TOTP"] = code.strip()
    if args.kind == "erase" and not args.yes:
        answer = input(f"erase every record of this subject in {', '.join(args.tenant)}? "
                       "type 'erase' to confirm: ")
        if answer.strip() != "erase":
            print("not erased", file=sys.stderr)
            return 1
    try:
        if args.kind == "export" and args.reidentify:
            return _portable(args, client.post("/v1/dsr/export", {**body, "reidentify": True},
                                               headers))
        if args.kind == "export":
            return _export(args, client, body, headers)
        result = client.post(f"/v1/dsr/{args.kind}", body, headers)
    except ApiClientError as e:
        print(f"privtel: error: {e}", file=sys.stderr)
        return 1 if e.status in (401, 403, 429) else 2
    print(orjson.dumps(result).decode())
    if args.kind in ("object", "unobject"):
        try:
            asyncio.run(_publish(args, result.get("suppression", {})))
        except (TransportError, OSError, TimeoutError) as e:
            print(f"privtel: error: the {args.kind} is recorded but the suppression list "
                  f"was not published ({type(e).__name__}); run the command again",
                  file=sys.stderr)
            return 1
        n = {t: len(v) for t, v in result.get("suppression", {}).items()}
        print(f"suppression list published (ranges per tenant: {n})", file=sys.stderr)
    if args.kind == "erase" and not result.get("verified"):
        print("privtel: error: erasure could not be verified", file=sys.stderr)
        return 1
    kept = sum((result.get("kept") or {}).values())
    if kept:
        print(f"privtel: note: {kept} record(s) stay hidden: they also belong to a subject "
              "whose restriction is still in force", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace, client: Any, body: dict[str, Any],
            headers: dict[str, str]) -> int:
    body["format"] = "ndjson"
    lines = client.stream("/v1/dsr/export", body, headers)
    header = next(lines)
    total = int(header.get("count", 0))
    bar = Progress(total, sys.stderr, args.progress or sys.stderr.isatty())
    fd = open_private(Path(args.out))
    with os.fdopen(fd, "wb") as f:
        f.write(b'{"request_id":' + orjson.dumps(header.get("request_id")) + b',"count":'
                + str(total).encode() + b',"per_tenant":' + orjson.dumps(header.get(
                    "per_tenant", {})) + b',"records":[\n')
        for i, rec in enumerate(lines):
            f.write((b",\n" if i else b"") + orjson.dumps(rec))
            bar.step()
        f.write(b"\n]}\n")
    bar.close()
    if bar.done != total:
        print(f"privtel: error: export ended after {bar.done} of {total} records",
              file=sys.stderr)
        return 1
    print(f"exported {total} record(s) to {args.out} (request {header.get('request_id')})",
          file=sys.stderr)
    return 0


PORTABLE_SCHEMA = "privtel-subject-export/1"


def _portable(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """The subject's copy: a self-describing JSON file (docs/dpo.md, "Portable export")."""
    doc = {"schema": PORTABLE_SCHEMA, "request_id": result.get("request_id"),
           "generated_at": time.time(), "tenants": args.tenant,
           "count": result.get("count", 0), "records": result.get("records", [])}
    fd = open_private(Path(args.out))
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    print(f"exported {doc['count']} record(s) with the subject's own identifiers in clear to "
          f"{args.out} (request {doc['request_id']}); hand it to the subject only",
          file=sys.stderr)
    return 0
