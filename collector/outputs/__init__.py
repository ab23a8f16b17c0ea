"""Post-commit outputs: `Output` protocol, `Outputs` fan-out, and the registry of kinds.

A new output is one module here with a class that has `name` and
`async deliver(batch)`, plus one line in `REGISTRY` naming its factory. A
factory takes the registry and the collector config (None in unit tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry

from collector.config import CollectorConfig
from collector.liveness import LivenessSettings, SharedNoc
from collector.metrics.noc import NocMetrics
from collector.outputs.base import Committed, Output, Outputs
from collector.outputs.noc import NocOutput
from collector.store import open_db

Factory = Callable[[CollectorRegistry, CollectorConfig | None], Output]


def noc_output(registry: CollectorRegistry, cfg: CollectorConfig | None) -> NocOutput:
    """The NOC view; with a config, shared through the store between workers."""
    if cfg is None:
        return NocOutput(NocMetrics(registry))
    m = cfg.metrics
    host, port = cfg.metrics_listen
    shared = SharedNoc(open_db(cfg.store_url), LivenessSettings(
        worker_id=m.worker_id or f"{host}:{port}", silence_factor=m.silence_factor,
        default_interval_s=m.default_heartbeat_interval_s, worker_lease_s=m.worker_lease_s,
        forget_after_s=m.forget_after_days * 86400))
    # served by `render` through the metrics endpoint (`noc_renderer`), not the registry
    return NocOutput(NocMetrics(None, naming=m.naming, shared=shared), shared)


def noc_renderer(outputs: Outputs) -> Callable[[], bytes] | None:
    """The text renderer of the NOC output that is not on the registry, if any."""
    for o in outputs.outputs:
        if isinstance(o, NocOutput) and o.shared is not None:
            return o.noc.render
    return None


REGISTRY: dict[str, Factory] = {
    "noc": noc_output,
}


def build_outputs(names: Iterable[str], registry: CollectorRegistry, *,
                  queue_size: int = 1000, cfg: CollectorConfig | None = None) -> Outputs:
    """The `Outputs` set for `names` (each a key of `REGISTRY`), metrics on `registry`."""
    outputs = []
    for name in names:
        factory = REGISTRY.get(name)
        if factory is None:
            raise ValueError(f"unknown output {name!r}; known: {', '.join(sorted(REGISTRY))}")
        outputs.append(factory(registry, cfg))
    return Outputs(outputs, registry=registry, queue_size=queue_size)


__all__ = ["REGISTRY", "Committed", "NocOutput", "Output", "Outputs", "build_outputs",
           "noc_renderer"]
