"""`privtel api serve`: the query and data-subject-request API under uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from collector.api import ApiConfig, create_app, serve
from collector.api.throttle import ThrottleLimits
from collector.search import TenantKeys
from pipelines.config import listen_address, parse_toml
from pipelines.pseudonym import PolicyError, PrivacyPolicy
from privtel.commands.audit import read_audit_key
from privtel.commands.users import read_totp_key, store_arg, totp_key_arg


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("api", help="the security team's query and DSR API")
    sub = p.add_subparsers(dest="api_command", required=True, metavar="ACTION")
    s = sub.add_parser("serve", help="serve the API (127.0.0.1:8443 by default)")
    store_arg(s)
    s.add_argument("--listen", default="127.0.0.1:8443", metavar="HOST:PORT")
    s.add_argument("--tenant-keys", type=Path, metavar="DIR",
                   help="directory of tenant-<name>.key files (mode 0600) for indicator "
                   "search and DSRs; without it both answer 400")
    s.add_argument("--privacy", type=Path, metavar="FILE",
                   help="TOML with the agents' [privacy] table (prefix lengths, modes), so "
                   "indicators are pseudonymised exactly as the agents did")
    s.add_argument("--tls-cert", metavar="FILE")
    s.add_argument("--tls-key", metavar="FILE")
    s.add_argument("--tls-client-ca", metavar="FILE",
                   help="CA bundle to verify client certificates against (optional)")
    s.add_argument("--audit-key", type=Path, metavar="FILE",
                   help="HMAC key for the audit chain (mode 0600); keep it off the DB host")
    totp_key_arg(s)
    s.add_argument("--insecure-no-tls", action="store_true",
                   help="allow a non-loopback address without TLS (behind a TLS proxy)")
    s.add_argument("--trusted-proxy", metavar="ADDRS",
                   help="comma-separated addresses or networks of reverse proxies whose "
                   "X-Forwarded-For names the client (for the failed-login throttle); "
                   "ignored from anyone else")
    limits = ThrottleLimits()
    s.add_argument("--max-totp-failures", type=int, default=limits.totp_failures, metavar="N",
                   help=f"wrong TOTP codes a token may send per {limits.totp_window_s / 60:g} "
                   "minutes before 429 (default %(default)s)")
    s.add_argument("--max-login-failures", type=int, default=limits.token_failures,
                   metavar="N", help=f"refused tokens a client may send per "
                   f"{limits.token_window_s:g} s before 429 (default %(default)s)")
    s.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"))
    s.set_defaults(func=cmd_serve)


def _policy(path: Path | None) -> PrivacyPolicy:
    if path is None:
        return PrivacyPolicy()
    top = parse_toml(path.read_text("utf-8"), str(path))
    try:
        policy = PrivacyPolicy.from_section(top.section("privacy", required=True))
    except PolicyError as e:
        raise ValueError(f"{path}: {e}") from None
    return policy


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.store:
        print("privtel: error: --store URL is required (or set PRIVTEL_STORE)", file=sys.stderr)
        return 2
    sec = parse_toml(f'listen = "{args.listen}"', "--listen")
    addr = listen_address(sec, "listen", None)
    assert addr is not None
    host, port = addr
    tls = args.tls_cert is not None
    if (args.tls_cert is None) != (args.tls_key is None):
        print("privtel: error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not tls and not args.insecure_no_tls:
        print("privtel: error: refusing to serve on a non-loopback address without TLS; "
              "give --tls-cert/--tls-key (or --insecure-no-tls behind a TLS proxy)",
              file=sys.stderr)
        return 2
    policy = _policy(args.privacy)
    keys = TenantKeys.from_dir(args.tenant_keys, policy) if args.tenant_keys else \
        TenantKeys(policy=policy)
    try:
        throttle = ThrottleLimits(totp_failures=args.max_totp_failures,
                                  token_failures=args.max_login_failures)
    except ValueError as e:
        print(f"privtel: error: {e}", file=sys.stderr)
        return 2
    app = create_app(ApiConfig(store_url=args.store, keys=keys, throttle=throttle,
                               audit_key=read_audit_key(args.audit_key),
                               totp_key=read_totp_key(args.totp_key_file)))
    print(f"privtel api: {'https' if tls else 'http'}://{host}:{port} (tenant keys for "
          f"{len(keys.tenants)} tenant(s)); OpenAPI at /openapi.json", file=sys.stderr)
    serve(app, host=host, port=port, ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
          ssl_ca_certs=args.tls_client_ca, log_level=args.log_level,
          trusted_proxies=args.trusted_proxy)
    return 0
