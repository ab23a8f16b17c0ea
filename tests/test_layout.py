"""The design's floors, checked: pipelines imports nothing of ours; agents and collector
never import each other; only privtel imports both. Plus the test tree's own rule."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
OURS = {"pipelines", "agents", "collector", "privtel"}
ALLOWED = {
    "pipelines": {"pipelines"},
    "agents": {"agents", "pipelines"},
    "collector": {"collector", "pipelines"},
    "privtel": OURS,
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_floors(package: str) -> None:
    wrong = {str(p.relative_to(ROOT)): sorted(_imports(p) - ALLOWED[package])
             for p in (ROOT / package).rglob("*.py")}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_test_module_names_are_unique() -> None:
    """pytest's default import mode needs unique basenames across test folders."""
    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
