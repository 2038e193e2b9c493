"""Performance on labelled live traffic: the join, metrics per version, the floor."""

from datetime import datetime

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
