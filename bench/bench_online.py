"""Benchmark: online store lookups (`mlops_assets.core.features.online.lookup`), single entity and 100-entity batches.

For each backend (SQLite file; Redis on 127.0.0.1:6379 when reachable) the store is filled with one feature view
of `--entities` customers (15 features each), then random lookups are timed: p50 and p99 in microseconds.

Baseline, in the same run: the bare client call that fetches the same stored values (one `SELECT ... IN` on an
open connection for SQLite, one `HMGET` for Redis) without decoding, TTL checks or row objects. The ratio is the
cost of the library's layer on top of the store's own round trip.
"""

from __future__ import annotations

import argparse
import socket
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from mlops_assets.core.features.online import (
    OnlineStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
    entity_id,
    lookup,
    sync_view,
)
from mlops_assets.core.features.views import FEATURE_TIMESTAMP
from mlops_assets.core.lake import PARTITION_COLUMN

NOW = datetime(2026, 3, 1)


def features(entities: int, seed: int = 0) -> pl.LazyFrame:
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame(
        {
            "customer_id": [f"c{i:06d}" for i in range(entities)],
            FEATURE_TIMESTAMP: [NOW - timedelta(hours=int(h)) for h in rng.integers(1, 48, entities)],
            **{f"f{j}": rng.normal(size=entities) for j in range(15)},
        }
    )
    return frame.with_columns(pl.col(FEATURE_TIMESTAMP).dt.date().cast(pl.String).alias(PARTITION_COLUMN)).lazy()


def timed(fn: Callable[[], object]) -> float:
    """Microseconds one call takes."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e6


def run(name: str, store: OnlineStore, bare: Callable[[list[str]], object], entities: int, repeat: int) -> None:
    sync_view(store, "bench", "spend", features(entities), ["customer_id"])
    rng = np.random.default_rng(1)
    print(f"\n{name}: {entities:,} entities stored, {repeat} lookups per row (interleaved)")
    print(f"{'batch':>6}  {'variant':<10} {'p50 us':>9} {'p99 us':>9}  ratio p50")
    for batch in (1, 100):
        picks = [[f"c{i:06d}" for i in rng.integers(0, entities, batch)] for _ in range(repeat)]
        lib_times, bare_times = [], []
        for ids in picks:
            keys = [(i,) for i in ids]
            lib_times.append(timed(lambda k=keys: lookup(store, "bench", "spend", k, timedelta(days=1), NOW)))
            bare_times.append(timed(lambda i=ids: bare(i)))
        lib = (statistics.median(lib_times), float(np.percentile(lib_times, 99)))
        base = (statistics.median(bare_times), float(np.percentile(bare_times, 99)))
        print(f"{batch:>6}  {'library':<10} {lib[0]:>9.0f} {lib[1]:>9.0f}  {lib[0] / base[0]:.2f}x")
        print(f"{batch:>6}  {'bare call':<10} {base[0]:>9.0f} {base[1]:>9.0f}  1.00x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "online.db"
        sqlite_store = SQLiteOnlineStore(path)

        connection = sqlite3.connect(path)  # opened once, as the store keeps its connection

        def bare_sqlite(ids: list[str]) -> object:
            marks = ",".join("?" * len(ids))
            query = "SELECT entity, payload FROM online_features WHERE pipeline='bench' AND view='spend'"
            return connection.execute(f"{query} AND entity IN ({marks})", ids).fetchall()

        run("SQLite", sqlite_store, bare_sqlite, args.entities, args.repeat)
        connection.close()
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError as exc:
        print(f"\nRedis: skipped, not reachable on 127.0.0.1:6379 ({exc})")
        return
    redis_store = RedisOnlineStore("redis://127.0.0.1:6379/0", prefix=f"mlops-bench-{uuid.uuid4().hex[:8]}")
    try:
        key = f"{redis_store.prefix}:bench:spend"
        hmget = redis_store.client.hmget
        run("Redis", redis_store, lambda ids: hmget(key, [entity_id([i]) for i in ids]), args.entities, args.repeat)
    finally:
        for stale in redis_store.client.scan_iter(f"{redis_store.prefix}:*"):
            redis_store.client.delete(stale)


if __name__ == "__main__":
    main()
