"""The /metrics endpoint (with /healthz and /readyz) both processes serve, as a component.

prometheus-client's WSGI app in a threading WSGI server on a daemon thread, so a
scrape never waits for the event loop and a busy loop never fails a scrape.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, ThreadingWSGIServer

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
             ready: Callable[[], bool] = lambda: True,
             extra: Callable[[], Sequence[bytes]] | None = None) -> Callable[..., Any]:
    """WSGI app: `/metrics` (and every other path) from the registry, `/healthz` from
    `live`, `/readyz` from `ready`; a check that raises counts as failing. `extra`
    appends series a component writes in the text format itself (the NOC exposition,
    too large to go sample by sample through prometheus_client); the answer is then
    always the text format."""
    metrics = make_wsgi_app(registry)

    def text(start_response: Callable[..., Any]) -> list[bytes]:
        assert extra is not None
        # pieces, not one joined copy: the NOC text is hundreds of MB at 10k devices
        parts = [generate_latest(registry), *extra()]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4),
                                  ("Content-Length", str(sum(map(len, parts))))])
        return parts

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok = _probe(live if path == "/healthz" else ready)
            body = b"ok\n" if ok else b"unavailable\n"
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
            return [body]
        if extra is not None:
            return text(start_response)
        return list(metrics(environ, start_response))

    return app


def serve(registry: CollectorRegistry, host: str, port: int, *,
          live: Callable[[], bool] = lambda: True, ready: Callable[[], bool] = lambda: True,
          extra: Callable[[], Sequence[bytes]] | None = None
          ) -> tuple[ThreadingWSGIServer, threading.Thread]:
    """Start `http_app` in a daemon thread; `server.server_port` is the bound port
    (pass port 0 for any free one); stop with `server.shutdown()`."""
    server = make_server(host, port, http_app(registry, live=live, ready=ready, extra=extra),
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
                 ready: Callable[[], bool] = lambda: True,
                 extra: Callable[[], Sequence[bytes]] | None = None) -> None:
        self.registry, self.host, self.port = registry, host, port
        self._extra = extra
        self._live, self._ready = live, ready
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    async def _start(self) -> None:
        self._server, self._thread = serve(self.registry, self.host, self.port,
                                           live=self._live, ready=self._ready,
                                           extra=self._extra)
        self.port = self._server.server_port

    async def _close(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.shutdown)
            self._server.server_close()
