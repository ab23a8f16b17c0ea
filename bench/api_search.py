"""Query API figures on SQLite (or a store URL given as argv[1]): address-index
build rate, the cost of a refresh with nothing new, and search latency for a
page, free text, a pseudonymous /24 and a raw indicator, beside the baseline of
the same first page read with one plain SQL query (no auth, no cursor, no
restriction filter). Prints figures, then one JSON line."""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

# measure the tree this file is in, not whichever checkout the venv has installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from collector.search import AddressIndex, Searcher, SearchQuery, TenantKeys, parse_query
from collector.store import BatchMeta, Db, TaggedRecord, open_db, open_store
from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.record import Kind, Record

N = int(os.environ.get("BENCH_RECORDS", "50000"))
KEY = TenantKey.from_hex("11" * 16 + "22" * 16)


def seed(url: str) -> None:
    p = Pseudonymiser(KEY)
    rnd = random.Random(7)
    store = open_store(url)
    store.migrate()
    t0 = 1_760_000_000.0
    for b in range(N // 1000):
        recs = []
        for i in range(1000):
            a = f"10.{rnd.randrange(4)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
            r = Record(kind=Kind.LOG, tenant="acme", site="hq", device=f"d{i % 50}",
                       name="syslog", fields={"message": f"sshd: Failed password from {a}"},
                       ts=t0 + b * 1000 + i)
            recs.append(TaggedRecord(p.record(r), "logs", "legitimate interest", None))
        store.write_batch(BatchMeta(agent_id="a", batch_id=f"b{b}", seq=b, tenant="acme",
                                    created=t0, received_at=t0), recs)
    store.close()


def timed(fn: object, reps: int = 20) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - t) / reps * 1000


def plain_page(db: Db) -> list[object]:
    with db.tx() as cur:
        return cur.execute("SELECT id, ts, fields FROM records WHERE tenant = ? "
                           "ORDER BY ts, id LIMIT 100", ("acme",)).fetchall()


def main() -> None:
    tmp = tempfile.mkdtemp()
    url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tmp}/bench.db"
    seed(url)
    db = open_db(url)
    keys = TenantKeys({"acme": [KEY]})
    index = AddressIndex(db, min_interval_s=0.0)
    t = time.perf_counter()
    n = index.refresh()
    build = time.perf_counter() - t
    noop = timed(index.refresh)
    index.min_interval_s = 3600
    s = Searcher(db, keys, index)
    net = Pseudonymiser(KEY).ip("10.1.2.0")
    figures = {
        "records": N,
        "index_records_per_s": round(n / build),
        "refresh_noop_ms": round(noop, 2),
        "page_100_ms": round(timed(lambda: s.search(parse_query({"tenant": "acme"}))), 2),
        "baseline_sql_page_100_ms": round(timed(lambda: plain_page(db)), 2),
        "text_ms": round(timed(lambda: s.search(parse_query(
            {"tenant": "acme", "text": "10.1.2."}))), 2),
        "prefix24_ms": round(timed(lambda: s.search(parse_query(
            {"tenant": "acme", "ip": f"{net}/24"}))), 2),
        "indicator_ms": round(timed(lambda: s.search(parse_query(
            {"tenant": "acme", "indicators": ["10.1.2.3", "10.2.0.0/16"]}))), 2),
        "export_all_records_per_s": 0,
    }
    t = time.perf_counter()
    count = sum(1 for _ in s.iterate(SearchQuery(tenant="acme")))
    figures["export_all_records_per_s"] = round(count / (time.perf_counter() - t))
    figures["page_vs_baseline"] = round(
        figures["page_100_ms"] / max(figures["baseline_sql_page_100_ms"], 1e-3), 2)
    for k, v in figures.items():
        print(f"{k:<26} {v}")
    print(orjson.dumps({"bench": "api_search", "backend": db.backend, **figures}).decode())
    db.close()


if __name__ == "__main__":
    main()
