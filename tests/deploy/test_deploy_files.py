"""Compose and Kubernetes cannot run here, so their files are checked against the
real CLI and config loaders: every `privtel ...` command a shipped file starts or
documents is accepted by the CLI's own parser, and every config, policy and key
file it names exists in what the operator installs and loads with the loader the
service uses. The Kubernetes init containers are run for real, on volumes laid
out as the kubelet would, so the files the collector and the API open are the
ones they would get, with the modes they would get."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import re
import shlex
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_kit import (
    DEPLOY,
    ROOT,
    CommandLine,
    all_commands,
    k8s_deployments,
    k8s_docs,
    run,
    tool,
)

from agents import config as agent_config
from collector import config as collector_config
from collector.runtime import load_keys
from collector.search import TenantKeys
from pipelines.config import ConfigError, require_private
from pipelines.retention import parse_policy
from privtel.cli import build_parser
from privtel.cli import main as privtel_main

PARSER = build_parser()
COMMANDS = all_commands()
# Made by the operator, not shipped (the comments above each file say how).
OUT_OF_BAND_COMPOSE = {"./keys", "./tls", "./tenant-keys"}
# What deploy/k8s/README.md has the operator create: secret -> key -> file of
# `privtel keys init` (None: any file, e.g. a certificate of the operator's CA).
SECRETS: dict[str, dict[str, str | None]] = {
    "privtel-collector-keys": {"collector.key": "collector.key",
                               "agent-agent1.pub": "agent-agent1.pub"},
    "privtel-tenant-keys": {"tenant-acme.key": "tenant-acme.key"},
    "privtel-mqtt-ca": {"ca.crt": None},
    "privtel-api-tls": {"tls.crt": None, "tls.key": None},
}
Resolve = Callable[[Path], Path | None]


def parse(cmd: CommandLine | list[str], where: str = "") -> argparse.Namespace:
    """The CLI's own parser; argparse exits on a wrong option, which fails the test."""
    if isinstance(cmd, CommandLine):
        argv, where = cmd.argv, cmd.where
    else:
        argv = cmd
    try:
        return PARSER.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `privtel {shlex.join(argv)}` is refused by the CLI")


# --- where a path a command names comes from, per kind of deployment ---

def systemd_resolver(cmd: CommandLine) -> Resolve:
    def resolve(p: Path) -> Path | None:
        shipped = DEPLOY / "examples" / p.name
        return shipped if p.parent == Path("/etc/privtel") and shipped.exists() else None
    return resolve


def compose_resolver(cmd: CommandLine) -> Resolve:
    mounts = []
    for v in cmd.context["service"].get("volumes", []):
        src, dst = v.split(":")[:2]
        if src.startswith("."):
            mounts.append((Path(dst), src))

    def resolve(p: Path) -> Path | None:
        for dst, src in sorted(mounts, key=lambda m: -len(str(m[0]))):
            if p == dst or p.is_relative_to(dst):
                if src in OUT_OF_BAND_COMPOSE:
                    return None
                return DEPLOY / "compose" / src / p.relative_to(dst)
        pytest.fail(f"{cmd.where}: {p} is not mounted into the container")
    return resolve


# --- Kubernetes: volumes as the kubelet lays them out, init containers run ---

@pytest.fixture(scope="module")
def key_material(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys") / "keys"
    assert privtel_main(["keys", "init", "--dir", str(d), "--agent-id", "agent1",
                         "--tenant", "acme"]) == 0
    return d


def _configmaps() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["data"] for d in k8s_docs() if d["kind"] == "ConfigMap"}


def _fill_volume(vol: dict[str, Any], where: Path, keys: Path) -> None:
    """Files as the kubelet writes them under fsGroup: mode 0440 whatever defaultMode."""
    where.mkdir(parents=True)
    if "configMap" in vol:
        items = _configmaps()[vol["configMap"]["name"]]
    elif "secret" in vol:
        name = vol["secret"]["secretName"]
        assert name in SECRETS, f"secret {name} is not in deploy/k8s/README.md's list"
        items = {k: (keys / src).read_text() if src else f"{k} of the operator\n"
                 for k, src in SECRETS[name].items()}
    else:
        assert "emptyDir" in vol, vol
        return
    for k, text in items.items():
        (where / k).write_text(text)
        (where / k).chmod(0o440)


@pytest.fixture(scope="module")
def k8s_roots(tmp_path_factory: pytest.TempPathFactory, key_material: Path) -> dict[str, Path]:
    """Per Deployment: its volumes filled, then its init containers run with their
    mount paths pointed at them."""
    sh = tool("sh", "dash")
    roots = {}
    for name, dep in k8s_deployments().items():
        pod = dep["spec"]["template"]["spec"]
        root = tmp_path_factory.mktemp(name)
        for vol in pod["volumes"]:
            _fill_volume(vol, root / vol["name"], key_material)
        for init in pod.get("initContainers", []):
            assert init["command"][:2] == ["sh", "-c"], init["command"]
            script = init["command"][2]
            for m in sorted(init["volumeMounts"], key=lambda m: -len(m["mountPath"])):
                script = script.replace(m["mountPath"], str(root / m["name"]))
            r = run([sh, "-c", script])
            assert r.returncode == 0, f"{name}/{init['name']}: {r.stderr}"
        roots[name] = root
    return roots


