"""Serving features with the online store (a Redis of this test's own) stopped and restarted."""

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mlops_assets.core.features.online import RedisOnlineStore, ResilientFeatures, sync_view
from mlops_assets.core.features.views import FEATURE_TIMESTAMP
from mlops_assets.core.lake import PARTITION_COLUMN
from mlops_assets.definitions import build_definitions
from mlops_assets.spec import PipelineSpec, load_specs
from tests.helpers import BODY, QUIET, Served, free_port, post, service_missing, stop

pytestmark = pytest.mark.services
NOW = datetime(2026, 1, 20, 12)


class RedisProcess:
    """A redis-server on a free loopback port, without persistence, that the test may kill and restart."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        service_missing("redis-server is not installed")
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.kill()


def _sync(spec: PipelineSpec, store: RedisOnlineStore) -> None:
    rows = pl.DataFrame(
        {"customer_id": ["c1", "c2"], FEATURE_TIMESTAMP: [NOW - timedelta(hours=1), NOW - timedelta(days=10)]}
    )
    for view in spec.feature_views:
        names = spec.feature_views[view].feature_names() or ["online_share_7d"]
        frame = rows.with_columns(*[pl.lit(1.0).alias(n) for n in names])
        sync_view(
            store, spec.name, view, frame.with_columns(pl.lit("x").alias(PARTITION_COLUMN)).lazy(), ["customer_id"]
        )


def test_store_down_degrades_with_cache_and_recovers(redis_process: RedisProcess) -> None:
    (spec,) = load_specs()
    store = RedisOnlineStore(f"redis://127.0.0.1:{redis_process.port}/0")
    _sync(spec, store)
    features = ResilientFeatures(spec, store, timeout=0.5)
    requests = [{"customer_id": "c1", "amount": 5.0}, {"customer_id": "c3", "amount": 1.0}]
    normal = features.vectors(requests, NOW)
    assert [v.degraded for v in normal] == [False, False]
    assert normal[0].values["count_1h"] == 1.0 and normal[1].missing == list(spec.feature_views)

    redis_process.kill()
    started = time.monotonic()
    degraded = features.vectors(requests, NOW)
    assert time.monotonic() - started < 2  # never hangs
    assert all(v.degraded for v in degraded)
    assert "online store unavailable" in degraded[0].reason and "features from cache" in degraded[0].reason
    assert degraded[0].values["count_1h"] == 1.0 and degraded[0].values["amount"] == 5.0
    assert "no cached features" in degraded[1].reason and degraded[1].values["count_1h"] is None
    # A cached row past its TTL is not served either.
    late = features.vectors(requests[:1], NOW + timedelta(days=40))
    assert late[0].degraded and late[0].values["count_1h"] is None

    redis_process.start()  # back, but empty (no persistence): the sync rewrites everything it lost
    _sync(spec, store)
    recovered = features.vectors(requests, NOW)
    assert [v.degraded for v in recovered] == [False, False]
    assert recovered[0].values["count_1h"] == 1.0


def test_the_served_bento_degrades_while_redis_is_down_and_recovers(
    served: Served, redis_process: RedisProcess
) -> None:
    url = f"redis://127.0.0.1:{redis_process.port}/0"
    sync_online_store(served, url)
    service, process = served.start("redis", MLOPS_ONLINE_STORE_URL=url)
    try:
        status, normal = post(f"{service}/predict", {"request": BODY})
        assert status == 200 and not normal["degraded"] and normal["model_version"] == "1"

        redis_process.kill()
        for _ in range(20):
            started = time.monotonic()
            status, answer = post(f"{service}/predict", {"request": BODY})
            assert time.monotonic() - started < 2  # never hangs
            assert status == 200 and answer["degraded"] and answer["model_version"] == "fallback"
            assert "online store unavailable" in answer["reason"] and answer["score"] == 0.02  # the spec's fallback
        with urllib.request.urlopen(f"{service}/metrics", timeout=5) as response:
            assert 'mlops_degraded_responses_total{fallback="true",pipeline="fraud"} 20.0' in response.read().decode()

        redis_process.start()  # back, empty: the online assets sync everything again
        sync_online_store(served, url)
        status, recovered = post(f"{service}/predict", {"request": BODY})
        assert status == 200 and not recovered["degraded"] and recovered["model_version"] == "1"
        assert recovered["score"] == normal["score"]
    finally:
        stop(process)


def sync_online_store(served: Served, url: str) -> None:
    defs = build_definitions(served.specs, str(served.data), tracking_uri=served.tracking, online_store_url=url)
    (spec,) = load_specs(served.specs)
    keys = [dg.AssetKey([spec.name, "online", view]) for view in spec.feature_views]
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("fraud_daily").execute_in_process(
            instance=instance, asset_selection=keys, run_config=QUIET
        )
    assert result.success
