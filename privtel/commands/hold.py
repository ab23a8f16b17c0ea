"""`privtel hold add|list|release`: legal holds via the API (dpo or admin).

A hold keeps a tenant's records (all, a time range, or one subject's) from the
retention purge and from DSR erasure until it is released. Placing and
releasing one needs the current TOTP code, like an erasure: both decide
whether records may be deleted.

The subject comes from `--subject-file`, never the command line: one
identifier of any class a line (`ip:`, `net:`, `user:`, `email:`, `mac:`,
`host:`, `phone:`, `person:`, as for `privtel dsr`), or a bare address.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import sys
from collections.abc import Callable
from typing import Any

import orjson

from collector.api.client import ApiClientError
from pipelines.pseudonym.errors import PseudonymError
from pipelines.pseudonym.subjects import SUBJECT_CLASSES, parse_subjects
from privtel.commands.query import client_args, make_client, read_lines


def parse_subject(lines: list[str]) -> list[str]:
    """Subject-file lines (`class:value`, any identifier class) as the API takes
    them; a bare address or prefix, as older subject files hold, is read as
    `ip:`/`net:`. Errors name the line, never its value."""
    out = []
    for n, line in enumerate(lines, 1):
        if ":" in line and line.split(":", 1)[0].strip().lower() in SUBJECT_CLASSES:
            try:
                parse_subjects(line, f"subject file line {n}")
            except PseudonymError as e:
                raise ValueError(str(e)) from None
            out.append(line)
            continue
        try:
            net = ipaddress.ip_network(line, strict=False)  # a bare address or prefix
        except ValueError:
            raise ValueError(f"subject file line {n}: expected CLASS:VALUE with CLASS one of "
                             f"{', '.join(SUBJECT_CLASSES)}, or an address") from None
        out.append(f"{'net' if '/' in line else 'ip'}:{net if '/' in line else line}")
    if not out:
        raise ValueError("the subject file names no identifier")
    return out


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("hold", help="legal holds: keep records from purge and erasure "
                              "(dpo)")
    sub = p.add_subparsers(dest="hold_command", required=True, metavar="ACTION")
    a = sub.add_parser("add", help="place a hold on a tenant's records")
    client_args(a)
    a.add_argument("--tenant", required=True)
    a.add_argument("--subject-file", metavar="FILE",
                   help="hold only this subject's records: class:value lines of any identifier "
                   "class ('-' for stdin)")
    a.add_argument("--since", help="unix seconds or ISO 8601 with zone")
    a.add_argument("--until", help="unix seconds or ISO 8601 with zone")
    a.add_argument("--reason", required=True, help="the dispute, case or authority")
    a.add_argument("--totp", help="current TOTP code (prompted if omitted)")
    a.set_defaults(func=cmd_add)
    ls = sub.add_parser("list", help="holds, newest last")
    client_args(ls)
    ls.add_argument("--tenant")
    ls.add_argument("--active", action="store_true", help="only holds in force")
    ls.set_defaults(func=cmd_list)
    r = sub.add_parser("release", help="release a hold: purge and erasure reach the records "
                       "again")
    client_args(r)
    r.add_argument("hold_id")
    r.add_argument("--reason", required=True)
    r.add_argument("--totp", help="current TOTP code (prompted if omitted)")
    r.set_defaults(func=cmd_release)


def _time(v: str | None) -> Any:
    if v is None:
        return None
    return float(v) if v.replace(".", "", 1).isdigit() else v


def _totp(args: argparse.Namespace) -> dict[str, str]:
    return {"X-TOTP": (args.totp or getpass.getpass("TOTP code: ")).strip()}


def _call(fn: Callable[[], Any]) -> int:
    try:
        result = fn()
    except ApiClientError as e:
        print(f"privtel: error: {e}", file=sys.stderr)
        return 1 if e.status in (401, 403, 404, 429) else 2
    print(orjson.dumps(result).decode())
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"tenant": args.tenant, "reason": args.reason}
    if args.subject_file:
        body["subjects"] = parse_subject(read_lines(args.subject_file))
    for name in ("since", "until"):
        if getattr(args, name) is not None:
            body[name] = _time(getattr(args, name))
    client = make_client(args)
    return _call(lambda: client.post("/v1/holds", body, _totp(args)))


def cmd_list(args: argparse.Namespace) -> int:
    client = make_client(args)
    params = {k: v for k, v in (("tenant", args.tenant), ("active", "1" if args.active
                                                            else None)) if v}
    return _call(lambda: client.get("/v1/holds", params))


def cmd_release(args: argparse.Namespace) -> int:
    client = make_client(args)
    return _call(lambda: client.post("/v1/holds/release",
                                     {"id": args.hold_id, "reason": args.reason}, _totp(args)))
