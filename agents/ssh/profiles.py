"""Command profiles: which commands each device type runs and how outputs become fields.

The profile file (`profiles.toml`) is the one place that says what privtel
collects over SSH; this module reads it strictly and applies it. Parsing is
kept free of I/O so it can run in the worker thread that fetched the output
and be tested without a device.
"""

from __future__ import annotations

import io
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import textfsm
from ntc_templates.parse import parse_output

from pipelines.config import ConfigError, Section
from pipelines.record import Kind, Scalar
from pipelines.vocab import RecordName

PROFILE_FILE = Path(__file__).parent / "profiles.toml"
TEMPLATE_DIR = Path(__file__).parent / "templates"

RECORD_KINDS: dict[str, Kind] = {
    RecordName.SSH_INVENTORY: Kind.INVENTORY,
    RecordName.DEVICE_HEALTH: Kind.HEALTH,
    RecordName.HOST_CPU: Kind.METRIC,
    RecordName.HOST_MEMORY: Kind.METRIC,
    RecordName.HOST_LOAD: Kind.METRIC,
    RecordName.IF_ERRORS: Kind.METRIC,
    RecordName.LOG_LINE: Kind.LOG,
}
HEALTH_FIELDS = ("uptime_s",)


class ParseError(ValueError):
    """Output that its template could not turn into rows; names the command only."""

    def __init__(self, command: str, why: str) -> None:
        super().__init__(f"{command}: {why}")
        self.command, self.why = command, why


_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_UNIT_RE = re.compile(
    r"(\d+)\s*(year|yr|week|wk|day|hour|hr|minute|min|second|sec)s?(?:\(s\))?", re.I)
_CLOCK_RE = re.compile(r"(?<![\d:])(\d{1,3}):(\d{2})(?::(\d{2}))?(?![\d:])")
_UNIT_KEY = {"year": "y", "yr": "y", "week": "w", "wk": "w", "day": "d", "hour": "h",
             "hr": "h", "minute": "m", "min": "m", "second": "s", "sec": "s"}


def parse_uptime(text: str) -> int:
    """Seconds from the uptime phrasings of IOS, EOS, NX-OS and BSD/Linux `uptime`."""
    total, found = 0, False
    for n, unit in _UNIT_RE.findall(text):
        total += int(n) * _UNITS[_UNIT_KEY[unit.lower()]]
        found = True
    for h, m, s in _CLOCK_RE.findall(_UNIT_RE.sub("", text)):
        total += int(h) * 3600 + int(m) * 60 + int(s or 0)
        found = True
    if not found:
        raise ValueError("not an uptime")
    return total


def _num(v: str) -> str:
    return v.strip().replace(",", "")


CONVERTERS: dict[str, Callable[[Any], Scalar]] = {
    "int": lambda v: int(_num(v)),
    "float": lambda v: float(_num(v)),
    "first": lambda v: (v[0] if v else None) if isinstance(v, list) else v,
    "join": lambda v: " ".join(v) if isinstance(v, list) else v,
    "word": lambda v: v.split()[0],
    "uptime": parse_uptime,
    "seconds": lambda v: int(float(_num(v))),
    "kib": lambda v: int(_num(v)) * 1024,
    "mib": lambda v: int(_num(v)) * 1024 * 1024,
}


@dataclass(frozen=True, slots=True)
class Emit:
    record: str
    each: bool
    fields: tuple[tuple[str, str, str | None], ...]  # (field, column, converter)


@dataclass(frozen=True, slots=True)
class Command:
    command: str
    template: str
    emits: tuple[Emit, ...]
    match: re.Pattern[str] | None = None

    @property
    def is_log(self) -> bool:
        return self.template == "lines"

    def render(self, values: Mapping[str, Any]) -> str:
        return self.command.format(**values) if "{" in self.command else self.command


@dataclass(frozen=True, slots=True)
class Profile:
    """`enable`: the device type has a privileged (enable) mode the poller enters,
    with the credential's enable secret, before running the commands."""

    device_type: str
    commands: tuple[Command, ...]
    enable: bool = False


_FIELD_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _parse_emit(s: Section, device_type: str) -> Emit:
    record = s.str("record", choices=tuple(RECORD_KINDS))
    each = s.str("rows", "first", choices=("first", "each")) == "each"
    table = s.raw("fields")
    if not isinstance(table, dict) or not table:
        raise s.error("fields", "must be a non-empty table of field = \"COLUMN|converter\"")
    fs = Section(table, s.file, s.key("fields"))
    fields = []
    for name in table:
        spec = fs.str(name)
        if not _FIELD_RE.match(name):
            raise fs.error(name, "field names must match [a-z][a-z0-9_]*")
        column, _, conv = spec.partition("|")
        if conv and conv not in CONVERTERS:
            raise fs.error(name, f"unknown converter {conv!r}; known: {', '.join(CONVERTERS)}")
        if record == RecordName.DEVICE_HEALTH and name not in HEALTH_FIELDS:
            raise fs.error(name, f"device.health takes only {', '.join(HEALTH_FIELDS)}")
        fields.append((name, column.strip().lower(), conv or None))
    fs.done()
    s.done()
    if record == RecordName.DEVICE_HEALTH and each:
        raise s.error("rows", "device.health can only take the first row")
    return Emit(record, each, tuple(fields))


