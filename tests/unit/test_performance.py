"""Performance on labelled live traffic: the join, metrics per version, the floor."""

from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score

from mlops_assets.core.monitoring.performance import judge, labelled_predictions, metrics_by_version
from mlops_assets.spec import PipelineSpec, load_specs


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    (fraud,) = load_specs()
    monitoring = fraud.monitoring.model_copy(update={"performance_floor": 0.7})
    return fraud.model_copy(update={"monitoring": monitoring})


def _log_and_labels(n: int = 600) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, n)
    good = np.clip(0.6 * y + rng.uniform(0, 0.4, n), 0, 1)  # separates the classes
    bad = rng.uniform(0, 1, n)  # noise
    log = pl.DataFrame(
        {
            "request_id": [f"t{i}" for i in range(n)],
            "model_version": ["1" if i % 2 else "2" for i in range(n)],
            "score": [float(good[i] if i % 2 else bad[i]) for i in range(n)],
        }
    )
    fallback = pl.DataFrame({"request_id": ["t0-fb"], "model_version": ["fallback"], "score": [0.02]})
    labels = pl.DataFrame(
        {"transaction_id": [f"t{i}" for i in range(n - 100)] + ["t0-fb"], "is_fraud": [*y[: n - 100], 1]}
    ).with_columns(confirmed_at=datetime(2026, 1, 3))
    return pl.concat([log, fallback]), labels


def test_metrics_per_version_on_the_labelled_predictions_only(spec: PipelineSpec) -> None:
    log, labels = _log_and_labels()
    rows = labelled_predictions(log, labels, spec)
    assert rows.height == 500 and "fallback" not in set(rows["model_version"])  # unlabelled and fallback left out
    table = metrics_by_version(rows, spec).sort("model_version")
    assert table["labelled"].to_list() == [250, 250]
    one = rows.filter(model_version="1")
    assert table.filter(model_version="1")["pr_auc"].item() == pytest.approx(
        average_precision_score(one["label"].to_numpy(), one["score"].to_numpy()), abs=1e-12
    )


def test_the_champion_below_the_floor_fails_with_the_figures(spec: PipelineSpec) -> None:
    table = metrics_by_version(labelled_predictions(*_log_and_labels(), spec), spec)
    good = judge(table, spec, "1", min_rows=200)
    assert good.passed and "meets the floor 0.7" in good.description
    bad = judge(table, spec, "2", min_rows=200)
    assert not bad.passed and "pr_auc" in bad.description and "is worse than the floor 0.7" in bad.description
    few = judge(table, spec, "2", min_rows=1000)
    assert few.passed and "at least 1000 needed" in few.description
    assert judge(table, spec, "9", min_rows=1).passed  # no labelled predictions of that version yet: not judged


def test_a_days_performance_is_rolling_and_sees_only_the_labels_known_by_its_end(spec: PipelineSpec) -> None:
    from datetime import date, datetime

    from mlops_assets.core.monitoring.performance import labels_known_by, rolling_days

    assert rolling_days(date(2026, 3, 3), spec) == [f"2026-02-{d}" for d in (25, 26, 27, 28)] + [
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
    ]
    confirmed = [datetime(2026, 3, 3, 23, 59), datetime(2026, 3, 4), datetime(2026, 3, 9)]
    labels = pl.DataFrame({"transaction_id": ["a", "b", "c"], "is_fraud": [1, 0, 1], "confirmed_at": confirmed})
    assert labels_known_by(labels.lazy(), spec, date(2026, 3, 3)).collect().get_column("transaction_id").to_list() == [
        "a"
    ]


def _of_task(spec: PipelineSpec, task: str, metric: str, floor: float) -> PipelineSpec:
    """The fraud spec's label, log and labels with a model of `task`, judged on `metric` against `floor`."""
    from mlops_assets.spec import ModelSpec, PromotionSpec

    kind = "Regressor" if task == "regression" else "Classifier"
    model = ModelSpec(task=task, estimator=f"sklearn.ensemble.HistGradientBoosting{kind}")  # never fitted here
    monitoring = spec.monitoring.model_copy(update={"performance_floor": floor})
    promotion = PromotionSpec(metric=metric, minimum=floor)
    return spec.model_copy(update={"model": model, "promotion": promotion, "monitoring": monitoring})


