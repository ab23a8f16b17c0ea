"""uvicorn, bound to loopback unless told otherwise, TLS when given a cert.

`serve` runs it as the whole process (`privtel api serve`); `ApiServer` runs it
as one component of a larger process. uvicorn's access log is off: it prints each
client's address, and the audit log already records every call by user name and
request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn

from pipelines.lifecycle import Lifecycle


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


class _NoSignalServer(uvicorn.Server):
    """Inside a process that owns its signals (the collector), uvicorn must not take them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer(Lifecycle):
    """The API under uvicorn as a component of a larger process: `start` returns once it
    listens (or raises if it could not bind), `close` lets requests in flight finish."""

    def __init__(self, app: Any, **options: Any) -> None:
        self._server = _NoSignalServer(server(app, **options).config)
        self._task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="privtel-api")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError("the API server stopped before it listened")
            await asyncio.sleep(0.02)

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", [])
        return int(servers[0].sockets[0].getsockname()[1])

    async def _close(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await self._task
