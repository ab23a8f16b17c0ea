"""Post-commit outputs: `Output` protocol, `Outputs` fan-out, and the registry of kinds.

A new output is one module here with a class that has `name` and
`async deliver(batch)`, plus one line in `REGISTRY` naming its factory. A
factory takes the metrics registry, the collector config (None in unit tests) and
the output's own settings (None for an output that has none, like the NOC view;
one entry per `[[outputs.KIND]]` table otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from collector.liveness import LivenessSettings, SharedNoc
from collector.metrics.noc import NocMetrics
from collector.outputs.base import Committed, Output, Outputs
from collector.outputs.noc import NocOutput
from collector.outputs.remote_write import RemoteWriteOutput

if TYPE_CHECKING:  # the config imports the outputs' settings types
    from collector.config import CollectorConfig
from collector.store import open_db

Factory = Callable[[CollectorRegistry, "CollectorConfig | None", Any], Output]


def noc_output(registry: CollectorRegistry, cfg: CollectorConfig | None,
               _settings: Any = None) -> NocOutput:
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


def noc_renderer(outputs: Outputs) -> Callable[[], Sequence[bytes]] | None:
    """The text renderer of the NOC output that is not on the registry, if any."""
    for o in outputs.outputs:
        if isinstance(o, NocOutput) and o.shared is not None:
            return o.noc.render_parts
    return None


REGISTRY: dict[str, Factory] = {
    "noc": noc_output,
    "remote_write": lambda registry, _cfg, settings: RemoteWriteOutput(settings, registry),
}


def build_outputs(names: Iterable[str], registry: CollectorRegistry, *,
                  queue_size: int = 1000, cfg: CollectorConfig | None = None,
                  configured: Mapping[str, Sequence[Any]] | None = None) -> Outputs:
    """The `Outputs` set: one output per name in `names` (built without settings), and
    one per settings entry in `configured[kind]` (e.g. each `[[outputs.remote_write]]`),
    metrics on `registry`."""
    wanted: list[tuple[str, Any]] = [(n, None) for n in names]
    wanted += [(kind, s) for kind, entries in (configured or {}).items() for s in entries]
    outputs = []
    for name, settings in wanted:
        factory = REGISTRY.get(name)
        if factory is None:
            raise ValueError(f"unknown output {name!r}; known: {', '.join(sorted(REGISTRY))}")
        outputs.append(factory(registry, cfg, settings))
    return Outputs(outputs, registry=registry, queue_size=queue_size)


__all__ = ["REGISTRY", "Committed", "NocOutput", "Output", "Outputs", "RemoteWriteOutput",
           "build_outputs", "noc_renderer"]