def k8s_resolver(cmd: CommandLine, roots: dict[str, Path]) -> Resolve:
    root = roots[cmd.context["deployment"]["metadata"]["name"]]
    mounts = cmd.context["container"]["volumeMounts"]

    def resolve(p: Path) -> Path | None:
        for m in sorted(mounts, key=lambda m: -len(m["mountPath"])):
            if p.is_relative_to(m["mountPath"]):
                return root / m["name"] / p.relative_to(m["mountPath"])
        pytest.fail(f"{cmd.where}: {p} is not mounted into the container")
    return resolve


# --- the checks ---

def _existing(resolve: Resolve, p: Path | None, what: str, *, private: bool = False
              ) -> Path | None:
    if p is None:
        return None
    local = resolve(p)
    if local is None:
        return None  # made by the operator
    assert local.is_file(), f"{what} {p} -> {local} does not exist"
    if private:
        require_private(str(local), local.stat().st_mode)
    return local


def check_collector(cfg_path: Path, resolve: Resolve, strict_modes: bool) -> None:
    local = resolve(cfg_path)
    assert local is not None and local.is_file(), f"config {cfg_path} is not shipped"
    if strict_modes:
        assert stat.S_IMODE(local.stat().st_mode) & 0o077 == 0
    cfg = collector_config.parse(local.read_text(), str(local), base=cfg_path.parent)
    policy = _existing(resolve, cfg.retention_policy, "retention policy")
    if policy is not None:
        assert parse_policy(policy.read_text(), str(policy)).gaps == []
    if cfg.mqtt_url.startswith("mqtts://"):
        _existing(resolve, cfg.ca_file, "broker CA")
    keys = [_existing(resolve, k, "private key", private=strict_modes)
            for k in cfg.private_keys]
    pubs = [_existing(resolve, a.public_key, "agent key") for a in cfg.agents]
    if strict_modes:  # everything is in place: the collector's own key loader reads them
        assert None not in keys and None not in pubs
        local_cfg = dataclasses.replace(
            cfg, private_keys=tuple(keys),  # type: ignore[arg-type]
            agents=tuple(dataclasses.replace(a, public_key=p)  # type: ignore[arg-type]
                         for a, p in zip(cfg.agents, pubs, strict=True)))
        agent_keys, collector_keys = load_keys(local_cfg)
        assert set(agent_keys) == {a.agent_id for a in cfg.agents} and collector_keys


def check_api(args: argparse.Namespace, resolve: Resolve, strict_modes: bool) -> None:
    assert args.store and args.store.startswith(("sqlite:///", "postgresql://"))
    host = args.listen.rsplit(":", 1)[0]
    assert not ipaddress.ip_address(host).is_loopback, "the API is deployed for remote clients"
    assert args.tls_cert and args.tls_key and not args.insecure_no_tls, "the API needs TLS"
    _existing(resolve, Path(args.tls_cert), "TLS certificate")
    _existing(resolve, Path(args.tls_key), "TLS key", private=strict_modes)
    assert args.tenant_keys
    local = resolve(args.tenant_keys)
    if local is not None:
        assert sorted(TenantKeys.from_dir(local).tenants) == ["acme"]


def check_command(cmd: CommandLine, resolve: Resolve, strict_modes: bool,
                  fill: Callable[[str], str]) -> None:
    args = parse(cmd)
    if args.command == "collector" or (args.command == "retention" and args.config):
        check_collector(args.config, resolve, strict_modes)
    elif args.command == "agent":
        local = resolve(args.config)
        assert local is not None, f"{cmd.where}: agent config {args.config} is not shipped"
        cfg = agent_config.parse(fill(local.read_text()), str(local), base=args.config.parent)
        assert cfg.metrics_listen, "the agent's metrics are scraped: metrics_listen is set"
        host, port = cfg.metrics_listen
        targets = [t for f in sorted((DEPLOY / "prometheus" / "agents").glob("*.yml"))
                   for t in yaml.safe_load(f.read_text())]
        assert {"targets": [f"{host}:{port}"], "labels": {
            "tenant": cfg.tenant, "site": cfg.site, "agent": cfg.agent_id}} in targets, \
            "deploy/prometheus/agents/ does not scrape the example agent as configured"
    elif args.command == "api":
        check_api(args, resolve, strict_modes)
    else:
        pytest.fail(f"{cmd.where}: no check for `privtel {args.command}`")


