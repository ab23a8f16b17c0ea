"""An on-demand purge leaves its entry in the store's hash-chained audit log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from privtel.cli import main


def test_purge_is_audited_in_the_store_chain(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["retention", "purge", "--store", url, "--dry-run"]) == 0
    assert main(["retention", "purge", "--store", url]) == 0
    with sqlite3.connect(tmp_path / "store.db") as db:
        rows = db.execute("select action, detail from audit_log order by seq").fetchall()
    assert [a for a, _ in rows] == ["retention.purge", "retention.purge"]
    assert '"dry_run":true' in rows[0][1] and '"dry_run":false' in rows[1][1]
    capsys.readouterr()
    assert main(["audit", "verify", "--store", url]) == 0
    assert "audit log OK: 2 entries" in capsys.readouterr().out


def test_anchor_file_catches_a_cut_tail(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    anchors = tmp_path / "anchors.ndjson"
    for _ in range(3):
        assert main(["retention", "purge", "--store", url, "--dry-run"]) == 0
    assert main(["audit", "anchor", "--store", url, "--to", str(anchors)]) == 0
    assert main(["retention", "purge", "--store", url, "--dry-run"]) == 0
    assert main(["audit", "anchor", "--store", url, "--to", str(anchors)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--store", url, "--anchors", str(anchors)]) == 0
    assert "4 entries, chain intact, 2 anchors held" in capsys.readouterr().out

    with sqlite3.connect(tmp_path / "store.db") as db:  # cut the last entry off
        db.execute("DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)")
    assert main(["audit", "verify", "--store", url]) == 0  # unseen without anchors
    assert main(["audit", "verify", "--store", url, "--anchors", str(anchors)]) == 1
    assert "cut off the end" in capsys.readouterr().err
    # and a broken log is never anchored
    assert main(["audit", "anchor", "--store", url, "--to", str(anchors)]) == 1
    assert len(anchors.read_text().splitlines()) == 2
