"""Collector metrics: the NOC exporter (`noc`), store instrumentation (`store`); the
HTTP endpoint is the shared `plumbing.metrics_http`."""

from collector.metrics.noc import NocMetrics
from collector.metrics.store import InstrumentedStore, StoreMetrics, StoreMetricsRefresh
from plumbing.metrics_http import MetricsServer, http_app, serve

__all__ = ["InstrumentedStore", "MetricsServer", "NocMetrics", "StoreMetrics",
           "StoreMetricsRefresh", "http_app", "serve"]