def test_every_deployment_kind_starts_every_service() -> None:
    started = {(c.where.split("/")[0], c.argv[0]) for c in COMMANDS}
    for kind in ("systemd", "compose", "k8s"):
        assert {(kind, "collector"), (kind, "api")} <= started, kind
    assert ("systemd", "agent") in started and ("systemd", "retention") in started


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if not c.where.startswith("k8s/")],
                         ids=lambda c: c.where)
def test_command_lines(cmd: CommandLine,
                       with_example_credentials: Callable[[str], str]) -> None:
    resolver = systemd_resolver if cmd.where.startswith("systemd/") else compose_resolver
    check_command(cmd, resolver(cmd), strict_modes=False, fill=with_example_credentials)


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.where.startswith("k8s/")],
                         ids=lambda c: c.where)
def test_k8s_command_lines(cmd: CommandLine, k8s_roots: dict[str, Path],
                           with_example_credentials: Callable[[str], str]) -> None:
    check_command(cmd, k8s_resolver(cmd, k8s_roots), strict_modes=True,
                  fill=with_example_credentials)


def test_k8s_without_the_init_copy_the_collector_refuses_its_config(
        k8s_roots: dict[str, Path]) -> None:
    """Why the init containers exist: the kubelet's 0440 is refused."""
    cm = k8s_roots["privtel-collector"] / "config" / "collector.toml"
    assert stat.S_IMODE(cm.stat().st_mode) == 0o440
    with pytest.raises(ConfigError, match="chmod 600"):
        collector_config.load(cm)


def test_k8s_pods_are_restricted_and_mount_no_secret_directly() -> None:
    for name, dep in k8s_deployments().items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        direct = {v["name"] for v in pod["volumes"] if "secret" in v or "configMap" in v}
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "limits" in c["resources"], f"{name}/{c['name']}"
        for c in pod["containers"]:
            assert not direct & {m["name"] for m in c["volumeMounts"]}, \
                f"{name}/{c['name']} mounts a Secret or ConfigMap the kubelet made 0440"


def test_k8s_readme_lists_every_secret() -> None:
    readme = (DEPLOY / "k8s" / "README.md").read_text()
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert "README.md" in (DEPLOY / "k8s" / "kustomization.yaml").read_text()
    for res in kust["resources"]:
        assert (DEPLOY / "k8s" / res).exists(), res
    names = set(re.findall(r"secretName: ([\w-]+)|secretKeyRef: \{name: ([\w-]+)",
                           "\n".join((DEPLOY / "k8s" / r).read_text()
                                     for r in kust["resources"])))
    for name in {n for pair in names for n in pair if n}:
        assert f"secret generic {name} " in readme or f"secret tls {name} " in readme, name
    for name, items in SECRETS.items():
        for key in items:
            assert key in readme or name == "privtel-api-tls", (name, key)


def test_yaml_files_parse() -> None:
    files = sorted(p for ext in ("*.yml", "*.yaml") for p in DEPLOY.rglob(ext))
    assert len(files) >= 15
    for p in files:
        assert [d for d in yaml.safe_load_all(p.read_text()) if d is not None], p


# --- what the files say in prose: paths and commands in comments ---

def deploy_texts() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".json")


def prose(p: Path) -> str:
    """The comments of a deploy file (all of a Markdown file), continuations joined."""
    lines = p.read_text().splitlines()
    if p.suffix != ".md":
        lines = [ln.split("#", 1)[1] for ln in lines if "#" in ln]
    return re.sub(r"\\\n\s*", " ", "\n".join(lines))


def test_paths_named_in_deploy_files_exist() -> None:
    for p in deploy_texts():
        for m in re.findall(r"(?<![\w/.-])(deploy/[\w./-]*[\w-])", p.read_text()):
            made = m == "deploy/compose/.env"  # from .env.example, by the operator
            assert made or (ROOT / m).exists(), f"{p.relative_to(ROOT)} names {m}"
        for m in re.findall(r"(?<![\w/.-])((?:\.\./)*[\w-]+\.(?:md|yml|yaml|toml))\b", prose(p)):
            if m.startswith("../") or m == "README.md":
                assert (p.parent / m).exists(), f"{p.relative_to(ROOT)} names {m}"


def documented_commands() -> list[tuple[str, list[str]]]:
    """`privtel <command> ... --option ...` in comments and code blocks: command
    lines an operator would paste (a bare mention in prose has no option)."""
    commands = set(PARSER._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    out = []
    for p in deploy_texts():
        for m in re.finditer(r"(?:^|[\s`(])privtel ([a-z][^#`\n;&|)]*)", prose(p), re.M):
            if m.group(1).split()[0] in commands and " --" in m.group(1):
                argv = [a for a in shlex.split(m.group(1)) if a != "..."]
                out.append((str(p.relative_to(ROOT)), argv))
    return out


def test_commands_in_comments_are_real() -> None:
    found = documented_commands()
    assert any(argv[:2] == ["users", "add"] for _, argv in found)
    assert any(argv[:2] == ["keys", "init"] for _, argv in found)
    for where, argv in found:
        parse(argv, where)
