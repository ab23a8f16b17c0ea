"""A device's own names inside its free text.

Log lines often carry the name of the host that wrote them (a syslog line is
`<time> <hostname> <program>: ...`, Junos and NX-OS logs alike), and a field
policy only sees the fields it is told about. So the pseudonymiser learns each
device's names (its configured name, and every identifier-class value its own
records carry: `hostname`, `sys_name`) and replaces them, as whole words, in
that device's log and event text with the same token the fields get, so an
analyst can still tell which device a line came from without learning its
name. One-character names and all-digit ones are not learnt: as
words they would match too much.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pipelines.pseudonym.known import is_address

MIN_NAME = 2
MAX_NAMES = 16  # per device; a device with more "own names" is feeding us data, not names


class DeviceNames:
    """Per device (the raw, site-local name): lower-cased name -> name as first seen."""

    def __init__(self, max_devices: int = 50_000) -> None:
        self.max_devices = max_devices
        self._names: dict[str, dict[str, str]] = {}
        self._patterns: dict[str, re.Pattern[str] | None] = {}
        # short texts repeat record after record (an app name, a transport): their
        # result per device, until that device learns a name; one token function
        # per instance (the pseudonymiser's), so the result depends on nothing else
        self._short: dict[tuple[str, str], str] = {}

    def _of(self, device: str) -> dict[str, str]:
        names = self._names.get(device)
        if names is None:
            if len(self._names) >= self.max_devices:
                self._names.clear()
                self._patterns.clear()
                self._short.clear()
            names = self._names[device] = {}
            self._add(names, device)
        return names

    @staticmethod
    def _add(names: dict[str, str], name: str) -> bool:
        name = name.strip()
        low = name.lower()
        if (len(name) < MIN_NAME or name.isdigit() or low in names or len(names) >= MAX_NAMES
                or is_address(name)):
            return False
        names[low] = name
        return True

    def learn(self, device: str, name: str) -> None:
        if self._add(self._of(device), name):
            self._patterns.pop(device, None)
            self._short.clear()

    def rewrite(self, device: str, text: str, token: Callable[[str], str]) -> str:
        """`text` with each of the device's names, as a whole word in any case,
        replaced by `token(name)`."""
        if len(text) <= 64:
            key = (device, text)
            out = self._short.get(key)
            if out is None:
                out = self._rewrite(device, text, token)
                if len(self._short) > 65536:
                    self._short.clear()
                self._short[key] = out
            return out
        return self._rewrite(device, text, token)

    def _rewrite(self, device: str, text: str, token: Callable[[str], str]) -> str:
        if device in self._patterns:
            pattern = self._patterns[device]
        else:
            names = self._of(device)
            alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
            pattern = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])",
                                 re.IGNORECASE) if names else None
            self._patterns[device] = pattern
        if pattern is None or pattern.search(text) is None:
            return text
        names = self._names[device]
        return pattern.sub(lambda m: token(names[m.group(0).lower()]), text)