def _two_versions(column: str, first: list[Any], second: list[Any], labels: list[Any]) -> pl.DataFrame:
    """Labelled predictions of the same requests by versions 1 (`first`) and 2 (`second`), as logged in `column`
    (score: a value; probabilities: JSON by class)."""
    n = len(labels)
    frames = [
        pl.DataFrame(
            {
                "request_id": [f"v{version}-{i}" for i in range(n)],
                "model_version": [version] * n,
                "score": values if column == "score" else [0.0] * n,
                "probabilities": values if column == "probabilities" else [None] * n,
                "label": labels,
            },
            schema_overrides={"probabilities": pl.String},
        )
        for version, values in (("1", first), ("2", second))
    ]
    return pl.concat(frames)


def test_regression_metrics_per_version_and_the_floor_is_a_ceiling_for_rmse(spec: PipelineSpec) -> None:
    """RMSE is lower-is-better: performance_floor 5 fails a champion whose RMSE is above 5, not below."""
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    regression = _of_task(spec, "regression", "rmse", 5.0)
    rng = np.random.default_rng(4)
    y = rng.normal(100, 20, 400)
    close, far = y + rng.normal(0, 2, 400), y + rng.normal(0, 15, 400)
    table = metrics_by_version(_two_versions("score", list(close), list(far), list(y)), regression)
    assert set(table.columns) == {"model_version", "labelled", "rmse", "mae", "r2", "mape"}
    one = table.filter(model_version="1").row(0, named=True)
    assert one["rmse"] == pytest.approx(root_mean_squared_error(y, close), abs=1e-9)
    assert one["mae"] == pytest.approx(mean_absolute_error(y, close), abs=1e-9)
    assert one["r2"] == pytest.approx(r2_score(y, close), abs=1e-9)
    good = judge(table, regression, "1", min_rows=200)
    assert good.passed and good.champion_value == one["rmse"] < 5.0 and "meets the floor 5.0" in good.description
    bad = judge(table, regression, "2", min_rows=200)
    assert not bad.passed and bad.champion_value is not None and bad.champion_value > 5.0
    assert "rmse" in bad.description and "is worse than the floor 5.0" in bad.description


@pytest.mark.parametrize(("metric", "floor"), [("macro_f1", 0.6), ("log_loss", 0.8)])
def test_multiclass_metrics_per_version_and_the_floor_in_the_metrics_direction(
    spec: PipelineSpec, metric: str, floor: float
) -> None:
    """macro-F1 must stay above its floor, log-loss (lower is better) below it; both from the logged probabilities."""
    import json

    from sklearn.metrics import accuracy_score, f1_score, log_loss

    multiclass = _of_task(spec, "multiclass", metric, floor)
    rng = np.random.default_rng(5)
    classes = ["a", "b", "c"]
    y = rng.choice(classes, 400)
    truth = np.array([[float(c == label) for c in classes] for label in y])

    def probabilities(quality: float) -> np.ndarray:
        return quality * truth + (1 - quality) * rng.dirichlet(np.ones(3), 400)

    sure, unsure = probabilities(0.8), probabilities(0.1)
    logged = {v: [json.dumps(dict(zip(classes, r, strict=True))) for r in p] for v, p in (("1", sure), ("2", unsure))}
    table = metrics_by_version(_two_versions("probabilities", logged["1"], logged["2"], list(y)), multiclass)
    one = table.filter(model_version="1").row(0, named=True)
    predicted = np.array(classes)[sure.argmax(axis=1)]
    assert one["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"), abs=1e-9)
    assert one["accuracy"] == pytest.approx(accuracy_score(y, predicted), abs=1e-9)
    assert one["log_loss"] == pytest.approx(log_loss(y, sure, labels=classes), abs=1e-9)
    good, bad = judge(table, multiclass, "1", min_rows=200), judge(table, multiclass, "2", min_rows=200)
    assert good.passed and f"meets the floor {floor}" in good.description
    assert not bad.passed and f"is worse than the floor {floor}" in bad.description
