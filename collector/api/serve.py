"""uvicorn, bound to loopback unless told otherwise, TLS when given a cert.

uvicorn's access log is off: it prints each client's address, and the audit
log already records every call by user name and request id.
"""

from __future__ import annotations

import ssl
from typing import Any

import uvicorn


def server(app: Any, *, host: str = "127.0.0.1", port: int = 8443,
           ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
           ssl_ca_certs: str | None = None, log_level: str = "info",
           trusted_proxies: str | None = None) -> uvicorn.Server:
    """`trusted_proxies` (comma-separated addresses or networks): only requests from
    these may name the client in X-Forwarded-For. Without it the header is ignored,
    since anyone could otherwise pick the address the login throttle counts."""
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ValueError("TLS needs both a certificate and its key")
    cfg = uvicorn.Config(app, host=host, port=port, ssl_certfile=ssl_certfile,
                         ssl_keyfile=ssl_keyfile, ssl_ca_certs=ssl_ca_certs,
                         ssl_cert_reqs=ssl.CERT_REQUIRED if ssl_ca_certs else ssl.CERT_NONE,
                         log_level=log_level, access_log=False, server_header=False,
                         proxy_headers=trusted_proxies is not None,
                         forwarded_allow_ips=trusted_proxies or "",
                         timeout_keep_alive=5, limit_concurrency=256, lifespan="off")
    return uvicorn.Server(cfg)


def serve(app: Any, **options: Any) -> None:
    """Run until SIGINT/SIGTERM (uvicorn installs the handlers)."""
    server(app, **options).run()