def _parse_command(s: Section, device_type: str) -> Command:
    command = s.str("command")
    template = s.str("template")
    match = s.str("match", None)
    emits = [_parse_emit(e, device_type) for e in s.sections("emit")]
    s.done()
    if not emits:
        raise s.error("emit", "needs at least one record to emit")
    if template == "ntc":
        try:
            parse_output(platform=device_type, command=command, data="")
        except Exception:
            raise s.error("template", f"ntc-templates has no template for {device_type} "
                          f"{command!r}") from None
    elif template == "lines":
        if any(e.record != RecordName.LOG_LINE for e in emits):
            raise s.error("emit", "a 'lines' command can only emit log.line")
    elif not (TEMPLATE_DIR / template).is_file() or "/" in template:
        raise s.error("template", f"no template {template!r} in {TEMPLATE_DIR}")
    try:
        pattern = re.compile(match) if match else None
    except re.error as e:
        raise s.error("match", f"not a valid regular expression ({e})") from None
    return Command(command, template, tuple(emits), pattern)


def parse_profiles(text: str, file: str) -> dict[str, Profile]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, "", f"not valid TOML ({e})") from None
    root = Section(data, file)
    out = {}
    for device_type in data:
        t = root.section(device_type)
        commands = tuple(_parse_command(c, device_type) for c in t.sections("commands"))
        enable = t.bool("enable", False)
        t.done()
        if not commands:
            raise ConfigError(file, device_type, "a profile needs at least one command")
        out[device_type] = Profile(device_type, commands, enable)
    root.done()
    return out


@cache
def builtin_profiles() -> dict[str, Profile]:
    return parse_profiles(PROFILE_FILE.read_text(), str(PROFILE_FILE))


@cache
def _own_template(name: str) -> str:
    return (TEMPLATE_DIR / name).read_text()


def parse_rows(device_type: str, cmd: Command, command_line: str,
               output: str) -> list[dict[str, Any]]:
    """Rows (lowercase column -> value) for one command's output. Zero rows from a
    template is a `ParseError`: the device answered, but not with what we expect."""
    if cmd.is_log:
        lines = [ln.rstrip() for ln in output.splitlines()]
        return [{"line": ln} for ln in lines
                if ln.strip() and (cmd.match is None or cmd.match.search(ln))]
    try:
        if cmd.template == "ntc":
            rows = parse_output(platform=device_type, command=cmd.command, data=output)
        else:
            fsm = textfsm.TextFSM(io.StringIO(_own_template(cmd.template)))
            header = [h.lower() for h in fsm.header]
            rows = [dict(zip(header, r, strict=True)) for r in fsm.ParseText(output)]
    except Exception as e:  # textfsm raises bare TextFSMError, ntc its own wrappers
        raise ParseError(command_line, f"template {cmd.template} rejected the output "
                         f"({type(e).__name__})") from None
    if not rows:
        raise ParseError(command_line, f"template {cmd.template} found nothing in "
                         f"{len(output)} characters of output")
    return rows


def row_fields(emit: Emit, row: Mapping[str, Any], command_line: str) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {}
    for name, column, conv in emit.fields:
        v = row.get(column)
        if v in ("", [], None):
            out[name] = None
            continue
        try:
            out[name] = CONVERTERS[conv](v) if conv else (
                " ".join(v) if isinstance(v, list) else v)
        except (ValueError, TypeError, IndexError):
            raise ParseError(command_line, f"column {column.upper()} is not "
                             f"{conv or 'text'}") from None
    return out


def finish(record: str, fields: dict[str, Scalar]) -> dict[str, Scalar]:
    """Bring vendor-shaped values to the shared record contract (used bytes, busy %)."""
    f = dict(fields)
    if record == RecordName.HOST_MEMORY:
        total = f.get("mem_total_bytes")
        free = f.pop("mem_free_bytes", None)
        pct = f.pop("mem_used_pct", None)
        if f.get("mem_used_bytes") is None and isinstance(total, int):
            if isinstance(free, int):
                f["mem_used_bytes"] = total - free
            elif isinstance(pct, int | float):
                f["mem_used_bytes"] = round(total * pct / 100)
    elif record == RecordName.HOST_CPU:
        idle = f.pop("cpu_idle_pct", None)
        if f.get("cpu_util_pct") is None and isinstance(idle, int | float):
            f["cpu_util_pct"] = round(100.0 - idle, 2)
    return f


class LogCursor:
    """Remembers the tail of the last log buffer seen, so the next poll emits only
    what came after it. Works on the lines themselves, not their timestamps,
    because device clocks and timestamp formats are not to be trusted.

    `tail` holds `mark(line)` for the last lines, not the lines: with a keyed
    digest as `mark` it can be written to disk without any log content in it."""

    TAIL = 5

    def __init__(self, mark: Callable[[str], str] | None = None,
                 tail: list[str] | None = None) -> None:
        self.tail = tail
        self._mark = mark or (lambda line: line)

    def new_lines(self, lines: list[str]) -> list[str]:
        marks = [self._mark(ln) for ln in lines]
        prev, self.tail = self.tail, marks[-self.TAIL:] if marks else self.tail
        if prev is None:
            return lines
        if not lines:
            return []
        for k in range(len(prev), 0, -1):
            want = prev[-k:]
            for end in range(len(marks), k - 1, -1):
                if marks[end - k:end] == want:
                    return lines[end:]
        return lines
