"""The design's floors, checked: pipelines imports nothing of ours; plumbing (shared I/O)
imports only pipelines; agents and collector may import both but never each other; only
privtel imports both sides. Plus the test tree's own rule."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
OURS = {"pipelines", "plumbing", "agents", "collector", "privtel"}
ALLOWED = {
    "pipelines": {"pipelines"},
    "plumbing": {"plumbing", "pipelines"},
    "agents": {"agents", "plumbing", "pipelines"},
    "collector": {"collector", "plumbing", "pipelines"},
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


def test_the_shared_floor_is_a_package_that_shadows_no_stdlib_module() -> None:
    import sys

    assert (ROOT / "plumbing" / "__init__.py").is_file()
    assert "plumbing" not in sys.stdlib_module_names
    assert all("plumbing" not in _imports(p) for p in (ROOT / "pipelines").rglob("*.py"))


def test_test_module_names_are_unique() -> None:
    """pytest's default import mode needs unique basenames across test folders."""
    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
