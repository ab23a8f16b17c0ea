"""Post-commit outputs: `Output` protocol, `Outputs` fan-out, and the registry of kinds.

A new output is one module here with a class that has `name` and
`async deliver(batch)`, plus one line in `REGISTRY` naming its factory. A
factory gets the metrics registry and the output's settings from the config
(None for an output that has none, like the NOC exposition).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from collector.metrics.noc import NocMetrics
from collector.outputs.base import Committed, Output, Outputs
from collector.outputs.noc import NocOutput
from collector.outputs.remote_write import RemoteWriteOutput

Factory = Callable[[CollectorRegistry, Any], Output]

REGISTRY: dict[str, Factory] = {
    "noc": lambda registry, _settings: NocOutput(NocMetrics(registry)),
    "remote_write": lambda registry, settings: RemoteWriteOutput(settings, registry),
}


def build_outputs(names: Iterable[str], registry: CollectorRegistry, *,
                  queue_size: int = 1000,
                  configured: Mapping[str, Sequence[Any]] | None = None) -> Outputs:
    """The `Outputs` set: one output per name in `names` (built without settings), and
    one per settings entry in `configured[kind]` (e.g. each `[[outputs.remote_write]]`)."""
    wanted: list[tuple[str, Any]] = [(n, None) for n in names]
    wanted += [(kind, s) for kind, entries in (configured or {}).items() for s in entries]
    outputs = []
    for name, settings in wanted:
        factory = REGISTRY.get(name)
        if factory is None:
            raise ValueError(f"unknown output {name!r}; known: {', '.join(sorted(REGISTRY))}")
        outputs.append(factory(registry, settings))
    return Outputs(outputs, registry=registry, queue_size=queue_size)


__all__ = ["REGISTRY", "Committed", "NocOutput", "Output", "Outputs", "RemoteWriteOutput",
           "build_outputs"]
