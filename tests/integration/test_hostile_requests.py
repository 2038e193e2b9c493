"""The serving contract under hostile input, over real HTTP against a served bento: one bad request never fails
another, what is logged is exactly what was answered, the rollout is the spec's, no features from the future, every
answer as the OpenAPI document says, and a second server of the same data leaves the first one's metrics alone.

Each server here serves a bento built (as the `<pipeline>_bento` job builds it) from the fixture's specs edited
(replays allowed, `rollout: champion_only` or `canary`, small limits), on a copy of its registry in which a
challenger is waiting.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import requests
import schemathesis

from mlops_assets.core.models.registry import open_registry
from mlops_assets.core.serving.bundle import build_bento
from mlops_assets.core.serving.prediction_log import read_day
from tests.helpers import (
    BODY,
    DAYS,
    KEY,
    POLL_SECONDS,
    Served,
    answered_count,
    call,
    free_port,
    post,
    stop,
    until,
    wait_for_http,
)

# One worker runs the whole file: its module fixtures (a served bento, a materialized run) are set up once.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("hostile")]

MAX_IN_FLIGHT, MAX_BATCH_ROWS = 4, 50
EDITS = {
    "  rollout: shadow": "  rollout: champion_only",
    "  refresh_seconds: 1 ": (
        f"  refresh_seconds: 1\n  allow_replay: true\n  max_in_flight: {MAX_IN_FLIGHT}\n"
        f"  max_batch_rows: {MAX_BATCH_ROWS}\n  log_flush_seconds: 0.2"
    ),
}


def _serve(
    served: Served, home: Path, edits: dict[str, str], data: Path | None = None
) -> tuple[str, Path, subprocess.Popen[bytes], str]:
    """`mlops serve` of a bento built from the fixture's specs edited, on a copy of its registry in which a challenger
    waits, sharing its online store and models; with a data folder of its own (prediction log, metrics), or `data`,
    another server's: (url, log folder, process, the challenger's version)."""
    shutil.copytree(served.specs, home / "specs")
    spec = home / "specs" / "fraud.yaml"
    text = spec.read_text()
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    spec.write_text(text)
    shutil.copy(served.home / "mlflow.db", home / "mlflow.db")
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    registry = open_registry(str(served.data), tracking)
    waiting = registry.register_again("fraud", "1")
    registry.set_challenger("fraud", waiting)
    build_bento("fraud", home / "specs", registry, home / "bentoml")

    if data is None:
        data = home / "data"
        data.mkdir()
        (data / "mlartifacts").symlink_to(served.data / "mlartifacts")
    online = f"sqlite:///{served.data / 'online.db'}"
    port, log = free_port(), home / "serve.log"
    command = [sys.executable, "-m", "mlops_assets.cli", "--specs", str(home / "specs"), "--data-dir", str(data)]
    process = subprocess.Popen(
        [*command, "serve", "fraud", "--port", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={
            **served.env(),
            "MLFLOW_TRACKING_URI": tracking,
            "MLOPS_ONLINE_STORE_URL": online,
            "BENTOML_HOME": str(home / "bentoml"),
        },
        cwd=home,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/readyz", process, log)
    except BaseException:
        stop(process)
        raise
    return url, data / "prediction_log" / "fraud", process, waiting


@pytest.fixture(scope="module")
def hostile(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(url, log folder) of the pipeline served with replays, `champion_only` and small limits."""
    url, folder, process, _ = _serve(served, tmp_path_factory.mktemp("hostile"), EDITS)
    yield url, folder
    stop(process)


@pytest.fixture(scope="module")
def contract(hostile: tuple[str, Path]) -> Any:
    """The hostile server's OpenAPI document (/docs.json), as schemathesis reads it."""
    return schemathesis.openapi.from_url(f"{hostile[0]}/docs.json")


def _as_documented(contract: Any, path: str, response: requests.Response) -> None:
    """Fails unless the document lists the answer's status for POST `path` and the answer matches it (schema,
    media type, headers)."""
    operation = contract[path]["POST"]
    assert operation.responses.find_by_status_code(response.status_code) is not None, (path, response.status_code)
    operation.validate_response(response)  # raises, naming each mismatch


