"""Log grammars: declarative rules (TOML data) that say where identifiers sit in a line.

A grammar is one table per log family (`grammars/*.toml`, shipped with the
package), so an operator adds a family the way they add an SNMP profile:
without code. Parsing is pure (text in, rules out); only `builtin_grammars`
reads the package's own data files.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources

from pipelines.pseudonym.classes import TEXT_CLASSES
from pipelines.pseudonym.errors import PolicyError


@dataclass(frozen=True, slots=True)
class Rule:
    family: str
    anchors: tuple[str, ...]  # literals, one of which the line must contain; () runs always
    regex: re.Pattern[str]
    groups: tuple[tuple[str, str], ...]  # (group name, identifier class)
    learn: bool  # a value found here is a real session's name


def parse_grammar(text: str, source: str = "<grammar>") -> list[Rule]:
    """The rules of one grammar file; any mistake is an error naming the rule."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{source}: not TOML ({e})") from None
    family = doc.get("family")
    if not isinstance(family, str) or not family:
        raise PolicyError(f"{source}: needs family = \"name\"")
    rules = doc.get("rule", [])
    if not isinstance(rules, list) or not rules:
        raise PolicyError(f"{source}: needs at least one [[rule]]")
    out = []
    for i, r in enumerate(rules):
        where = f"{source}: rule {i + 1}"
        if not isinstance(r, dict) or set(r) - {"anchor", "pattern", "learn"}:
            raise PolicyError(f"{where}: only anchor, pattern and learn are known")
        anchor, pattern, learn = r.get("anchor", ""), r.get("pattern"), r.get("learn", False)
        anchors = (anchor,) if isinstance(anchor, str) else anchor
        if not isinstance(anchors, list | tuple) or not all(isinstance(a, str) for a in anchors) \
                or not isinstance(pattern, str) or not isinstance(learn, bool):
            raise PolicyError(f"{where}: anchor is text or a list of text, pattern is text, "
                              "learn is true/false")
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise PolicyError(f"{where}: pattern is not a regex ({e})") from None
        groups = []
        for name in rx.groupindex:
            cls = name.split("__")[0]
            if cls not in TEXT_CLASSES:
                raise PolicyError(f"{where}: group {name!r} names no identifier class "
                                  f"({', '.join(TEXT_CLASSES)})")
            groups.append((name, cls))
        if not groups:
            raise PolicyError(f"{where}: pattern has no named group for an identifier")
        out.append(Rule(family, tuple(a for a in anchors if a), rx, tuple(groups), learn))
    return out


def builtin_grammars() -> list[Rule]:
    """Every grammar shipped under pipelines/pseudonym/grammars/, in file name order."""
    root = resources.files("pipelines.pseudonym") / "grammars"
    rules: list[Rule] = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            rules += parse_grammar(entry.read_text(encoding="utf-8"), entry.name)
    return rules
