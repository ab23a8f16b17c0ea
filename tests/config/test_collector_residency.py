"""The collector config names its region, each tenant its allowed regions (both table
shapes `privtel ropa` and `retention check` read), the sequence jump bound and the audit
key; what would be refused later is refused at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector import config as collector_config
from collector.admission import Admission
from pipelines.config import ConfigError

BASE = (Path(__file__).parent / "testdata" / "collector_ok.toml").read_text()


def load(tmp_path: Path, collector_extra: str = "",
         tail: str = "") -> collector_config.CollectorConfig:
    text = BASE.replace("[collector]\n", f"[collector]\n{collector_extra}\n", 1) + tail
    f = tmp_path / "c.toml"
    f.write_text(text)
    f.chmod(0o600)
    return collector_config.load(f)


def test_defaults_enforce_no_residency(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    assert cfg.region is None and cfg.tenants == {} and cfg.max_sequence_jump == 1_000_000
    assert cfg.audit_key_file is None
    assert Admission.from_config(cfg).region is None


@pytest.mark.parametrize("tenants", [
    '[tenants.acme]\nregions = ["ng", "za"]\njurisdiction = "ng"\n',
    '[[tenants]]\nname = "acme"\nregions = ["ng", "za"]\njurisdiction = "ng"\n',
])
def test_region_and_tenant_regions(tmp_path: Path, tenants: str) -> None:
    cfg = load(tmp_path, 'region = "za"\nmax_sequence_jump = 5000\naudit_key = "a.key"',
               "\n" + tenants)
    assert cfg.region == "za" and cfg.max_sequence_jump == 5000
    assert cfg.audit_key_file == tmp_path / "a.key"
    assert cfg.tenant_regions() == {"acme": frozenset({"ng", "za"})}
    assert cfg.jurisdictions() == {"acme": "ng"}
    assert Admission.from_config(cfg).tenant_regions == {"acme": frozenset({"ng", "za"})}


@pytest.mark.parametrize(("extra", "tail", "where"), [
    ('region = "Lagos!"', "", "collector.region"),
    ("max_sequence_jump = 0", "", "collector.max_sequence_jump"),
    ("", '\n[tenants.acme]\nregions = ["NG"]\n', "tenants.acme.regions"),
    ("", '\n[tenants.acme]\nregion = ["ng"]\n', "tenants.acme.region"),
    ("", '\n[tenants."Bad Name"]\nregions = ["ng"]\n', "tenants"),
    ("", '\n[[tenants]]\nname = "acme"\n[[tenants]]\nname = "acme"\n', "name"),
])
def test_bad_values_are_refused_at_load(tmp_path: Path, extra: str, tail: str,
                                        where: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, extra, tail)
    assert where in e.value.key
