"""The prediction service over real HTTP: the built bento served by `mlops serve` on loopback, small fraud lake."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml
import dagster as dg
import polars as pl
import pytest

from mlops_assets.core.lake import scan_table, table_path
from mlops_assets.core.models.modeling import fitted_columns, rows_to_pandas
from mlops_assets.core.models.registry import open_registry
from mlops_assets.core.serving.prediction_log import read_day
from mlops_assets.definitions import build_definitions
from tests.helpers import BODY, KEY, QUIET, Served, answered_count, call, kill_server, post, stop, until

# One worker runs the whole file: its module fixtures (a served bento, a materialized run) are set up once.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("service")]


def logged_today(data: Path) -> Any:
    return read_day(data / "prediction_log" / "fraud", datetime.now(UTC).date())


PROCESSES: dict[str, subprocess.Popen[bytes]] = {}


@pytest.fixture(scope="module")
def service(served: Served) -> Iterator[str]:
    url, PROCESSES["serve"] = served.start("serve")
    yield url
    stop(PROCESSES["serve"])


def test_the_server_listens_on_loopback_only_by_default_and_never_logs_the_api_key(
    service: str, served: Served
) -> None:
    import psutil

    root = psutil.Process(PROCESSES["serve"].pid)
    listening = {
        (c.laddr.ip, c.laddr.port)
        for p in [root, *root.children(recursive=True)]
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    port = int(service.rsplit(":", 1)[1])
    assert ("127.0.0.1", port) in listening and all(ip == "127.0.0.1" for ip, _ in listening), listening
    assert post(f"{service}/predict", {"request": BODY}, key="wrong-key")[0] == 401
    assert post(f"{service}/predict", {"request": BODY})[0] == 200
    assert KEY not in (served.home / "serve.log").read_text()  # neither the right key nor what was sent
    assert "wrong-key" not in (served.home / "serve.log").read_text()


def test_predict_answers_with_the_champion_and_logs_it(service: str, served: Served) -> None:
    status, answer = post(f"{service}/predict", {"request": {**BODY, "request_id": "req-1"}})
    assert status == 200, answer
    assert answer["request_id"] == "req-1" and answer["model_version"] == "1"
    assert 0.0 <= answer["score"] <= 1.0 and answer["decision"] == (answer["score"] >= 0.5)
    assert answer["degraded"] is False
    status, unknown = post(f"{service}/predict", {"request": {**BODY, "customer_id": "c999999", "request_id": "req-2"}})
    assert status == 200 and unknown["reason"].startswith("no online features for")

    # Flushed every log_flush_seconds (1 s); a busy machine may be a little late.
    until(lambda: {"req-1", "req-2"} <= set(logged_today(served.data)["request_id"]))
    logged = logged_today(served.data)
    row = logged.filter(logged["request_id"] == "req-1").row(0, named=True)
    assert row["model_version"] == "1" and row["score"] == answer["score"]
    # The served score is the registered model's score on the feature vector the service used (and logged).
    registry = open_registry(str(served.data), served.tracking)
    model = registry.load_sklearn("fraud", "1")
    vector = json.loads(row["features"])
    assert vector["amount"] == 120.5
    assert model.predict_proba(rows_to_pandas([vector], fitted_columns(model)))[0, 1] == answer["score"]


def test_bad_requests_get_a_400_naming_the_field_logged_as_one_warning(service: str, served: Served) -> None:
    status, error = post(f"{service}/predict", {"request": {"customer_id": "c000001", "amount": -3, "channel": "fax"}})
    assert status == 400
    fields = {tuple(d["loc"]) for d in error["detail"]}
    assert fields == {("request", "amount"), ("request", "channel")}
    status, error = post(f"{service}/predict", {"request": {"amount": 3}})
    assert status == 400 and ("request", "customer_id") in {tuple(d["loc"]) for d in error["detail"]}
    status, error = post(f"{service}/predict", {"request": {**BODY, "amount": "a lot"}})
    assert status == 400 and ("request", "amount") in {tuple(d["loc"]) for d in error["detail"]}
    status, error = post(f"{service}/predict", {"request": {**BODY, "customer_id": "DROP TABLE"}})
    assert status == 400 and [tuple(d["loc"]) for d in error["detail"]] == [("request", "customer_id")]
    status, error = post(f"{service}/predict_batch", {"requests": [BODY, {**BODY, "colour": "red"}]})
    assert status == 400 and [tuple(d["loc"]) for d in error["detail"]] == [("requests", 1, "colour")]  # unknown
    with urllib.request.urlopen(f"{service}/docs.json", timeout=5) as response:
        assert "/predict" in json.loads(response.read())["paths"]
    # Each is the client's mistake: one WARNING line naming the fields, no ERROR with a traceback.
    log = (served.home / "serve.log").read_text()
    assert "Traceback" not in log and "Exception on /predict" not in log
    warnings = [line for line in log.splitlines() if "answered 400" in line]
    assert len(warnings) == 5 and all("WARNING" in line for line in warnings), warnings
    assert any("POST /predict answered 400: request.amount: Input should be greater" in w for w in warnings)
    assert any("requests.1.colour: Extra inputs are not permitted" in w for w in warnings)


def test_a_body_over_the_size_limit_gets_a_413(service: str) -> None:
    status, error = post(f"{service}/predict", {"request": {**BODY, "request_id": "x" * 1_000_000}})
    assert status == 413 and "the limit of /predict" in error["error"]
    assert post(f"{service}/predict", {"request": BODY})[0] == 200


def test_predict_batch_scores_each_request_as_predict_does(service: str) -> None:
    bodies = [
        {"customer_id": f"c{i:06d}", "amount": 10.0 * (i + 1), "channel": "pos", "request_id": f"batch-{i}"}
        for i in range(5)
    ]
    status, answers = post(f"{service}/predict_batch", {"requests": bodies})
    assert status == 200, answers
    assert [a["request_id"] for a in answers] == [f"batch-{i}" for i in range(5)]
    for i, (body, answer) in enumerate(zip(bodies, answers, strict=True)):
        _, single = post(f"{service}/predict", {"request": {**body, "request_id": f"single-{i}"}})
        assert single["score"] == answer["score"]


def test_the_api_key_guards_predictions_and_models_but_not_health(service: str) -> None:
    body = json.dumps({"request": BODY}).encode()
    assert call(f"{service}/predict", body, {"authorization": f"Bearer {KEY}"})[0] == 200
    no_key, bare = "no API key: send it as X-API-Key", "the Authorization header must be 'Bearer KEY'"
    refused = [  # (path, method, headers, what the 401 says)
        ("/predict", "POST", {}, no_key),
        ("/predict_batch", "POST", {"x-api-key": "wrong"}, "wrong API key"),
        ("/predict", "POST", {"authorization": KEY}, bare),  # the key without its scheme
        ("/predict", "POST", {"authorization": f"Basic {KEY}"}, bare),
        ("/models", "POST", {}, no_key),  # it names the live versions
        ("/models", "GET", {}, no_key),
    ]
    for path, method, headers, sentence in refused:
        status, answer_headers, error = call(f"{service}{path}", body if method == "POST" else None, headers, method)
        assert status == 401 and answer_headers["WWW-Authenticate"] == 'Bearer realm="mlops"', (path, headers)
        assert error["error"].startswith(sentence) and error["detail"] is None, (path, headers, error)
    for path in ("/livez", "/readyz", "/metrics"):
        with urllib.request.urlopen(f"{service}{path}", timeout=5) as response:
            assert response.status == 200


def test_bentoml_client_and_our_metrics(service: str) -> None:
    with bentoml.SyncHTTPClient(service, token=KEY) as client:
        answer = client.predict(request=BODY)
        assert answer["model_version"] == "1"
    assert answered_count(service) >= 1


def test_a_second_serve_on_a_taken_port_fails_in_one_line_and_leaves_the_running_service_alone(
    service: str, served: Served
) -> None:
    assert post(f"{service}/predict", {"request": BODY})[0] == 200
    before, port = answered_count(service), service.rsplit(":", 1)[1]
    second = served.cli("serve", "fraud", "--port", port)
    assert second.returncode == 1 and second.stderr.strip().count("\n") == 0, second.stderr
    assert f"port {port} on 127.0.0.1 is in use" in second.stderr and "--port" in second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    assert answered_count(service) == before  # its metrics are its own: the failed serve emptied nothing
    assert _models(service)["champion"] == "1"


def _models(service: str) -> dict[str, str]:
    """The versions answering now, from /models (which names the pipeline it serves, too)."""
    models = dict(post(f"{service}/models", {})[1])
    assert models.pop("pipeline") == "fraud"
    return models


def test_challenger_shadow_promotion_and_rollback_reach_the_running_service(service: str, served: Served) -> None:
    registry = open_registry(str(served.data), served.tracking)
    registry.set_challenger("fraud", registry.register_again("fraud", "1"))
    until(lambda: _models(service) == {"champion": "1", "challenger": "2"})
    status, answer = post(f"{service}/predict", {"request": {**BODY, "request_id": "shadowed"}})
    assert status == 200 and answer["model_version"] == "1"  # the shadow never answers
    until(lambda: "shadowed" in set(logged_today(served.data)["request_id"]))
    row = logged_today(served.data).filter(request_id="shadowed").row(0, named=True)
    assert (row["shadow_version"], row["shadow_score"]) == ("2", row["score"])  # same artifacts, same score

    # Live traffic whose labels exist (request ids are transaction ids): the gate compares v2 with v1 on it.
    labels = scan_table(table_path(served.data, "fraud", "raw_labels")).collect()
    sample = pl.concat([labels.filter(is_fraud=1).head(40), labels.filter(is_fraud=0).head(260)])
    fields = ["customer_id", "amount", "merchant_category", "channel", "country"]
    requests = [
        {**{f: row[f] for f in fields}, "request_id": row["transaction_id"]} for row in sample.iter_rows(named=True)
    ]
    for start in range(0, len(requests), 100):
        assert post(f"{service}/predict_batch", {"requests": requests[start : start + 100]})[0] == 200
    sent = {r["request_id"] for r in requests}
    until(lambda: sent <= set(logged_today(served.data)["request_id"]))
    _ingest_todays_log(served)
    refused = served.cli("promote", "fraud", "--from-shadow")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "stays challenger" in refused.stderr and "improves on the champion by +0.0000" in refused.stderr
    assert _models(service) == {"champion": "1", "challenger": "2"}

    promoted = served.cli("promote", "fraud", "2", "--reason", "shadowed without disagreement")
    assert promoted.returncode == 0, promoted.stderr
    until(lambda: post(f"{service}/predict", {"request": BODY})[1]["model_version"] == "2")
    rolled_back = served.cli("rollback", "fraud")
    assert rolled_back.returncode == 0, rolled_back.stderr
    until(lambda: post(f"{service}/predict", {"request": BODY})[1]["model_version"] == "1")
    assert _models(service) == {"champion": "1"}


def test_sigkill_under_load_loses_at_most_one_unflushed_batch(service: str, served: Served) -> None:
    """Clients record every answered request; after SIGKILL the log holds all of them but the last batch. The
    service already running beside it (same pipeline, same data folder) keeps its own metrics throughout."""
    assert post(f"{service}/predict", {"request": BODY})[0] == 200  # answered here, whatever ran before
    until(lambda: answered_count(service) > 0, what="the running service's count of answers")
    before = answered_count(service)  # a wiped metrics folder would show as fewer
    url, process = served.start("kill")
    folders = sorted(p.name for p in (served.data / "serving" / "fraud" / "metrics").iterdir())
    assert len(folders) == 2 and len({name.rsplit("-", 2)[1] for name in folders}) == 2  # one per serve (port)
    answered: list[str] = []
    killed = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not killed.is_set():
            request_id = f"kill-{n}-{i}"
            try:
                status, _ = post(f"{url}/predict", {"request": {**BODY, "request_id": request_id}})
            except OSError:
                return  # the server is gone
            if status == 200:
                answered.append(request_id)
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    # Killed under load after a few flush intervals, once enough requests were answered (on a busy machine that
    # takes longer than usual).
    started = time.monotonic()
    while time.monotonic() - started < 3.5 or (len(answered) < 50 and time.monotonic() - started < 60):
        time.sleep(0.1)
    assert kill_server(process) >= 2  # the server and its worker
    killed.set()
    for thread in threads:
        thread.join()

    logged = logged_today(served.data).filter(logged_today(served.data)["request_id"].str.starts_with("kill-"))
    ids = logged["request_id"].to_list()
    assert len(ids) == len(set(ids))
    lost = set(answered) - set(ids)
    batch_size = 200  # serving.log_batch_size: one process, so fewer than one batch may be lost
    print(f"SIGKILL under load: {len(answered)} answered, {len(ids)} logged, {len(lost)} lost (bound {batch_size})")
    assert len(answered) >= 50 and len(lost) < batch_size, (len(answered), len(lost))
    assert answered_count(service) == before  # the killed server's answers were never counted by the other one

    for _ in range(2):  # ingesting twice gives the same table
        table = _ingest_todays_log(served)
        kills = table.filter(table["request_id"].str.starts_with("kill-"))
        assert sorted(kills["request_id"].to_list()) == sorted(ids)


def _ingest_todays_log(served: Served) -> pl.DataFrame:
    """Materialize today's partition of the prediction log asset; the whole Delta table after it."""
    job = build_definitions(served.specs, str(served.data), tracking_uri=served.tracking).resolve_job_def("fraud_daily")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=datetime.now(UTC).date().isoformat(),
            asset_selection=[dg.AssetKey(["fraud", "prediction_log"])],
            run_config=QUIET,
        )
    assert result.success
    return scan_table(table_path(served.data, "fraud", "prediction_log")).collect()


def test_the_bento_carries_what_bentoml_containerize_builds_from(served: Served) -> None:
    """The container recipe: the bento's Dockerfile and its requirements, pinned to the versions tested here
    (building the image itself needs a Docker engine, which this machine lacks)."""
    from importlib.metadata import version

    from mlops_assets.core.serving.bundle import RUNTIME_PACKAGES, bento_name

    home = served.data / "bentoml" / "bentos" / bento_name("fraud")
    bento = home / (home / "latest").read_text().strip()
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile and "requirements.txt" in dockerfile and "EXPOSE 3000" in dockerfile
    requirements = set((bento / "env" / "python" / "requirements.txt").read_text().split())
    assert {f"{package}=={version(package)}" for package in RUNTIME_PACKAGES} <= requirements
    assert (bento / "src" / "specs" / "fraud.yaml").exists() and (bento / "src" / "mlops_assets").is_dir()
