"""Every shipped systemd unit passes `systemd-analyze verify` without a warning and
scores an exposure of at most 2.0 in `systemd-analyze security --offline=yes`;
the paths each service writes are writable under its sandbox."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from deploy_kit import (
    DEPLOY,
    SERVICES,
    SHIPPED_BINARY,
    SYSTEMD,
    UNITS,
    privtel_binary,
    read_unit,
    run,
    tool,
)

from agents import config as agent_config
from collector import config as collector_config
from privtel.cli import build_parser

MAX_EXPOSURE = 2.0


def analyze() -> str:
    return tool("systemd-analyze", "systemd")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units as installed, with ExecStart= pointing at this environment's
    privtel instead of /usr/local/bin (verify checks that the binary exists)."""
    d = tmp_path_factory.mktemp("units")
    binary = str(privtel_binary())
    for unit in UNITS:
        (d / unit.name).write_text(unit.read_text().replace(SHIPPED_BINARY, binary))
    return d


def test_every_service_has_its_tested_twin() -> None:
    names = {u.name for u in UNITS}
    assert {"privtel-agent.service", "privtel-collector.service", "privtel-api.service",
            "privtel-retention-purge.service", "privtel-retention-purge.timer"} <= names


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_verify(unit: Path, installed: Path) -> None:
    r = run([analyze(), "verify", str(installed / unit.name)], cwd=installed)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not out, f"systemd-analyze verify {unit.name}:\n{out}"


def test_verify_reports_what_it_should(installed: Path, tmp_path: Path) -> None:
    """The check above would see a misspelt key or a missing binary."""
    bad = tmp_path / "privtel-agent.service"
    bad.write_text((installed / "privtel-agent.service").read_text()
                   .replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    r = run([analyze(), "verify", str(bad)], cwd=tmp_path)
    assert "NoNewPrivilege" in r.stdout + r.stderr
    bad.write_text((installed / "privtel-agent.service").read_text()
                   .replace(str(privtel_binary()), str(tmp_path / "no-such-privtel")))
    r = run([analyze(), "verify", str(bad)], cwd=tmp_path)
    assert r.returncode != 0 and "no-such-privtel" in r.stdout + r.stderr


def exposure(path: Path) -> float:
    r = run([analyze(), "security", "--offline=yes", "--no-pager", str(path)])
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, f"no exposure level in:\n{r.stdout}{r.stderr}"
    return float(m.group(1))


@pytest.mark.parametrize("unit", SERVICES, ids=[u.name for u in SERVICES])
def test_security_exposure(unit: Path, installed: Path) -> None:
    level = exposure(installed / unit.name)
    assert level <= MAX_EXPOSURE, f"{unit.name}: exposure {level} > {MAX_EXPOSURE}"


def test_exposure_rises_without_hardening(installed: Path, tmp_path: Path) -> None:
    weak = tmp_path / "privtel-weak.service"
    text = (installed / "privtel-collector.service").read_text()
    weak.write_text("\n".join(line for line in text.splitlines()
                              if not line.startswith(("Protect", "Restrict", "SystemCall"))))
    assert exposure(weak) > MAX_EXPOSURE


def writable(unit: Path) -> list[Path]:
    s = read_unit(unit)["Service"]
    dirs = [Path("/var/lib") / d for d in s.get("StateDirectory", "").split()]
    dirs += [Path(p.lstrip("-")) for p in s.get("ReadWritePaths", "").split()]
    return dirs


def sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def example(config_path: str) -> Path:
    """The example a unit's /etc/privtel/NAME stands for."""
    assert config_path.startswith("/etc/privtel/"), config_path
    p = DEPLOY / "examples" / Path(config_path).name
    assert p.exists(), f"{config_path} has no example in deploy/examples"
    return p


def written_paths(unit: Path, fill: Callable[[str], str]) -> list[Path]:
    """What the service writes, read from its command line and the example config."""
    argv = shlex.split(read_unit(unit)["Service"]["ExecStart"])[1:]
    args = build_parser().parse_args(argv)
    out: list[Path] = []
    if args.command == "agent":
        src = example(str(args.config))
        out.append(agent_config.parse(fill(src.read_text()), str(src)).state_dir)
    elif getattr(args, "config", None) is not None:
        src = example(str(args.config))
        url = collector_config.parse(src.read_text(), str(src), base=Path("/etc/privtel")).store_url
        out += [p for p in [sqlite_path(url)] if p]
    elif getattr(args, "store", None):
        out += [p for p in [sqlite_path(args.store)] if p]
    return out


@pytest.mark.parametrize("unit", SERVICES, ids=[u.name for u in SERVICES])
def test_service_can_write_what_it_writes(unit: Path,
                                          with_example_credentials: Callable[[str], str]) -> None:
    """ProtectSystem=strict leaves only StateDirectory= and ReadWritePaths= writable."""
    assert read_unit(unit)["Service"]["ProtectSystem"] == "strict"
    paths = written_paths(unit, with_example_credentials)
    assert paths, f"{unit.name}: found nothing it writes"
    for p in paths:
        assert any(p.is_relative_to(d) for d in writable(unit)), \
            f"{unit.name} writes {p} but may write only {writable(unit)}"


def test_reload_and_privileged_ports() -> None:
    agent = read_unit(SYSTEMD / "privtel-agent.service")["Service"]
    assert agent["ExecReload"] == "/bin/kill -HUP $MAINPID"
    text = (SYSTEMD / "privtel-agent.service").read_text()
    assert "# AmbientCapabilities=CAP_NET_BIND_SERVICE" in text
    assert agent["AmbientCapabilities"] == ""
