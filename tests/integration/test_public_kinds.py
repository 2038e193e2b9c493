"""The three kinds of problem end to end on public files a user could bring (NannyML's, from its PyPI wheel): `mlops new
--from` a file with no entity id, at most two documented edits, then materialize, reproduce the model, serve, replay a
day, monitor it.

- loans (binary; the outcome `repaid` stored as 1.0/0.0 floats; ~165 loans a day),
- cars (regression; a used car's price),
- cards (multiclass; the card product, a string).
"""

import json
import re
import urllib.request
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from mlops_assets.core.lake import scan_table, table_path
from mlops_assets.settings import card_path
from mlops_assets.spec import load_spec
from tests.helpers import Project, free_port, stop, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# example, days in the file, the answer's fields, the edits beyond `serving.allow_replay: true`, days served
KINDS = {
    # A day has ~165 loans, fewer than monitoring.min_rows (200): `mlops check` says so and suggests a 2-day window,
    # which grades the last two days served together.
    "loans": (60, {"score", "decision"}, {"monitoring": {"window": "2d"}}, 2),
    "cars": (8, {"prediction"}, {}, 1),
    "cards": (40, {"label", "probabilities"}, {}, 1),
}
ANSWER_FIELDS = {"request_id", "model_version", "degraded", "reason"}


