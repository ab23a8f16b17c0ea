"""The spool alone: durable across reopen, sequence continuity, bounds with counted drops."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from transport_helpers import records

from agents.spool import Spool, SpoolConfig
from pipelines.config import ConfigError, Section


def sealer(seen: list[int]):  # type: ignore[no-untyped-def]
    def seal(seq: int, recs: list) -> tuple[str, float, bytes]:  # type: ignore[type-arg]
        seen.append(seq)
        return os.urandom(16).hex(), time.time(), b"x" * (1000 * len(recs))
    return seal


def test_durable_across_reopen_and_sequence_continues(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    seqs: list[int] = []
    s = Spool(path)
    s.add_records(records("t1", 5))
    assert s.seal_pending(3, sealer(seqs)) == 3
    s.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    s = Spool(path)
    assert s.pending_count() == 2
    assert s.seal_pending(10, sealer(seqs)) == 2
    assert seqs[1] == seqs[0] + 1
    assert [b.seq for b in s.peek(10)] == seqs
    assert [b.records for b in s.peek(10)] == [3, 2]
    s.delete([seqs[0]])
    assert [b.seq for b in s.peek(10)] == [seqs[1]]
    assert s.peek(10, exclude=frozenset({seqs[1]})) == []
    s.close()


def test_failed_seal_leaves_records_pending(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db")
    s.add_records(records("t1", 4))

    def boom(seq: int, recs: list) -> tuple[str, float, bytes]:  # type: ignore[type-arg]
        raise RuntimeError("seal failed")

    with pytest.raises(RuntimeError):
        s.seal_pending(10, boom)
    assert s.pending_count() == 4 and s.stats().batches == 0
    seqs: list[int] = []
    s.seal_pending(10, sealer(seqs))
    assert s.stats().batches == 1


def test_size_bound_drops_oldest_with_counter_and_log(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    drops: list[tuple[int, int, str]] = []
    s = Spool(tmp_path / "s.db", max_bytes=5000, on_drop=lambda *a: drops.append(a))
    seqs: list[int] = []
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            s.add_records(records("t1", 2))
            s.seal_pending(10, sealer(seqs))  # 2000 bytes each
    st = s.stats()
    assert st.bytes <= 5000
    assert [b.seq for b in s.peek(10)] == seqs[-2:]
    assert (st.dropped_batches, st.dropped_records) == (2, 4)
    assert sum(d[0] for d in drops) == 2
    assert "spool dropped" in caplog.text


def test_age_bound(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", max_age_s=60)
    s.add_records(records("t1", 2))
    s.seal_pending(10, lambda seq, recs: ("a" * 32, time.time() - 120, b"old"))
    s.add_records(records("t1", 2))
    s.seal_pending(10, lambda seq, recs: ("b" * 32, time.time(), b"new"))
    s.enforce_bounds()
    assert [b.data for b in s.peek(10)] == [b"new"]
    assert s.stats().dropped_batches == 1


def test_spool_config_is_strict() -> None:
    cfg = SpoolConfig.parse(Section({"max_bytes": 1 << 20, "drain_rate": 5}, "a.toml", "spool"))
    assert (cfg.max_bytes, cfg.drain_rate, cfg.inflight) == (1 << 20, 5.0, 16)
    with pytest.raises(ConfigError, match=r"a.toml: spool.max_byte: unknown key"):
        SpoolConfig.parse(Section({"max_byte": 1}, "a.toml", "spool"))
    with pytest.raises(ConfigError, match=r"spool.inflight: must be at least 1"):
        SpoolConfig.parse(Section({"inflight": 0}, "a.toml", "spool"))
    with pytest.raises(ConfigError, match=r"spool.max_age_s: must be a number"):
        SpoolConfig.parse(Section({"max_age_s": "1d"}, "a.toml", "spool"))
