"""The prediction service over real HTTP: `mlops serve` (BentoML) on loopback against the small fraud lake."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.definitions import build_definitions
from mlops_assets.prediction_log import read_day
from tests.conftest import DAYS, QUIET, free_port, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def service(lake: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    specs, data = lake
    home = tmp_path_factory.mktemp("home")
    tracking = f"sqlite:///{home / 'mlflow.db'}"  # a registry of its own: other tests promote in the shared one
    defs = build_definitions(specs, str(data), tracking_uri=tracking)
    with dg.DagsterInstance.ephemeral() as instance:
        # A champion, and the online store synced (the daily job ends with it).
        assert defs.resolve_job_def("fraud_training").execute_in_process(instance=instance, run_config=QUIET).success
        tags = {"dagster/asset_partition_range_start": DAYS[1], "dagster/asset_partition_range_end": DAYS[1]}
        assert (
            defs.resolve_job_def("fraud_daily")
            .execute_in_process(instance=instance, tags=tags, run_config=QUIET)
            .success
        )
    port = free_port()
    log = (home / "serve.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlops_assets.cli",
            "--specs",
            str(specs),
            "--data-dir",
            str(data),
            "serve",
            "fraud",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "BENTOML_HOME": str(home / "bentoml"), "MLFLOW_TRACKING_URI": tracking},
        cwd=home,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/readyz", process, home / "serve.log", timeout=90)
    yield url, data
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_predict_answers_with_the_champion_and_logs_it(service: tuple[str, Path]) -> None:
    url, data = service
    body = {
        "customer_id": "c000042",
        "amount": 120.5,
        "merchant_category": "electronics",
        "channel": "online",
        "country": "FR",
        "request_id": "req-1",
    }
    status, answer = _post(f"{url}/predict", {"request": body})
    assert status == 200, answer
    assert answer["request_id"] == "req-1" and answer["model_version"] == "1"
    assert 0.0 <= answer["score"] <= 1.0 and answer["decision"] == (answer["score"] >= 0.5)
    assert answer["degraded"] is False
    status, unknown = _post(f"{url}/predict", {"request": {**body, "customer_id": "nobody", "request_id": "req-2"}})
    assert status == 200 and unknown["reason"].startswith("no online features for")

    time.sleep(1.5)  # one flush interval
    logged = read_day(data / "prediction_log" / "fraud", datetime.now(UTC).date())
    assert {"req-1", "req-2"} <= set(logged["request_id"])
    row = logged.filter(logged["request_id"] == "req-1").row(0, named=True)
    assert row["model_version"] == "1" and abs(row["score"] - answer["score"]) < 1e-12
    assert json.loads(row["features"])["amount"] == 120.5


def test_bad_requests_get_a_400_naming_the_field(service: tuple[str, Path]) -> None:
    url, _ = service
    status, error = _post(f"{url}/predict", {"request": {"customer_id": "c1", "amount": -3, "channel": "fax"}})
    assert status == 400
    fields = {tuple(d["loc"]) for d in error["detail"]}
    assert fields == {("request", "amount"), ("request", "channel")}
    status, error = _post(f"{url}/predict", {"request": {"amount": 3}})
    assert status == 400 and ("request", "customer_id") in {tuple(d["loc"]) for d in error["detail"]}
    with urllib.request.urlopen(f"{url}/docs.json", timeout=5) as response:
        assert "/predict" in json.loads(response.read())["paths"]


def test_predict_batch_scores_each_request_as_predict_does(service: tuple[str, Path]) -> None:
    url, _ = service
    bodies = [
        {"customer_id": f"c{i:06d}", "amount": 10.0 * (i + 1), "channel": "pos", "request_id": f"batch-{i}"}
        for i in range(5)
    ]
    status, answers = _post(f"{url}/predict_batch", {"requests": bodies})
    assert status == 200, answers
    assert [a["request_id"] for a in answers] == [f"batch-{i}" for i in range(5)]
    for body, answer in zip(bodies, answers, strict=True):
        _, single = _post(f"{url}/predict", {"request": {**body, "request_id": "single"}})
        assert single["score"] == answer["score"]
