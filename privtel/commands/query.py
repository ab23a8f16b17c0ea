"""`privtel query`: search the pseudonymised records through the API.

Raw indicators are read from a file or stdin (`--indicators-file`, or
`--subject-file` for identifiers of any class: `user:adaeze`, `email:a@b.ng`,
`mac:...`, `host:...`, `phone:...`, `ip:...`, `net:...`), so they stay out of
shell history and the process list; the server pseudonymises them and never
returns or logs them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from collector.api.client import ApiClient, ApiClientError
from pipelines.config import ConfigError, require_private
from pipelines.pseudonym.subjects import parse_subjects


def client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=os.environ.get("PRIVTEL_API", "http://127.0.0.1:8443"),
                   metavar="URL", help="API base URL (default: $PRIVTEL_API or "
                   "http://127.0.0.1:8443)")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help="file holding the API token, mode 0600 (default: $PRIVTEL_TOKEN)")
    p.add_argument("--cacert", metavar="FILE", help="CA bundle for an https API")


def read_token(path: Path | None) -> str:
    """The API token from an owner-only file, else $PRIVTEL_TOKEN; never from argv."""
    if path is not None:
        require_private(str(path), path.stat().st_mode)
        token = path.read_text("ascii", errors="replace").strip()
    else:
        token = os.environ.get("PRIVTEL_TOKEN", "")
    if not token:
        raise ConfigError("token", "", "give --token-file FILE or set PRIVTEL_TOKEN")
    return token


def make_client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.api, read_token(args.token_file), cafile=args.cacert)


def read_lines(path: str) -> list[str]:
    """Addresses one per line (# comments); '-' reads stdin."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")
    return [s for s in (ln.split("#", 1)[0].strip() for ln in text.splitlines()) if s]


def read_subjects(path: str) -> list[str]:
    """A subject file (`class:value` a line, # comments; '-' reads stdin) as the API
    takes it. Checked here first, so a mistake is named by its line; the error
    never repeats the value."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")
    try:
        parse_subjects(text, "stdin" if path == "-" else path)
    except ValueError as e:
        raise ConfigError("subject file", "", str(e)) from None
    return [s for s in (ln.split("#", 1)[0].strip() for ln in text.splitlines()) if s]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    q = subparsers.add_parser("query", help="search pseudonymised records via the API",
                              description="Prints matching records as JSON lines, oldest "
                              "first. Restricted records never appear.")
    client_args(q)
    q.add_argument("--tenant", required=True)
    q.add_argument("--since", help="unix seconds or ISO 8601 with zone")
    q.add_argument("--until", help="unix seconds or ISO 8601 with zone")
    for name in ("site", "device", "kind", "name", "text"):
        q.add_argument(f"--{name}")
    q.add_argument("--ip", help="pseudonymous address or prefix, as stored")
    q.add_argument("--token", help="pseudonymous token (tk-...) or MAC pseudonym, as stored")
    q.add_argument("--indicators-file", metavar="FILE",
                   help="raw addresses/prefixes, one per line ('-' for stdin)")
    q.add_argument("--subject-file", metavar="FILE",
                   help="raw identifiers of any class, 'class:value' a line (ip, net, user, "
                   "email, mac, host, phone, person; '-' for stdin)")
    q.add_argument("--limit", type=int, default=100, help="page size (max 1000)")
    q.add_argument("--all", action="store_true", help="follow the cursor to the end "
                   "(uses the NDJSON export endpoint)")
    q.add_argument("--cursor", help="continue from a cursor printed earlier")
    q.set_defaults(func=cmd_query)


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"tenant": args.tenant}
    for name in ("site", "device", "kind", "name", "text", "ip", "token", "cursor"):
        v = getattr(args, name)
        if v is not None:
            body[name] = v
    for name in ("since", "until"):
        v = getattr(args, name)
        if v is not None:
            body[name] = float(v) if v.replace(".", "", 1).isdigit() else v
    if args.indicators_file:
        body["indicators"] = read_lines(args.indicators_file)
    if args.subject_file:
        body["subjects"] = read_subjects(args.subject_file)
    return body


def cmd_query(args: argparse.Namespace) -> int:
    client = make_client(args)
    body = _body(args)
    out = sys.stdout
    try:
        if args.all:
            n = 0
            for rec in client.stream("/v1/search/export", body):
                out.write(orjson.dumps(rec).decode() + "\n")
                n += 1
            print(f"{n} record(s)", file=sys.stderr)
            return 0
        body["limit"] = args.limit
        page = client.post("/v1/search", body)
    except ApiClientError as e:
        print(f"privtel: error: {e}", file=sys.stderr)
        return 1 if e.status in (401, 403) else 2
    for rec in page["records"]:
        out.write(orjson.dumps(rec).decode() + "\n")
    nxt = page.get("next_cursor")
    print(f"{len(page['records'])} record(s)" + (f"; more with --cursor {nxt}" if nxt else ""),
          file=sys.stderr)
    return 0
