"""Builders shared by the collector tests (imported by basename: tests have no packages)."""

from __future__ import annotations

from factories import BACKENDS, rec

from collector.store import BatchMeta, SqlStore, TaggedRecord
from pipelines.record import Record

__all__ = ["BACKENDS", "fetch", "meta", "rec", "restrict", "tagged"]


def tagged(r: Record, klass: str = "metrics", expires_at: float | None = 1_800_000_000.0
           ) -> TaggedRecord:
    return TaggedRecord(r, klass, "legitimate interest", expires_at)


def meta(batch_id: str = "b1", *, agent_id: str = "agent1", tenant: str = "acme",
         seq: int = 1) -> BatchMeta:
    return BatchMeta(agent_id=agent_id, batch_id=batch_id, seq=seq, tenant=tenant,
                     created=1_700_000_000.0, received_at=1_700_000_001.0)


def restrict(store: SqlStore, record_id: str) -> None:
    """Mark a record restricted the way the DSR API does (plain UPDATE on the table)."""
    with store.tx(write=True) as cur:
        cur.execute("UPDATE records SET restricted = ? WHERE id = ?",
                    (store.dialect.bool(True), record_id))


def fetch(store: SqlStore, record_id: str) -> dict[str, object]:
    """One stored row read back with plain SQL, fields decoded, as the query API does."""
    with store.tx() as cur:
        site, device, fields, klass, basis, expires, restricted = cur.execute(
            "SELECT site, device, fields, retention_class, legal_basis, expires_at, "
            "restricted FROM records WHERE id = ?", (record_id,)).fetchone()
    return {"site": site, "device": device, "fields": store.dialect.json(fields),
            "retention_class": klass, "legal_basis": basis, "expires_at": expires,
            "restricted": bool(restricted)}
