"""The one naming rule for tenants, agent ids and sites.

These names become MQTT topic levels, file names, certificate common names,
Prometheus label values and SQL keys, so every place that accepts one (config,
records, envelope, certificates, API, DSR, search) checks it here: a name one
part accepts can never be refused later by another and kill a poll loop.
"""

from __future__ import annotations

import re

PATTERN = "[a-z0-9][a-z0-9_-]{0,62}"
NAME_RE = re.compile(rf"^{PATTERN}$")


class BadName(ValueError):
    """A tenant, agent or site name outside the rule; the text names the rule, not the value."""


def is_name(value: object) -> bool:
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


RULE = f"must match {PATTERN} (lowercase letters, digits, '-' or '_')"


def check_name(value: object) -> str:
    """`value` if it follows the rule, else BadName saying which rule (never echoing it)."""
    if not is_name(value):
        raise BadName(RULE)
    return value  # type: ignore[return-value]
