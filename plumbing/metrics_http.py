"""The /metrics endpoint (with /healthz and /readyz) both processes serve, as a component.

prometheus-client's WSGI app in a threading WSGI server on a daemon thread, so a
scrape never waits for the event loop and a busy loop never fails a scrape.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from pipelines.lifecycle import Lifecycle


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes every few seconds would drown the process's own log."""


def _probe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:
        return False


def http_app(registry: CollectorRegistry, *, live: Callable[[], bool] = lambda: True,
             ready: Callable[[], bool] = lambda: True) -> Callable[..., Any]:
    """WSGI app: `/metrics` (and every other path) from the registry, `/healthz` from
    `live`, `/readyz` from `ready`; a check that raises counts as failing."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok = _probe(live if path == "/healthz" else ready)
            body = b"ok\n" if ok else b"unavailable\n"
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
            return [body]
        return list(metrics(environ, start_response))

    return app


def serve(registry: CollectorRegistry, host: str, port: int, *,
          live: Callable[[], bool] = lambda: True, ready: Callable[[], bool] = lambda: True
          ) -> tuple[ThreadingWSGIServer, threading.Thread]:
    """Start `http_app` in a daemon thread; `server.server_port` is the bound port
    (pass port 0 for any free one); stop with `server.shutdown()`."""
    server = make_server(host, port, http_app(registry, live=live, ready=ready),
                         ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="privtel-metrics-http",
                              daemon=True)
    thread.start()
    return server, thread


class MetricsServer(Lifecycle):
    """`serve` as a component: binds on `start` (port 0 picks a free one, read `port`
    afterwards), stops on `close`."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, *,
                 live: Callable[[], bool] = lambda: True,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.registry, self.host, self.port = registry, host, port
        self._live, self._ready = live, ready
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    async def _start(self) -> None:
        self._server, self._thread = serve(self.registry, self.host, self.port,
                                           live=self._live, ready=self._ready)
        self.port = self._server.server_port

    async def _close(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.shutdown)
            self._server.server_close()
