"""The spool alone: durable across reopen, sequence continuity, bounds with counted drops."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from transport_helpers import previous_version_spool, records

from agents.spool import Sealed, Spool, SpoolConfig, SpoolConflict
from pipelines.config import ConfigError, Section
from pipelines.record import encode_one


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
    cfg = SpoolConfig.parse(Section({"linger_s": 0.02, "group_max_records": 5000}, "a.toml",
                                    "spool"))
    assert (cfg.linger_s, cfg.group_max_records) == (0.02, 5000)
    with pytest.raises(ConfigError, match=r"spool.linger_s"):
        SpoolConfig.parse(Section({"linger_s": 5}, "a.toml", "spool"))


def test_many_batches_commit_in_one_transaction_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = Spool(path)
    recs = records("t1", 7)
    s.add_records(recs[:4])
    s.add_records(recs[4:])
    p = s.take_pending(100)
    assert p.data == [encode_one(r) for r in recs]  # stored as encoded once
    first, end = p.seq, p.position(len(p) - 1)
    batches = [Sealed(first + i, os.urandom(16).hex(), time.time(), n, b"x" * 10)
               for i, n in enumerate((3, 2, 2))]
    with pytest.raises(SpoolConflict):  # the number was used meanwhile: nothing changes
        s.commit_sealed(first + 1, [replace(b, seq=b.seq + 1) for b in batches], end)
    with pytest.raises(ValueError, match="consecutively"):
        s.commit_sealed(first, batches[::-1], end)
    assert (s.pending_count(), s.stats().batches) == (7, 0)
    before = s.transactions
    s.commit_sealed(first, batches, end)
    assert s.transactions == before + 1  # three batches, one transaction (one fsync)
    s.close()
    s = Spool(path)
    assert s.pending_count() == 0
    assert [(b.seq, b.records) for b in s.peek(10)] == [(first, 3), (first + 1, 2),
                                                         (first + 2, 2)]
    p = s.take_pending(10)
    assert (p.seq, p.data) == (first + 3, [])
    s.close()


def test_sealing_not_committed_leaves_the_records(tmp_path: Path) -> None:
    """A crash between taking records and committing their batches (the sealer died)
    leaves the records pending under the same next sequence number."""
    path = tmp_path / "s.db"
    s = Spool(path)
    s.add_records(records("t1", 3))
    p = s.take_pending(10)
    s.close()  # no commit_sealed: as if killed while sealing
    s = Spool(path)
    assert s.take_pending(10) == p
    s.close()


def test_spool_from_before_grouped_rows_opens(tmp_path: Path) -> None:
    """A spool written by the previous version (one record per row, no `pkids`) opens as
    is; the key ids are read from the stored JSON once, the records stay byte for byte."""
    path = tmp_path / "s.db"
    recs = [*records("t1", 2), *(replace(r, fields={**r.fields, "pkid": "k-old"})
                                 for r in records("t1", 2, start=2))]
    previous_version_spool(path, recs, next_seq=41)
    s = Spool(path)
    p = s.take_pending(10)
    assert p.seq == 41
    assert p.data == [encode_one(r) for r in recs]
    assert p.pkids == [None, None, "k-old", "k-old"]
    assert s.pending_count() == 4
    seqs: list[int] = []
    assert s.seal_pending(3, sealer(seqs)) == 3 and seqs == [41]
    s.close()
    s = Spool(path)  # opening again does not migrate again
    p = s.take_pending(10)
    assert (p.data, p.pkids) == ([encode_one(recs[3])], ["k-old"])
    s.close()


def test_a_group_is_consumed_in_part_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = Spool(path)
    recs = [*records("t1", 5), *(replace(r, fields={**r.fields, "pkid": "k2"})
                                 for r in records("t1", 3, start=5))]
    s.add_records(recs[:6])  # one group (one row) of six
    s.add_records(recs[6:])
    assert s.pending_count() == 8
    seqs: list[int] = []
    assert s.seal_pending(4, sealer(seqs)) == 4  # four of the first group's six
    s.close()
    s = Spool(path)
    p = s.take_pending(100)
    assert p.data == [encode_one(r) for r in recs[4:]]
    assert p.pkids == [None, "k2", "k2", "k2"]
    assert (p.position(0), p.position(1), p.position(2)) == ((p.rows[0], 0), (p.rows[0], 1),
                                                             (p.rows[1], 0))
    assert s.pending_count() == 4 and p.seq == seqs[0] + 1
    assert s.seal_pending(3, sealer(seqs)) == 3  # the group's rest and one of the next
    assert s.take_pending(100).data == [encode_one(recs[7])]
    s.close()


def test_writes_from_threads_share_one_commit_and_fail_alone(tmp_path: Path) -> None:
    """Writers that queue while a commit is running are committed together by the next
    one (one transaction); one that fails is undone alone, the others are stored."""
    s = Spool(tmp_path / "s.db")
    s.add_records(records("t1", 3))
    p = s.take_pending(10)
    late = Sealed(p.seq + 5, os.urandom(16).hex(), time.time(), 3, b"x")
    before = s.transactions
    with ThreadPoolExecutor(41) as ex:
        with s._lock:  # as if a commit were under way: every writer queues behind it
            adds = [ex.submit(s.add_records, records("t1", 2, start=10 + 2 * i))
                    for i in range(40)]
            bad = ex.submit(s.commit_sealed, late.seq, [late], p.position(2))
            deadline = time.monotonic() + 30
            while len(s._queued) < 41 and time.monotonic() < deadline:
                time.sleep(0.01)
        for f in adds:
            f.result()
        with pytest.raises(SpoolConflict):
            bad.result()
    assert s.transactions == before + 1
    assert s.pending_count() == 83 and s.stats().batches == 0
    s.close()
