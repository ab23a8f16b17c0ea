"""Post-commit outputs: `Output` protocol, `Outputs` fan-out, and the registry of kinds.

A new output is one module here with a class that has `name` and
`async deliver(batch)`, plus one line in `REGISTRY` naming its factory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry

from collector.metrics.noc import NocMetrics
from collector.outputs.base import Committed, Output, Outputs
from collector.outputs.noc import NocOutput

Factory = Callable[[CollectorRegistry], Output]

REGISTRY: dict[str, Factory] = {
    "noc": lambda registry: NocOutput(NocMetrics(registry)),
}


def build_outputs(names: Iterable[str], registry: CollectorRegistry, *,
                  queue_size: int = 1000) -> Outputs:
    """The `Outputs` set for `names` (each a key of `REGISTRY`), metrics on `registry`."""
    outputs = []
    for name in names:
        factory = REGISTRY.get(name)
        if factory is None:
            raise ValueError(f"unknown output {name!r}; known: {', '.join(sorted(REGISTRY))}")
        outputs.append(factory(registry))
    return Outputs(outputs, registry=registry, queue_size=queue_size)


__all__ = ["REGISTRY", "Committed", "NocOutput", "Output", "Outputs", "build_outputs"]