def _logged(folder: Path, prefixes: tuple[str, ...] = ("",)) -> Counter[str]:
    """Today's logged request ids that start with one of `prefixes`, with how often each was logged."""
    ids = read_day(folder, datetime.now(UTC).date())["request_id"].to_list()
    return Counter(i for i in ids if i.startswith(prefixes))


def _until_logged(
    folder: Path, expected: Counter[str], prefixes: tuple[str, ...], timeout: float = POLL_SECONDS
) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while (logged := _logged(folder, prefixes)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return logged


def test_a_poison_row_amid_concurrent_valid_calls_fails_only_its_own_call(hostile: tuple[str, Path]) -> None:
    url, _ = hostile
    poisons: list[dict[str, Any]] = [
        {**BODY, "timestamp": "9999-12-31T23:59:59-01:00"},  # overflowed converting to UTC: a 500 for the batch
        {**BODY, "timestamp": "0001-01-01T00:00:00+01:00"},
        {**BODY, "timestamp": 0},
        {**BODY, "amount": True},
        {**BODY, "customer_id": "c\u0661\u0662\u0663\u0664\u0665\u0666"},  # Arabic-Indic digits
        {**BODY, "customer_id": "c\uff11\uff12\uff13\uff14\uff15\uff16"},  # full-width digits
        {**BODY, "merchant_category": "x" * 5000},
    ]
    valid: list[int] = []
    poisoned: list[int] = []

    def client(n: int) -> None:
        for i in range(6):
            rows = [{**BODY, "request_id": f"poison-valid-{n}-{i}-{j}"} for j in range(5)]
            valid.append(post(f"{url}/predict_batch", {"requests": rows})[0])

    def attacker() -> None:
        for i, poison in enumerate(poisons * 3):
            rows = [{**BODY, "request_id": f"poison-{i}-a"}, poison, {**BODY, "request_id": f"poison-{i}-b"}]
            poisoned.append(post(f"{url}/predict_batch", {"requests": rows})[0])
            poisoned.append(post(f"{url}/predict", {"request": poison})[0])

    # Fewer clients than max_in_flight: none of them is shed, so every valid call must be answered.
    threads = [threading.Thread(target=client, args=(n,)) for n in range(MAX_IN_FLIGHT - 1)]
    threads.append(threading.Thread(target=attacker))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert valid == [200] * len(valid) and len(valid) == 6 * (MAX_IN_FLIGHT - 1)
    assert set(poisoned) == {400} and len(poisoned) == 2 * 3 * len(poisons)


def test_the_log_holds_exactly_the_answers_sent_under_overload_refusals_and_repeats(hostile: tuple[str, Path]) -> None:
    url, folder = hostile
    mine = ("load-", "twice", "too-many-", "same-call")  # other tests' records may still be flushing
    before = _logged(folder, mine)
    statuses: Counter[int] = Counter()
    answered: Counter[str] = Counter()
    lock = threading.Lock()

    def send(path: str, body: dict[str, Any]) -> None:
        status, answer = post(f"{url}{path}", body)
        with lock:
            statuses[status] += 1
            if status == 200:
                answered.update(a["request_id"] for a in (answer if isinstance(answer, list) else [answer]))
            else:
                assert isinstance(answer, dict) and answer.get("error"), answer

    def client(n: int) -> None:
        for i in range(8):
            rows = [{**BODY, "request_id": f"load-{n}-{i}-{j}"} for j in range(10)]
            send("/predict_batch", {"requests": rows})
            send("/predict", {"request": {**BODY, "request_id": f"load-{n}-{i}"}})

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4 * MAX_IN_FLIGHT)]  # sheds some: 429
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then, on a quiet server (these must not be shed):
    too_many = [{**BODY, "request_id": f"too-many-{j}"} for j in range(MAX_BATCH_ROWS + 1)]
    send("/predict_batch", {"requests": too_many})  # refused whole: 413, nothing scored or logged
    send("/predict", {"request": {**BODY, "request_id": "twice"}})
    send("/predict", {"request": {**BODY, "request_id": "twice"}})  # 409: one id, one prediction
    same_call = [{**BODY, "request_id": "same-call"}, {**BODY, "request_id": "same-call"}]
    send("/predict_batch", {"requests": same_call})  # 409 too

    assert statuses[413] == 1 and statuses[409] == 2 and statuses[429] > 0, statuses
    expected = before + answered
    logged = _until_logged(folder, expected, mine)
    assert logged == expected, (sum(logged.values()), sum(expected.values()), statuses)
    assert max(logged.values()) == 1 and "too-many-0" not in logged and "same-call" not in logged


