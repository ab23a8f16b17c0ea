"""Imports the built-in pollers so they register themselves in `agents.pollers.REGISTRY`."""

import importlib

BUILTIN = ("agents.snmp.poller", "agents.ssh.poller")


def load_builtin() -> None:
    for name in BUILTIN:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
