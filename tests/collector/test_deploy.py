"""The files an operator installs from deploy/ parse, agree with the code, and are hardened."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml

from collector import config as collector_config
from pipelines.retention import parse_policy

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def k8s_docs() -> list[dict]:
    docs = []
    for p in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(p.read_text()) if d]
    return docs


def test_compose_collector_config_is_valid():
    cfg = collector_config.parse((DEPLOY / "compose" / "collector.toml").read_text(),
                                 "collector.toml")
    assert cfg.store_url.startswith("postgresql://")
    assert ":" not in cfg.store_url.split("//", 1)[1].split("@", 1)[0]  # no password inline
    assert cfg.shared_group == "collectors"


def test_compose_is_hardened_and_local():
    c = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    for name, svc in c["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert c["services"]["collector"]["deploy"]["replicas"] >= 2
    ours = [s for s in c["services"].values() if s.get("image", "").startswith("privtel:")]
    assert len(ours) >= 2  # collector and api
    for svc in ours:
        assert "no-new-privileges:true" in svc["security_opt"]
        assert svc["read_only"] is True
        assert svc["cap_drop"] == ["ALL"]
    made_by_operator = {"./keys", "./tls", "./tenant-keys"}  # as compose.yaml's header says
    for svc in c["services"].values():
        for v in svc.get("volumes", []):
            src = v.split(":", 1)[0]
            if src.startswith(".") and src not in made_by_operator:
                assert (DEPLOY / "compose" / src).exists(), src


def test_k8s_manifests_parse_and_configs_are_valid():
    docs = k8s_docs()
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Deployment", "Service"} <= kinds
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    cfg = collector_config.parse(cm["data"]["collector.toml"], "configmap collector.toml")
    assert cfg.shared_group
    policy = parse_policy(cm["data"]["retention.toml"], "configmap retention.toml")
    assert policy.gaps == []
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"privtel-collector", "privtel-api"}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        c = pod["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        if name == "privtel-api":  # TLS on the API's own port
            assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (DEPLOY / "k8s" / res).exists()


@pytest.mark.parametrize("unit", sorted(p.name for p in (DEPLOY / "systemd").glob("*.service")))
def test_systemd_units_are_hardened(unit):
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment, method-assign]
    cp.read(DEPLOY / "systemd" / unit)
    s = cp["Service"]
    assert s["NoNewPrivileges"] == "yes"
    assert s["ProtectSystem"] == "strict"
    assert s["User"] and s["User"] != "root"
    assert s["StateDirectory"]
    assert s["UMask"] == "0077"
    assert s["CapabilityBoundingSet"] == ""
    assert s["AmbientCapabilities"] == ""
    assert (s["ProtectKernelLogs"], s["ProtectProc"]) == ("yes", "invisible")  # purge lacked them


def test_example_retention_policy_is_valid():
    p = DEPLOY / "examples" / "retention.toml"
    policy = parse_policy(p.read_text(), str(p))
    assert policy.gaps == []
    assert policy.default.name == "unclassified"