def test_a_call_of_60000_rows_is_refused_whole_before_any_is_scored_or_logged(hostile: tuple[str, Path]) -> None:
    url, folder = hostile
    rows = [{**BODY, "request_id": f"huge-{j}"} for j in range(60_000)]
    body = json.dumps({"requests": rows}).encode()
    assert 8_000_000 < len(body) < 10_000_000  # under the body limit of /predict_batch: refused by its row count
    before = answered_count(url)
    status, _, error = call(f"{url}/predict_batch", body, {"x-api-key": KEY}, timeout=60)
    assert status == 413 and error["detail"] is None, error
    assert error["error"] == (
        f"60,000 requests in one call, more than serving.max_batch_rows ({MAX_BATCH_ROWS}): send them in several calls"
    )
    assert answered_count(url) == before  # not one row was scored
    # Records are flushed in the order they were made: once a later answer is logged, none of the call's can follow.
    assert post(f"{url}/predict", {"request": {**BODY, "request_id": "huge-after"}})[0] == 200
    until(lambda: "huge-after" in _logged(folder), what="the later answer's log record")
    assert set(_logged(folder, ("huge-",))) == {"huge-after"}


def test_a_body_that_is_not_json_gets_a_415_in_the_documented_error_body(
    hostile: tuple[str, Path], contract: Any
) -> None:
    url, _ = hostile
    form = {"request": ("request.json", json.dumps(BODY), "application/json")}
    for path in ("/predict", "/predict_batch", "/models"):
        response = requests.post(f"{url}{path}", files=form, headers={"X-API-Key": KEY}, timeout=10)
        assert response.status_code == 415 and response.request.headers["Content-Type"].startswith("multipart/")
        assert response.json() == {
            "error": "Content-Type 'multipart/form-data' is not supported: send the body as application/json",
            "detail": None,
        }
        _as_documented(contract, path, response)


def test_an_answer_on_fresh_features_has_a_null_reason_as_the_document_allows(
    hostile: tuple[str, Path], contract: Any
) -> None:
    url, _ = hostile
    fresh = {**BODY, "timestamp": f"{DAYS[1]}T23:00:00Z", "request_id": "fresh"}  # the online rows' day: within TTL
    response = requests.post(f"{url}/predict", json={"request": fresh}, headers={"X-API-Key": KEY}, timeout=10)
    answer = response.json()
    assert response.status_code == 200 and answer["degraded"] is False and answer["reason"] is None, answer
    _as_documented(contract, "/predict", response)
    reference = contract.raw_schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    documented = contract.raw_schema["components"]["schemas"][reference["schema"]["$ref"].rsplit("/", 1)[1]]
    assert documented["properties"]["reason"]["nullable"] is True and "reason" in documented["required"]
    # Every error status is documented with the one error body, a late answer's 504 too.
    for path in ("/predict", "/predict_batch", "/models"):
        responses = contract.raw_schema["paths"][path]["post"]["responses"]
        assert responses["504"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_champion_only_serves_and_shadows_nothing_else(hostile: tuple[str, Path]) -> None:
    url, folder = hostile
    status, models = post(f"{url}/models", {})
    assert status == 200 and models == {"pipeline": "fraud", "champion": "1"}  # the waiting challenger: not live
    status, answer = post(f"{url}/predict", {"request": {**BODY, "request_id": "champion-only"}})
    assert status == 200 and answer["model_version"] == "1"
    until(lambda: "champion-only" in _logged(folder), what="the log record")
    row = read_day(folder, datetime.now(UTC).date()).filter(request_id="champion-only").row(0, named=True)
    assert (row["model_version"], row["shadow_version"], row["shadow_score"]) == ("1", None, None)


def test_a_request_older_than_the_online_rows_gets_no_features_from_its_future(hostile: tuple[str, Path]) -> None:
    url, folder = hostile
    early = f"{DAYS[0]}T06:00:00Z"  # the online store holds rows of later days only
    status, answer = post(f"{url}/predict", {"request": {**BODY, "timestamp": early, "request_id": "early"}})
    assert status == 200, answer
    withheld = "online features newer than the request time for ['customer_spend', "
    assert answer["reason"].startswith(withheld) and answer["reason"].endswith(": not used (none from its future)")
    assert answer["degraded"] is False  # no dependency failed: the store answered, its rows were of the future
    # Its log record (filed under the request's own day) says the same.
    day = date.fromisoformat(DAYS[0])
    until(lambda: "early" in read_day(folder, day)["request_id"].to_list(), what="the early request's log record")
    row = read_day(folder, day).filter(request_id="early").row(0, named=True)
    assert (row["reason"], row["degraded"]) == (answer["reason"], False)
    assert set(json.loads(row["feature_timestamps"]).values()) == {None}  # no online row used
    late = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, error = post(f"{url}/predict", {"request": {**BODY, "timestamp": late}})
    assert status == 400 and "later than the server's clock by more than 5m" in str(error)
    status, error = post(f"{url}/predict", {"request": {**BODY, "timestamp": "2025-12-31T23:00:00Z"}})
    assert status == 400 and "before 2026-01-01, the pipeline's first day" in str(error)


@pytest.fixture(scope="module")
def canary(
    served: Served, hostile: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, subprocess.Popen[bytes], str]]:
    """(url, process, challenger version) of a second server, `rollout: canary`, on the hostile server's data folder
    (its prediction log and its metrics folder too)."""
    edits = {"  rollout: shadow": "  rollout: canary", "  canary_share: 0.1": "  canary_share: 0.5"}
    data = hostile[1].parents[1]
    url, _, process, challenger = _serve(served, tmp_path_factory.mktemp("canary"), edits, data)
    yield url, process, challenger
    stop(process)


