"""End-to-end receipts: the signed message alone, and the spool keeping batches until one."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from test_spool import sealer
from transport_helpers import records

from agents.spool import Spool
from pipelines import keys
from pipelines.receipt import (
    Outcome,
    ReceiptError,
    Receipts,
    group_by_agent,
    open_receipts,
    receipt_topic,
    sign_receipts,
)

B1, B2 = "a" * 32, "b" * 32


def test_signed_receipt_round_trips_and_binds_agent() -> None:
    k = keys.generate_signing_key()
    msg = sign_receipts(Receipts("t1", "edge-1", 1.5, ((B1, Outcome.STORED),
                                                       (B2, Outcome.PARKED))), k)
    got = open_receipts(msg, k.public_key(), tenant="t1", agent_id="edge-1")
    assert got.items == ((B1, Outcome.STORED), (B2, Outcome.PARKED))
    with pytest.raises(ReceiptError, match="another agent"):
        open_receipts(msg, k.public_key(), tenant="t1", agent_id="edge-2")
    with pytest.raises(ReceiptError, match="signature"):
        open_receipts(msg, keys.generate_signing_key().public_key(), tenant="t1",
                      agent_id="edge-1")
    tampered = msg.replace(b"parked", b"stored")
    with pytest.raises(ReceiptError, match="signature"):
        open_receipts(tampered, k.public_key(), tenant="t1", agent_id="edge-1")
    for junk in (b"", b"PTR1", b"garbage" * 20):
        with pytest.raises(ReceiptError):
            open_receipts(junk, k.public_key(), tenant="t1", agent_id="edge-1")
    assert receipt_topic("t1", "edge-1") == "privtel/v1/t1/edge-1/receipts"


def test_malformed_items_refused_even_when_signed() -> None:
    k = keys.generate_signing_key()
    msg = sign_receipts(Receipts("t1", "e", 0.0, (("not-a-batch-id", Outcome.STORED),)), k)
    with pytest.raises(ReceiptError, match="items"):
        open_receipts(msg, k.public_key(), tenant="t1", agent_id="e")


def test_group_by_agent_keeps_order() -> None:
    rows = [("t", "a", B1, Outcome.STORED), ("t", "b", B2, Outcome.DUPLICATE),
            ("t", "a", B2, Outcome.QUARANTINED)]
    assert group_by_agent(rows) == {("t", "a"): [(B1, Outcome.STORED), (B2, Outcome.QUARANTINED)],
                                    ("t", "b"): [(B2, Outcome.DUPLICATE)]}


def test_spool_keeps_published_batches_until_receipt_and_offers_them_again(
        tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db")
    s.add_records(records("t1", 4))
    seqs: list[int] = []
    s.seal_pending(2, sealer(seqs))
    s.seal_pending(2, sealer(seqs))
    first, second = s.peek(10)
    s.mark_published([first.seq], now=100.0)
    assert [b.seq for b in s.peek(10)] == [second.seq]  # PUBACK freed the window, not the batch
    st = s.stats()
    assert (st.batches, st.unreceipted, st.oldest_published) == (2, 1, 100.0)
    assert [b.seq for b in s.peek(10, resend_before=99.0)] == [second.seq]
    assert [b.seq for b in s.peek(10, resend_before=101.0)] == [first.seq, second.seq]
    s.close()
    s = Spool(tmp_path / "s.db")  # a restart keeps the unreceipted batch
    assert s.stats().unreceipted == 1
    assert s.receipted([first.batch_id, "f" * 32]) == 1
    assert s.receipted([first.batch_id]) == 0
    assert s.stats().batches == 1
    s.close()


def test_old_spool_file_gains_the_published_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE batches (seq INTEGER PRIMARY KEY, batch_id TEXT NOT NULL UNIQUE, "
               "created REAL NOT NULL, records INTEGER NOT NULL, size INTEGER NOT NULL, "
               "data BLOB NOT NULL)")
    db.execute("INSERT INTO batches VALUES (7, ?, ?, 3, 4, x'00010203')", (B1, time.time()))
    db.commit()
    db.close()
    s = Spool(path)
    assert [b.seq for b in s.peek(5)] == [7]
    assert s.receipted([B1]) == 1 and s.stats().batches == 0
    s.close()


def test_published_marks_live_beside_the_batches_and_go_with_them(tmp_path: Path) -> None:
    """A batch dropped by the bounds or receipted leaves no published mark behind; a spool
    that kept the mark in its batches row (before `sent`) keeps knowing it."""
    path = tmp_path / "s.db"
    s = Spool(path, max_bytes=1 << 16)
    s.add_records(records("t1", 4))
    seqs: list[int] = []
    s.seal_pending(2, sealer(seqs))
    s.seal_pending(2, sealer(seqs))
    a, b = s.peek(10)
    s.mark_published([a.seq, b.seq], now=50.0)
    s.max_age_s = 1.0
    s.enforce_bounds(now=time.time() + 10)  # both too old: dropped
    assert s.stats().unreceipted == 0 and s.stats().batches == 0
    s.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM sent").fetchone()[0] == 0
    db.execute("ALTER TABLE batches ADD COLUMN published REAL")
    db.execute("INSERT INTO batches VALUES (7, ?, ?, 3, 4, x'00010203', 42.0)", (B1, time.time()))
    db.commit()
    db.close()
    s = Spool(path)
    assert s.stats().oldest_published == 42.0
    assert s.peek(5) == [] and [x.seq for x in s.peek(5, resend_before=43.0)] == [7]
    s.close()
