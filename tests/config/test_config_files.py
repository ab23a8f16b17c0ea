"""One bad config file per validation rule, each with the message an operator sees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agents import config as agent_config
from collector import config as collector_config
from pipelines.config import ConfigError

DATA = Path(__file__).with_name("testdata")
BAD = sorted(DATA.glob("*_bad_*.toml"))
LOADERS = {"agent": agent_config.load, "collector": collector_config.load}


def _copy(src: Path, tmp: Path, mode: int = 0o600) -> Path:
    dst = tmp / src.name
    shutil.copy(src, dst)
    dst.chmod(mode)
    return dst


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_is_refused_with_its_message(path: Path, tmp_path: Path) -> None:
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    loader = LOADERS[path.name.split("_")[0]]
    with pytest.raises(ConfigError) as e:
        loader(_copy(path, tmp_path))
    assert expect in str(e.value)
    assert str(e.value).startswith(str(tmp_path / path.name))


@pytest.mark.parametrize("kind", ["agent", "collector"])
def test_good_config_loads(kind: str, tmp_path: Path) -> None:
    cfg = LOADERS[kind](_copy(DATA / f"{kind}_ok.toml", tmp_path))
    assert cfg.file == str(tmp_path / f"{kind}_ok.toml")


@pytest.mark.parametrize("kind", ["agent", "collector"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_config_readable_by_others_is_refused(kind: str, mode: int, tmp_path: Path) -> None:
    path = _copy(DATA / f"{kind}_ok.toml", tmp_path, mode)
    with pytest.raises(ConfigError, match=f"holds secrets but has mode {mode:04o}"):
        LOADERS[kind](path)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    cfg = agent_config.load(_copy(DATA / "agent_ok.toml", tmp_path))
    assert cfg.keys.signing_key == tmp_path / "k" / "agent.key"
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.devices[0].port == 161 and cfg.devices[0].tenant == "acme"
    ccfg = collector_config.load(_copy(DATA / "collector_ok.toml", tmp_path))
    assert ccfg.store_url == f"sqlite:///{tmp_path / 'privtel.db'}"


@pytest.mark.parametrize("kind", ["agent", "collector"])
def test_deploy_examples_are_valid(kind: str, tmp_path: Path,
                                   with_example_credentials) -> None:  # type: ignore[no-untyped-def]
    """The examples an operator copies must pass the same strict validation."""
    example = Path(__file__).parents[2] / "deploy" / "examples" / f"{kind}.toml"
    path = _copy(example, tmp_path)
    if kind == "agent":  # SNMP secrets are named in it: give it a store that holds them
        path.write_text(with_example_credentials(path.read_text()))
    cfg = LOADERS[kind](path)
    assert cfg.mqtt_url if kind == "collector" else cfg.devices  # type: ignore[union-attr]


def test_size_limits_agree_between_agent_collector_broker_and_docs(tmp_path: Path) -> None:
    from pipelines.envelope import MAX_BATCH_BYTES

    root = Path(__file__).parents[2]
    cfg = collector_config.load(_copy(DATA / "collector_ok.toml", tmp_path))
    conf = (root / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    broker = int(conf.split("message_size_limit", 1)[1].split()[0])
    example = (root / "deploy" / "examples" / "collector.toml").read_text()
    assert cfg.max_batch_bytes == MAX_BATCH_BYTES == broker == 1 << 20
    assert f"max_batch_bytes = {MAX_BATCH_BYTES}" in example
    assert "at most 1 MiB by default" in (root / "docs" / "wire-format.md").read_text()


def test_agent_binding_to_sites_and_kinds(tmp_path: Path) -> None:
    src = (DATA / "collector_ok.toml").read_text()
    assert "[[agents]]" in src
    f = tmp_path / "c.toml"
    f.write_text(src.replace("[[agents]]\n", '[[agents]]\nsites = ["hq"]\nkinds = ["metric"]\n',
                             1))
    f.chmod(0o600)
    entry = collector_config.load(f).agents[0]
    assert entry.allows("hq", "metric")
    assert not entry.allows("branch", "metric") and not entry.allows("hq", "inventory")
    assert collector_config.load(_copy(DATA / "collector_ok.toml", tmp_path)).agents[0].allows(
        "anywhere", "inventory")
