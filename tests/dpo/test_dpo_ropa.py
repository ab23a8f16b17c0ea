"""`privtel ropa` reports what the configuration and policy it is given say, and
changes when they do."""

from __future__ import annotations

import tomllib
from itertools import product
from pathlib import Path

import orjson
import pytest
from factories import write_private

from collector import config as collector_config
from collector.auth import NEEDS_TOTP
from pipelines.record import Kind
from pipelines.retention import OPERATIONAL, parse_policy
from privtel.cli import main as privtel
from privtel.commands import ropa
from privtel.commands.keys import key_files, write_key_files

ROOT = Path(__file__).resolve().parents[2]
MULTI = ROOT / "deploy" / "examples" / "retention-jurisdictions.toml"


def _collector(tmp: Path, *, url: str = "mqtts://127.0.0.1:8883", extra: str = "",
               encrypted: bool = False) -> Path:
    write_key_files(tmp / "k", "lt1", "lagos-telco",
                    passphrase=b"pass-phrase-1" if encrypted else None, force=True)
    write_key_files(tmp / "k2", "other1", "cape-retail", force=True)
    files = key_files(tmp / "k", "lt1", "lagos-telco")
    other = key_files(tmp / "k2", "other1", "cape-retail")
    return write_private(tmp / "collector.toml", f"""
[collector]
store = "sqlite:///store.db"
metrics_listen = "127.0.0.1:19108"
{extra}
[mqtt]
url = "{url}"
cert_file = "c.crt"
[keys]
private_keys = ["{files['collector_key']}"]
[[agents]]
id = "lt1"
tenant = "lagos-telco"
public_key = "{files['agent_pub']}"
[[agents]]
id = "lt2"
tenant = "lagos-telco"
public_key = "{files['agent_pub']}"
[[agents]]
id = "other1"
tenant = "cape-retail"
public_key = "{other['agent_pub']}"
""")


def _ropa(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert privtel(["ropa", *args]) == 0
    return capsys.readouterr().out


def test_ropa_json_matches_the_configuration_and_policy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _collector(tmp_path)
    r = orjson.loads(_ropa(capsys, "--tenant", "lagos-telco", "--collector-config", str(cfg),
                           "--policy", str(MULTI), "--format", "json"))
    policy = parse_policy(MULTI.read_text(), str(MULTI))
    assert r["tenant"] == "lagos-telco" and r["agents"] == ["lt1", "lt2"]
    assert r["jurisdiction"] == "ng"
    assert r["services"] == ["dispatch_support", "managed_network", "security_monitoring"]
    rows = {(p["kind"], p["service"]): p for p in r["processing"]}
    assert len(rows) == len(Kind) * 3
    for kind, svc in product([k.value for k in Kind], r["services"]):
        rule = policy.resolve(kind, "lagos-telco", "ng", svc)
        klass = policy.classes[rule.klass]
        row = rows[(kind, svc)]
        assert (row["class"], row["legal_basis"], row["purpose"]) == (
            klass.name, rule.legal_basis, klass.purpose)
        assert row["retention"] == ("until contract end" if klass.days is None
                                    else f"{klass.days:g} days")
    assert set(r["retention"]["classes"]) == set(policy.classes)
    assert set(r["retention"]["operational"]) == set(OPERATIONAL)
    assert r["retention"]["operational"]["audit_log"]["period"] == "2190 days"
    assert r["regions"] == {"collector": "not configured", "tenant_allowed": "not configured"}
    assert r["transfers"] == "not configured"
    assert r["recipients"][0]["where"] == "127.0.0.1:19108"
    sec = r["security"]
    assert sec["in_transit"].startswith("MQTT over TLS with client certificates")
    assert sec["collector_private_keys"] == "not encrypted (file mode 0600 only)"
    assert sec["mfa_actions"] == sorted(a.value for a in NEEDS_TOTP)
    assert sec["at_rest"] == "store sqlite: SQLite file (file not present here), not " \
                             "encrypted by privtel"
    assert sec["pseudonymisation"]["ip"] == "prefix"


def test_ropa_follows_changes_in_the_configuration(tmp_path: Path) -> None:
    cfg = _collector(tmp_path, url="mqtt://127.0.0.1:1883", encrypted=True)
    (tmp_path / "store.db").write_bytes(b"")
    (tmp_path / "store.db").chmod(0o640)
    agent = write_private(tmp_path / "agent.toml", """
[agent]
id = "lt1"
tenant = "lagos-telco"
site = "soc"
state_dir = "state"
[keys]
signing_key = "k/agent-lt1.key"
collector_public_key = "k/collector.pub"
tenant_key = "k/tenant-lagos-telco.key"
[privacy]
modes = { ip = "token", text = "drop" }
""")
    text = cfg.read_text().replace("[collector]\n", '[collector]\nregion = "af-west"\n', 1)
    cfg.write_text(text + """
[tenants.lagos-telco]
regions = ["af-west"]
home = "eu-west"
[tenants.cape-retail]
regions = ["af-south"]
[[safeguards]]
from = "eu-west"
to = "af-west"
basis = "SCC"
[[outputs.remote_write]]
name = "noc-prom"
url = "https://prom.example.net/api/v1/write"
""")
    raw = tomllib.loads(cfg.read_text())
    policy = parse_policy(MULTI.read_text(), str(MULTI))
    r = ropa.build("lagos-telco", collector_config.load(cfg), raw, policy, str(MULTI),
                   ropa._privacy([agent]))
    assert r["regions"] == {"collector": "af-west", "tenant_allowed": ["af-west"]}
    assert [(t["tenant"], t["from"], t["to"], t["safeguard"]) for t in r["transfers"]] == [
        ("lagos-telco", "eu-west", "af-west", "SCC")]
    assert r["recipients"][-1]["recipient"] == "output noc-prom"
    sec = r["security"]
    assert sec["in_transit"].startswith("MQTT without TLS;")
    assert sec["collector_private_keys"] == "encrypted PKCS#8"
    assert sec["at_rest"].startswith("store sqlite: SQLite file (mode 0640)")
    assert (sec["pseudonymisation"]["ip"], sec["pseudonymisation"]["text"]) == ("token", "drop")
    md = ropa.render_md(r)
    assert "- Collector region: af-west" in md and "- Tenant's allowed regions: af-west" in md
    assert '"safeguard":"SCC"' in md and "adequacy" not in md
    assert "- Collector private keys: encrypted PKCS#8" in md


def test_ropa_markdown_lists_each_processing_row(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _collector(tmp_path)
    md = _ropa(capsys, "--tenant", "cape-retail", "--collector-config", str(cfg),
               "--policy", str(MULTI))
    assert md.startswith("# Record of processing: tenant cape-retail\n")
    assert "- Jurisdiction: za" in md and "- Agents: other1" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| log | security_monitoring |")]
    assert len(rows) == 1 and "| security_logs |" in rows[0] and "POPIA" in rows[0]
    assert "| 180 days |" in rows[0]


def test_ropa_refuses_an_unknown_tenant(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _collector(tmp_path)
    assert privtel(["ropa", "--tenant", "nobody", "--collector-config", str(cfg),
                    "--policy", str(MULTI)]) == 2
    assert "tenant 'nobody' is in neither" in capsys.readouterr().err
