"""The online store contract, on SQLite always and on the machine's Redis when it is reachable."""

import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.core.features.online import (
    OnlineStore,
    RedisOnlineStore,
    ResilientFeatures,
    SQLiteOnlineStore,
    latest_rows,
    lookup,
    sync_view,
)
from mlops_assets.core.features.views import FEATURE_TIMESTAMP
from mlops_assets.core.lake import PARTITION_COLUMN
from mlops_assets.spec import load_specs
from tests.helpers import require_service, until

T0 = datetime(2026, 1, 10, 12)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        yield SQLiteOnlineStore(tmp_path / "online.db")
        return
    require_service("Redis", 6379)
    prefix = f"mlops-test-{uuid.uuid4().hex[:8]}"  # keys of this test only, removed afterwards
    redis_store = RedisOnlineStore("redis://127.0.0.1:6379/0", prefix=prefix)
    yield redis_store
    for key in redis_store.client.scan_iter(f"{prefix}:*"):
        redis_store.client.delete(key)


def _features(rows: list[tuple[str, datetime, float | None]]) -> pl.LazyFrame:
    return pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            FEATURE_TIMESTAMP: [r[1] for r in rows],
            "amount_sum_1d": [r[2] for r in rows],
            PARTITION_COLUMN: [r[1].date().isoformat() for r in rows],
        }
    ).lazy()


def test_latest_row_per_entity_is_what_the_store_serves(store: OnlineStore) -> None:
    features = _features([("a", T0, 1.0), ("a", T0 + timedelta(hours=2), 3.0), ("b", T0, None)])
    assert latest_rows(features, ["customer_id"]).sort("customer_id")["amount_sum_1d"].to_list() == [3.0, None]
    result = sync_view(store, "fraud", "spend", features, ["customer_id"])
    assert (result.entities_written, result.watermark) == (2, (T0 + timedelta(hours=2)).isoformat())
    a, b, unknown = lookup(
        store, "fraud", "spend", [("a",), ("b",), ("zz",)], timedelta(days=1), T0 + timedelta(hours=3)
    )
    assert (a.values, a.feature_timestamp, a.stale) == ({"amount_sum_1d": 3.0}, T0 + timedelta(hours=2), False)
    assert b.values == {"amount_sum_1d": None} and b.found
    assert (unknown.values, unknown.found) == (None, False)


def test_rows_past_the_ttl_are_stale_not_fresh(store: OnlineStore) -> None:
    sync_view(store, "fraud", "spend", _features([("a", T0, 1.0)]), ["customer_id"])
    (fresh,) = lookup(store, "fraud", "spend", [("a",)], timedelta(days=1), T0 + timedelta(days=1))
    (stale,) = lookup(store, "fraud", "spend", [("a",)], timedelta(days=1), T0 + timedelta(days=1, seconds=1))
    assert not fresh.stale and fresh.values == {"amount_sum_1d": 1.0}
    assert stale.stale and stale.values is None and stale.feature_timestamp == T0


def test_a_row_newer_than_the_request_is_never_served(store: OnlineStore) -> None:
    """A replayed request older than the store's latest row: the row valid then is gone, the latest is its future."""
    sync_view(store, "fraud", "spend", _features([("a", T0, 1.0)]), ["customer_id"])
    (at,) = lookup(store, "fraud", "spend", [("a",)], timedelta(days=1), T0)
    (before,) = lookup(store, "fraud", "spend", [("a",)], timedelta(days=1), T0 - timedelta(seconds=1))
    assert not at.ahead and at.values == {"amount_sum_1d": 1.0}
    assert before.ahead and before.values is None and before.found and not before.stale


def test_sync_is_incremental_and_never_goes_back_in_time(store: OnlineStore) -> None:
    sync_view(store, "fraud", "spend", _features([("a", T0, 1.0), ("b", T0, 2.0)]), ["customer_id"])
    later = _features([("a", T0, 1.0), ("b", T0, 2.0), ("b", T0 + timedelta(hours=1), 5.0)])
    assert sync_view(store, "fraud", "spend", later, ["customer_id"]).entities_written == 1  # only b is new
    assert sync_view(store, "fraud", "spend", later, ["customer_id"]).entities_written == 0
    # A replay of an older row (e.g. a crash before the watermark moved) does not overwrite a newer one.
    store.write("fraud", "spend", [("b", T0.isoformat(), '{"amount_sum_1d": 2.0}')])
    (b,) = lookup(store, "fraud", "spend", [("b",)], timedelta(days=1), T0 + timedelta(hours=2))
    assert b.values == {"amount_sum_1d": 5.0}


def test_views_and_pipelines_do_not_mix(store: OnlineStore) -> None:
    sync_view(store, "fraud", "spend", _features([("a", T0, 1.0)]), ["customer_id"])
    assert store.read("fraud", "velocity", ["a"]) == [None]
    assert store.read("other", "spend", ["a"]) == [None]
    assert store.read("fraud", "spend", []) == []


class HangingStore(SQLiteOnlineStore):
    """A store whose reads hang (a server that accepts connections and never answers)."""

    def __init__(self, path: Path, release: threading.Event) -> None:
        super().__init__(path)
        self.release = release

    def read(self, pipeline: str, view: str, entities: Sequence[str]) -> list[str | None]:
        self.release.wait(10)
        return super().read(pipeline, view, entities)


def test_a_hanging_store_never_queues_requests_without_bound(tmp_path: Path) -> None:
    (spec,) = load_specs()
    release = threading.Event()
    features = ResilientFeatures(spec, HangingStore(tmp_path / "online.db", release), timeout=0.05)
    answers = [features.vectors([{"customer_id": "c1", "amount": 1.0}], T0)[0] for _ in range(10)]
    assert all(a.degraded for a in answers)  # four timeouts, then answers at once without waiting on the store
    assert sum("slower than 50 ms" in (a.reason or "") for a in answers) == 4
    assert sum("saturated" in (a.reason or "") for a in answers) == 6
    release.set()  # the hung lookups finish and give their slots back
    until(lambda: not features.vectors([{"customer_id": "c1", "amount": 1.0}], T0)[0].degraded, what="recovery")


def test_syncs_that_open_a_new_sqlite_store_at_once_all_land(tmp_path: Path) -> None:
    """Parallel steps (celery, multiprocess) open the same new SQLite file together: each must get in, not fail
    with 'database is locked' while another switches the file to WAL."""
    for attempt in range(15):
        path, views = tmp_path / f"online_{attempt}.db", [f"view_{i}" for i in range(6)]
        start = threading.Barrier(len(views))

        def sync(view: str, path: Path = path, start: threading.Barrier = start) -> None:
            store = SQLiteOnlineStore(path)  # a connection of its own, as a separate process has
            start.wait()
            store.write("shop", view, [("u1", "2026-03-01T00:00:00", "{}")])
            store.set_watermark("shop", view, "2026-03-01T00:00:00")

        with ThreadPoolExecutor(len(views)) as pool:
            list(pool.map(sync, views))
        store = SQLiteOnlineStore(path)
        assert [store.watermark("shop", view) for view in views] == ["2026-03-01T00:00:00"] * len(views)