def test_canary_answers_a_sticky_share_with_the_challenger_and_the_champion_shadows_it(
    hostile: tuple[str, Path], canary: tuple[str, subprocess.Popen[bytes], str]
) -> None:
    (_, folder), (url, _, challenger) = hostile, canary
    assert post(f"{url}/models", {})[1] == {"pipeline": "fraud", "champion": "1", "challenger": challenger}
    entities = [f"c{i:06d}" for i in range(40)]
    answered = {}
    for round_ in range(2):
        rows = [{**BODY, "customer_id": e, "request_id": f"canary-{round_}-{e}"} for e in entities]
        status, answers = post(f"{url}/predict_batch", {"requests": rows})
        assert status == 200, answers
        for entity, answer in zip(entities, answers, strict=True):
            assert answered.setdefault(entity, answer["model_version"]) == answer["model_version"]  # sticky
    assert set(answered.values()) == {"1", challenger}  # both answer a share
    until(lambda: sum(_logged(folder, ("canary-",)).values()) == 80, what="the 80 log records")
    logged = read_day(folder, datetime.now(UTC).date()).filter(pl.col("request_id").str.starts_with("canary-"))
    pairs = set(zip(logged["model_version"], logged["shadow_version"], strict=True))
    assert pairs == {("1", challenger), (challenger, "1")}  # whoever answered, the other model shadowed it


def test_a_second_serve_of_the_same_data_folder_never_changes_the_first_ones_metrics(
    hostile: tuple[str, Path], canary: tuple[str, subprocess.Popen[bytes], str]
) -> None:
    (first, folder), (second, process, _) = hostile, canary
    before, second_before = answered_count(first), answered_count(second)
    assert before > 0  # earlier tests were answered: a wiped folder would show as fewer
    rows = [{**BODY, "customer_id": f"c{i:06d}", "request_id": f"second-{i}"} for i in range(20)]
    assert post(f"{second}/predict_batch", {"requests": rows})[0] == 200
    assert answered_count(second) == second_before + 20  # counted by the server that answered
    assert answered_count(first) == before
    metrics = folder.parents[1] / "serving" / "fraud" / "metrics"
    assert len(list(metrics.iterdir())) == 2  # a folder per serve process
    stop(process)  # a graceful stop removes its own folder, and only that
    assert [p.name.split("-")[-2] for p in metrics.iterdir()] == [first.rsplit(":", 1)[1]]
    assert answered_count(first) == before
    assert post(f"{first}/predict", {"request": {**BODY, "request_id": "after-second"}})[0] == 200
    assert answered_count(first) == before + 1  # still counting its own