@pytest.mark.parametrize("example", list(KINDS))
def test_a_public_file_becomes_a_served_model_and_a_graded_drift_report(tmp_path: Path, example: str) -> None:
    days, fields, edits, served = KINDS[example]
    project = Project(tmp_path)
    run, mlops = project.run, project.mlops

    run("-m", "mlops_assets.examples.nannyml", example, f"{example}.csv", "--days", str(days))
    guesses = mlops("new", example, "--from", f"{example}.csv")
    assert "left out: y_pred" in guesses and "stands in as a segment" in guesses
    path = tmp_path / "specs" / f"{example}.yaml"
    spec = yaml.safe_load(path.read_text())
    task = spec["model"]["task"]
    assert task == {"loans": "binary", "cars": "regression", "cards": "multiclass"}[example]
    checked = mlops("check")
    assert f"{example}: ok" in checked
    assert ("monitoring.window: 2d" in checked) == (example == "loans"), checked
    spec["serving"] = {"allow_replay": True}
    spec.update(edits)
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    assert f"{example}: ok" in mlops("check") and "note:" not in mlops("check")

    start = spec["start_date"]
    trained = mlops("materialize", example, "--start", str(start), "--days", str(days - served))
    assert "champion: version 1 (promotion gate passed" in trained
    status = json.loads(mlops("status", "--json"))[example]["champion"]["metrics"]
    assert (
        set(status)
        == {
            "binary": {"roc_auc", "pr_auc", "log_loss", "precision", "recall"},
            "regression": {"rmse", "mae", "r2", "mape"},
            "multiclass": {"macro_f1", "accuracy", "log_loss"},
        }[task]
    )
    assert all(value is not None for metric, value in status.items() if metric != "mape")
    # The model card shows the kind's metrics (and, multiclass, each class's recall).
    card = card_path(tmp_path / "data", example, "1").read_text()
    assert f"A {task} model" in card and all(f"| {metric} | " in card for metric in status), card
    assert ("### Recall per class" in card) == (task == "multiclass"), card
    events = pl.read_csv(tmp_path / f"{example}.csv")
    classes = sorted(events.get_column(spec["label"]["column"]).unique())
    if task == "multiclass":
        assert all(f"| {name} | " in card for name in classes), card
    # The version is reproducible: its training set rebuilt from the Delta versions it recorded, retrained with its
    # recorded spec and seed, the same outputs on its holdout (mlops reproduce exits 1 otherwise).
    reproduced = mlops("reproduce", example, "1")
    assert "training set rebuilt" in reproduced and ", identical" in reproduced, reproduced
    assert "retrained model: identical outputs on the" in reproduced, reproduced

    # The file's last whole days, not materialized: served as live traffic, then graded.
    replays = [(date.fromisoformat(str(start)) + timedelta(days=days - i)).isoformat() for i in range(served, 0, -1)]
    replayed = replays[-1]
    port, log = free_port(), tmp_path / "serve.log"
    server = project.serve(example, port, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/readyz", server, log)
        for day in replays:
            sent = mlops("replay", example, "--day", day, "--sample", "300", "--url", url)
            assert "requests answered" in sent and "by version 1" in sent
        answer = _post(f"{url}/predict", {"request": _request(events, spec)})
        assert set(answer) == ANSWER_FIELDS | fields, answer
        # /predict_batch answers each request of a call in the kind's shape, in order.
        requests = [_request(events, spec, row) for row in range(3)]
        batch = _post(f"{url}/predict_batch", {"requests": requests})
        assert len(batch) == 3 and all(set(a) == ANSWER_FIELDS | fields for a in batch), batch
        for given in [answer, *batch]:
            _is_an_answer_of(task, given, classes)
        schema = _get(f"{url}/docs.json")["components"]["schemas"]
        answered = {"binary": "Prediction", "regression": "RegressionPrediction", "multiclass": "MulticlassPrediction"}
        assert set(schema[answered[task]]["properties"]) == ANSWER_FIELDS | fields
    finally:
        stop(server)
    for day in replays[:-1]:
        mlops("monitor", example, "--day", day)  # ingests the day, whose log the last day's window reads too
    graded = mlops("monitor", example, "--day", replayed)
    assert f"{example}/prediction_log" in graded and "drift report: file://" in graded
    drift_line = next(line for line in graded.splitlines() if f"{example}/drift_report" in line)
    assert "not graded" not in drift_line, drift_line
    report = (tmp_path / "data" / "reports" / example / "drift" / f"{replayed}.html").read_text()
    outputs = {"multiclass": "__proba_", "regression": "__score__", "binary": "__score__"}[task]
    assert outputs in report  # the prediction drift of the kind's outputs is in the report
    # The replayed day is the file's own (no drift): no feature is flagged. The view's features are a segment's daily
    # rows, a few a day: reported as not graded, never graded on those few rows; the request fields are graded.
    for day in replays:  # loans' first day fills half of its 2-day window: fewer rows than min_rows, not graded
        page = (tmp_path / "data" / "reports" / example / "drift" / f"{day}.html").read_text()
        level, evidence = _check(page, "feature_drift")
        assert level == "ok" or (day != replayed and "fewer than monitoring.min_rows" in evidence), evidence
    level, evidence = _check(report, "feature_drift")
    assert level == "ok", evidence
    stats = scan_table(table_path(tmp_path / "data", example, "drift_stats")).collect()
    served_stats = stats.filter((pl.col("window") == replayed) & (pl.col("source") == "served"))
    levels = dict(
        served_stats.filter(~pl.col("feature").str.starts_with("__"))
        .select("feature", "distribution_level")
        .iter_rows()
    )
    views = {f for view in load_spec(path).feature_views.values() for f in view.feature_names() or []}
    assert {f for f, lv in levels.items() if lv == "not graded"} == views, levels
    assert {f for f in levels if f not in views} == set(spec["request_features"]) and "not graded, too few" in evidence


def _request(events: pl.DataFrame, spec: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """An event of the file (the first by default) as a request: its entity key and request features."""
    row = events.row(index, named=True)
    fields = [*spec["entity"]["keys"], *spec["request_features"]]
    return {name: row[name] for name in fields}


def _is_an_answer_of(task: str, answer: dict[str, Any], classes: list[Any]) -> None:
    """A model's answer (not degraded) in the kind's terms: a probability and its decision, a value, or the most
    probable of the label's classes with each class's probability."""
    assert answer["degraded"] is False and answer["model_version"] == "1", answer
    if task == "binary":
        assert 0.0 <= answer["score"] <= 1.0 and answer["decision"] == (answer["score"] >= 0.5), answer
    elif task == "regression":
        assert isinstance(answer["prediction"], float), answer
    else:
        probabilities = answer["probabilities"]
        assert sorted(probabilities) == classes and sum(probabilities.values()) == pytest.approx(1.0), answer
        assert answer["label"] == max(probabilities, key=probabilities.__getitem__), answer


def _check(report: str, name: str) -> tuple[str, str]:
    """A check's level and evidence, as the drift report's table of checks shows them."""
    found = re.search(rf"<tr><td>{name}</td><td>(\w+)</td><td>(.*?)</td></tr>", report)
    assert found, f"no {name} in the report"
    return found.group(1), found.group(2)


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())
