"""The collector's long-lived parts as lifecycle components, each against its real peer
(a real socket, a real store): start, serve, close twice."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from collector.api.serve import ApiServer
from collector.metrics import StoreMetrics, StoreMetricsRefresh
from collector.retention import RetentionService
from plumbing.metrics_http import MetricsServer


async def _until(pred: object, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return bool(pred())  # type: ignore[operator]


async def test_metrics_server_serves_between_start_and_close() -> None:
    reg = CollectorRegistry()
    ready = {"ok": False}
    server = MetricsServer(reg, "127.0.0.1", 0, ready=lambda: ready["ok"])
    await server.close()  # safe before start, and does not count as a start
    server = MetricsServer(reg, "127.0.0.1", 0, ready=lambda: ready["ok"])
    async with server:
        assert server.port > 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            assert (await c.get("/readyz")).status_code == 503
            ready["ok"] = True
            assert (await c.get("/readyz")).status_code == 200
    await server.close()
    async with httpx.AsyncClient() as c:
        try:
            await c.get(f"http://127.0.0.1:{server.port}/healthz", timeout=2)
            still_up = True
        except httpx.TransportError:
            still_up = False
    assert not still_up


async def test_retention_and_store_metrics_run_as_components(store) -> None:
    reg = CollectorRegistry()
    retention = RetentionService(store, registry=reg, interval_s=3600)
    refresh = StoreMetricsRefresh(StoreMetrics(reg, store.backend), store)
    async with retention, refresh:
        assert await _until(lambda: reg.get_sample_value(
            "privtel_retention_purge_runs_total", {"trigger": "scheduled", "result": "ok"}) == 1)
        assert await _until(lambda: (reg.get_sample_value(
            "privtel_store_refresh_timestamp_seconds", {"backend": store.backend}) or 0) > 0)
    await retention.close()
    await refresh.close()
    assert retention.failure is None and refresh.failure is None


async def test_api_server_component_listens_and_stops() -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/hello", hello)])
    api = ApiServer(app, host="127.0.0.1", port=0, log_level="warning")
    async with api:
        async with httpx.AsyncClient() as c:
            r = await c.get(f"http://127.0.0.1:{api.port}/hello", timeout=5)
        assert r.text == "hi"
        port = api.port
    await api.close()
    async with httpx.AsyncClient() as c:
        try:
            await c.get(f"http://127.0.0.1:{port}/hello", timeout=2)
            still_up = True
        except httpx.TransportError:
            still_up = False
    assert not still_up
