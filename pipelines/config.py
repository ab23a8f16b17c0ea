"""Strict reading of TOML-shaped config: unknown keys and bad values are errors.

Every config in privtel (agent, collector, profiles, retention policy) goes
through `Section`, so every error has the same shape: file, dotted key, why.
"""

from __future__ import annotations

import builtins
import tomllib
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar, overload

T = TypeVar("T")
_REQUIRED: Any = object()


class ConfigError(ValueError):
    def __init__(self, file: str, key: str, why: str) -> None:
        super().__init__(f"{file}: {key}: {why}" if key else f"{file}: {why}")
        self.file, self.key, self.why = file, key, why


def parse_toml(text: str, file: str) -> Section:
    try:
        return Section(tomllib.loads(text), file)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, "", f"not valid TOML ({e})") from None


class Section:
    """A table being read; `done()` rejects every key nobody asked for."""

    def __init__(self, data: Mapping[str, Any], file: str, path: str = "") -> None:
        self._data, self.file, self.path, self._seen = data, file, path, set[str]()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, why: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), why)

    def __contains__(self, name: str) -> bool:
        return name in self._data

    def _get(self, name: str, default: Any, types: tuple[type, ...], what: str) -> Any:
        self._seen.add(name)
        if name not in self._data:
            if default is _REQUIRED:
                raise self.error(name, "is required")
            return default
        v = self._data[name]
        if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
            raise self.error(name, f"must be {what}, not {type(v).__name__}")
        return v

    def str(self, name: builtins.str, default: Any = _REQUIRED, *,
            choices: tuple[builtins.str, ...] = ()) -> Any:
        v = self._get(name, default, (builtins.str,), "a string")
        if choices and v is not None and v not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}, not {v!r}")
        return v

    def int(self, name: builtins.str, default: Any = _REQUIRED, *, lo: builtins.int | None = None,
            hi: builtins.int | None = None) -> Any:
        v = self._get(name, default, (int,), "an integer")
        self._range(name, v, lo, hi)
        return v

    def float(self, name: builtins.str, default: Any = _REQUIRED, *,
              lo: builtins.float | None = None, hi: builtins.float | None = None) -> Any:
        v = self._get(name, default, (int, float), "a number")
        self._range(name, v, lo, hi)
        return float(v) if v is not None else v

    def bool(self, name: builtins.str, default: Any = _REQUIRED) -> Any:
        return self._get(name, default, (bool,), "true or false")

    def str_list(self, name: builtins.str, default: Any = _REQUIRED) -> Any:
        v = self._get(name, default, (list,), "a list of strings")
        if v is not None and not all(isinstance(x, builtins.str) for x in v):
            raise self.error(name, "must be a list of strings")
        return v

    def section(self, name: builtins.str, *, required: builtins.bool = False) -> Section:
        v = self._get(name, _REQUIRED if required else {}, (dict,), "a table")
        return Section(v, self.file, self.key(name))

    def sections(self, name: builtins.str) -> Iterator[Section]:
        v = self._get(name, [], (list,), "an array of tables")
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                raise self.error(f"{name}[{i}]", "must be a table")
            yield Section(item, self.file, f"{self.key(name)}[{i}]")

    def raw(self, name: builtins.str, default: Any = _REQUIRED) -> Any:
        """The value as parsed, for sub-parsers that validate it themselves."""
        return self._get(name, default, (object,), "a value")

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise self.error(unknown[0], "unknown key" + (
                f" (also {', '.join(unknown[1:])})" if len(unknown) > 1 else ""))

    def _range(self, name: builtins.str, v: Any, lo: Any, hi: Any) -> None:
        if v is None:
            return
        if lo is not None and v < lo:
            raise self.error(name, f"must be at least {lo}, not {v}")
        if hi is not None and v > hi:
            raise self.error(name, f"must be at most {hi}, not {v}")


@overload
def listen_address(s: Section, name: str, default: str) -> tuple[str, int]: ...
@overload
def listen_address(s: Section, name: str, default: None) -> tuple[str, int] | None: ...
def listen_address(s: Section, name: str, default: str | None) -> tuple[str, int] | None:
    """A `host:port` to listen on; port 0 asks the system for a free one."""
    v = s.str(name, default)
    if v is None:
        return None
    host, _, port = v.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise s.error(name, f"must be host:port, not {v!r}")
    return host.strip("[]"), int(port)


def require_private(file: builtins.str, mode: builtins.int) -> None:
    """Refuse a secret-bearing file that group or others can read or write."""
    if mode & 0o077:
        raise ConfigError(file, "", f"holds secrets but has mode {mode & 0o777:04o}; "
                          f"run: chmod 600 {file}")
