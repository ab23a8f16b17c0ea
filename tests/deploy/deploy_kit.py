"""What the deploy tests share: where deploy/ is, the real tools they run, and
the `privtel` command lines the shipped files start."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
UNITS = sorted(SYSTEMD.glob("privtel-*.*"))
SERVICES = [u for u in UNITS if u.suffix == ".service"]
SHIPPED_BINARY = "/usr/local/bin/privtel"


def tool(name: str, package: str) -> str:
    """Path of a real tool the test needs; a clear failure, not a skip, without it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} "
                    "(.ci/run installs it)")
    return path


def run(argv: list[str], cwd: Path | None = None, timeout: float = 120) -> \
        subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def privtel_binary() -> Path:
    """The installed `privtel` entry point of this environment (the venv's)."""
    found = shutil.which("privtel") or str(Path(sys.executable).parent / "privtel")
    path = Path(found)
    if not path.is_file():
        pytest.fail("the privtel entry point is not installed: pip install -e .")
    return path


def read_unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment, method-assign]
    cp.read(path)
    return cp


def load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@dataclass(frozen=True)
class CommandLine:
    """One `privtel ...` invocation a shipped file makes: where, and its arguments."""

    where: str
    argv: list[str]
    context: dict[str, Any]


def systemd_commands() -> list[CommandLine]:
    out = []
    for unit in SERVICES:
        argv = shlex.split(read_unit(unit)["Service"]["ExecStart"])
        assert argv[0] == SHIPPED_BINARY, f"{unit.name}: ExecStart runs {argv[0]}"
        out.append(CommandLine(f"systemd/{unit.name}", argv[1:], {"unit": unit}))
    return out


def dockerfile_cmd() -> list[str]:
    for line in (DEPLOY / "compose" / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD "):
            return list(yaml.safe_load(line[4:]))
    raise AssertionError("deploy/compose/Dockerfile has no CMD")


def compose_commands() -> list[CommandLine]:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    out = []
    for name, svc in compose["services"].items():
        if svc.get("image", "").startswith("privtel:"):
            argv = svc.get("command", dockerfile_cmd())
            out.append(CommandLine(f"compose/{name}", list(argv), {"service": svc}))
    return out


def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for p in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += load_yaml_docs(p)
    return docs


def k8s_deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Deployment"}


def k8s_commands() -> list[CommandLine]:
    out = []
    for name, dep in k8s_deployments().items():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            if c["image"].startswith("privtel:"):
                assert "command" not in c, f"{name}: privtel containers set args only"
                out.append(CommandLine(f"k8s/{name}/{c['name']}", list(c["args"]),
                                       {"deployment": dep, "container": c}))
    return out


def all_commands() -> list[CommandLine]:
    return systemd_commands() + compose_commands() + k8s_commands()
