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
