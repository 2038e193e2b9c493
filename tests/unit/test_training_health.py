"""Tests of the training set's checks: usable features per view (with the cause measured), constant inputs, and
whether the split leaves enough to learn from; on small frames and on a public dataset (NannyML's car loans)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from mlops_assets.core.features.views import FEATURE_TIMESTAMP, compute_features
from mlops_assets.core.training.training_set import (
    JoinStats,
    constant_features,
    duration_text,
    enough_to_learn,
    entity_gaps,
    feature_coverage,
    training_set,
)
from mlops_assets.spec import PipelineSpec
from tests.public_data import nannyml_csv

T0 = dt.datetime(2026, 1, 1)
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


def spec_of(
    *,
    ttl: str = "1h",
    task: str = "binary",
    holdout: str = "2d",
    max_unusable_share: float = 0.5,
    label_dtype: str = "int",
    **model: Any,
) -> PipelineSpec:
    """Card activity: one aggregation view over events, labels of predictions made at some of them."""
    return PipelineSpec.model_validate(
        {
            "name": "health",
            "start_date": "2026-01-01",
            "entity": {"name": "customer", "keys": ["customer_id"]},
            "sources": {
                "events": {
                    "path": "events/{date}.parquet",
                    "event_timestamp": "ts",
                    "columns": {"customer_id": {"dtype": "string"}, "ts": {"dtype": "datetime"}},
                },
                "labels": {
                    "path": "labels/{date}.parquet",
                    "event_timestamp": "labeled_at",
                    "columns": {
                        "customer_id": {"dtype": "string"},
                        "predicted_at": {"dtype": "datetime"},
                        "labeled_at": {"dtype": "datetime"},
                        "channel": {"dtype": "string"},
                        "outcome": {"dtype": label_dtype},
                    },
                },
            },
            "feature_views": {
                "activity": {
                    "source": "events",
                    "ttl": ttl,
                    "max_unusable_share": max_unusable_share,
                    "aggregations": [{"functions": ["count"], "windows": ["1h", "1d"]}],
                }
            },
            "request_features": {"channel": {"dtype": "string"}},
            "label": {
                "source": "labels",
                "column": "outcome",
                "timestamp": "labeled_at",
                "prediction_timestamp": "predicted_at",
                "feature_cutoff": "before",
            },
            "model": {"estimator": "sklearn.linear_model.LogisticRegression", "task": task, "holdout": holdout} | model,
            "promotion": {"minimum": 0.0},
        }
    )


def labels_frame(predicted: list[dt.datetime], customers: list[str], outcomes: list[Any]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": customers,
            "predicted_at": predicted,
            "labeled_at": [p + HOUR for p in predicted],
            "channel": ["pos" if i % 2 else "online" for i in range(len(predicted))],
            "outcome": outcomes,
        },
        schema_overrides={"predicted_at": pl.Datetime("us"), "labeled_at": pl.Datetime("us")},
    )


# --- Feature coverage --------------------------------------------------------------------------------------


def every_three_hours() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Four customers with an event every 3 hours for 2 days; each is scored 2 hours after an event (one hour past
    a TTL of 1h), and a fifth customer the events never saw is scored too."""
    customers = ["c1", "c2", "c3", "c4"]
    events = pl.DataFrame(
        {
            "customer_id": [c for c in customers for _ in range(16)],
            "ts": [T0 + 3 * k * HOUR for _ in customers for k in range(16)],
        },
        schema_overrides={"ts": pl.Datetime("us")},
    )
    scored = [(c, T0 + (3 * k + 2) * HOUR) for c in customers for k in range(15)] + [("c9", T0 + 5 * HOUR)] * 4
    labels = labels_frame([p for _, p in scored], [c for c, _ in scored], [i % 2 for i in range(len(scored))])
    return events, labels


def coverage(spec: PipelineSpec, events: pl.DataFrame, labels: pl.DataFrame):
    features = {"activity": compute_features(spec, "activity", events.lazy())}
    frame, stats = training_set(spec, labels.lazy(), features)
    return feature_coverage(spec, stats, frame.lazy(), features), stats


def test_a_view_stale_in_most_rows_fails_with_the_gap_between_events_against_its_ttl() -> None:
    events, labels = every_three_hours()
    verdict, stats = coverage(spec_of(ttl="1h"), events, labels)
    assert (stats.rows, stats.stale["activity"], stats.missing["activity"]) == (64, 60, 4)
    assert not verdict.passed
    assert verdict.description.startswith(
        "feature view 'activity': 100.0% of 64 rows have no usable features (max_unusable_share 50%)"
    )
    assert (
        "60 rows are past the TTL of 1h, while the median gap between an entity's consecutive feature rows is 3h; "
        "a TTL of 3h would cover 90% of the gaps (feature_views.activity.ttl)" in verdict.description
    )
    assert "4 rows have no feature row at all: 4 are of entities the view never had a row for" in verdict.description
    (row,) = verdict.metadata["feature_views"]
    assert row == {
        "feature_view": "activity",
        "no_row": 4,
        "stale": 60,
        "unusable_share": 1.0,
        "max_unusable_share": 0.5,
        "ttl": "1h",
        "median_gap": "3h",
        "ttl_covering_90pct_of_gaps": "3h",
        "entity_never_in_view": 4,
        "before_first_row": 0,
    }
    assert verdict.metadata["worst_unusable_share"] == verdict.metadata["unusable_share/activity"] == 1.0


def test_the_ttl_the_check_suggests_makes_the_view_usable() -> None:
    events, labels = every_three_hours()
    verdict, stats = coverage(spec_of(ttl="3h"), events, labels)
    assert verdict.passed, verdict.description
    assert stats.stale["activity"] == 0
    assert verdict.metadata["worst_unusable_share"] == pytest.approx(4 / 64, abs=1e-4)


def test_a_share_at_the_threshold_passes_and_the_threshold_is_the_views() -> None:
    events, labels = every_three_hours()
    assert coverage(spec_of(ttl="1h", max_unusable_share=1.0), events, labels)[0].passed


def test_an_empty_training_set_has_nothing_to_measure() -> None:
    spec = spec_of()
    verdict = feature_coverage(
        spec, JoinStats(rows=0, missing={"activity": 0}, stale={"activity": 0}), pl.LazyFrame(), {}
    )
    assert verdict.passed and verdict.description == "the training set has no rows: nothing to measure"


def test_gaps_are_measured_per_entity_and_rounded_up_as_a_spec_duration() -> None:
    view = pl.LazyFrame(
        {
            "customer_id": ["a", "a", "a", "b", "b"],
            FEATURE_TIMESTAMP: [T0, T0 + HOUR, T0 + 4 * HOUR, T0 + 10 * DAY, T0 + 10 * DAY + 2 * HOUR],
        }
    )
    # Gaps 1h and 3h of a, 2h of b; never the 10 days between a's last row and b's first.
    assert entity_gaps(view, ["customer_id"]) == (2 * HOUR, 3 * HOUR)
    assert entity_gaps(view.filter(pl.col("customer_id") == "b").head(1), ["customer_id"]) == (None, None)
    cases = {
        dt.timedelta(seconds=10): "1m",
        dt.timedelta(minutes=90, seconds=1): "91m",
        2 * HOUR + dt.timedelta(seconds=1): "3h",
        49 * HOUR: "3d",
    }
    assert {delta: duration_text(delta) for delta in cases} == cases


# --- Constant inputs ---------------------------------------------------------------------------------------


def test_an_input_with_one_value_or_none_is_flagged() -> None:
    spec = spec_of()
    training = labels_frame([T0, T0 + HOUR, T0 + 2 * HOUR], ["a", "b", "c"], [0, 1, 0]).with_columns(
        count_1h=pl.lit(3, pl.UInt32), count_1d=pl.Series([None, None, None], dtype=pl.UInt32)
    )
    verdict = constant_features(spec, training.lazy())
    assert not verdict.passed
    assert verdict.description == "2 of 3 inputs have one value in all 3 rows: count_1h (3), count_1d (all null)"
    assert verdict.metadata["constant"] == [
        {"feature": "count_1h", "value": "3", "nulls": 0},
        {"feature": "count_1d", "value": "all null", "nulls": 3},
    ]
    varied = training.with_columns(count_1h=pl.Series([1, 2, None], dtype=pl.UInt32), count_1d=pl.lit(1, pl.UInt32))
    assert not constant_features(spec, varied.lazy()).passed  # count_1d still has one value
    assert constant_features(spec, varied.drop("count_1d").lazy()).passed


# --- Enough to learn from -----------------------------------------------------------------------------------


def daily(days: int, outcomes: list[Any]) -> pl.DataFrame:
    """Labels of predictions spread over `days` days, cycling through `outcomes`."""
    n = 10 * days
    predicted = [T0 + k * DAY / 10 for k in range(n)]
    return labels_frame(predicted, [f"c{k % 7}" for k in range(n)], [outcomes[k % len(outcomes)] for k in range(n)])


def test_a_holdout_as_long_as_the_training_part_fails_saying_which_field_to_change() -> None:
    verdict = enough_to_learn(spec_of(holdout="7d", min_class_rows=1), daily(10, [0, 1]).lazy())
    assert not verdict.passed
    assert verdict.description == (
        "model.holdout (7d) is as long as or longer than the training part (2d 21h of the 9d 21h the predictions "
        "span): shorten model.holdout to less than half of 9d 21h, or materialize more days of labels"
    )
    assert verdict.metadata["training_span"] == "2d 21h"
    assert verdict.metadata["train_rows"] + verdict.metadata["holdout_rows"] == verdict.metadata["rows"] == 100
    assert enough_to_learn(spec_of(holdout="4d", min_class_rows=1), daily(10, [0, 1]).lazy()).passed


def test_too_few_examples_of_a_class_fail_with_the_counts() -> None:
    """One positive in 20 (a 0/1 label stored as floats, like NannyML's): 3 in the 60 training rows."""
    frame = daily(10, [1.0] + [0.0] * 19)
    verdict = enough_to_learn(spec_of(holdout="4d", label_dtype="float"), frame.lazy())
    assert not verdict.passed
    assert verdict.description == (
        "too few training examples of a class of 'outcome': '1' has 3, fewer than model.min_class_rows (20): "
        "materialize more days of labels, shorten model.holdout, or lower model.min_class_rows"
    )
    assert verdict.metadata["class_rows"] == [{"class": "0", "training_rows": 57}, {"class": "1", "training_rows": 3}]
    assert enough_to_learn(spec_of(holdout="4d", label_dtype="float", min_class_rows=3), frame.lazy()).passed


def test_a_class_seen_only_in_the_holdout_has_no_training_examples() -> None:
    frame = daily(10, ["red", "green"]).with_columns(
        outcome=pl.when(pl.col("predicted_at") > T0 + 8 * DAY).then(pl.lit("blue")).otherwise("outcome")
    )
    verdict = enough_to_learn(spec_of(task="multiclass", label_dtype="string", holdout="3d"), frame.lazy())
    assert not verdict.passed
    assert "of a class of 'outcome': 'blue' has 0," in verdict.description
    assert {r["class"]: r["training_rows"] for r in verdict.metadata["class_rows"]} == {
        "blue": 0,
        "green": 35,
        "red": 35,
    }


def test_too_few_distinct_targets_fail_a_regression_and_suggest_the_task() -> None:
    frame = daily(10, [1.5, 2.5, 3.5])
    verdict = enough_to_learn(spec_of(task="regression", label_dtype="float", holdout="3d"), frame.lazy())
    assert not verdict.passed
    assert verdict.description.startswith(
        "3 distinct values of 'outcome' in the 70 training rows, fewer than model.min_distinct_targets (10): "
        "with so few values, is model.task multiclass?"
    )
    assert verdict.metadata["distinct_targets"] == 3
    spread = frame.with_columns(outcome=pl.int_range(pl.len()).cast(pl.Float64))
    assert enough_to_learn(spec_of(task="regression", label_dtype="float", holdout="3d"), spread.lazy()).passed


def test_an_empty_training_set_is_too_little() -> None:
    verdict = enough_to_learn(spec_of(), daily(1, [0]).clear().lazy())
    assert not verdict.passed and verdict.description.startswith("the training set is empty")


# --- On a public dataset: NannyML's car loans ---------------------------------------------------------------


def car_loans_spec(ttl: str, holdout: str) -> PipelineSpec:
    """Loan applications as events of their salary range (the entity), each scored when it is made: how many
    applications of the range came in the last hour and day, and their mean car value, before this one."""
    columns = {
        "salary_range": {"dtype": "string"},
        "car_value": {"dtype": "float"},
        "timestamp": {"dtype": "datetime"},
    }
    return PipelineSpec.model_validate(
        {
            "name": "car_loans",
            "start_date": "2018-01-01",
            "entity": {"name": "salary_range", "keys": ["salary_range"]},
            "sources": {
                "applications": {"path": "applications/{date}.csv", "event_timestamp": "timestamp", "columns": columns},
                "repayments": {
                    "path": "repayments/{date}.csv",
                    "event_timestamp": "repaid_at",
                    "columns": columns | {"repaid": {"dtype": "float"}, "repaid_at": {"dtype": "datetime"}},
                },
            },
            "feature_views": {
                "range_activity": {
                    "source": "applications",
                    "ttl": ttl,
                    "aggregations": [
                        {"functions": ["count"], "windows": ["1h", "1d"]},
                        {"column": "car_value", "functions": ["mean"], "windows": ["1d"]},
                    ],
                }
            },
            "request_features": {"car_value": {"dtype": "float"}},
            "label": {
                "source": "repayments",
                "column": "repaid",
                "timestamp": "repaid_at",
                "prediction_timestamp": "timestamp",
                "feature_cutoff": "before",
            },
            "model": {"estimator": "sklearn.linear_model.LogisticRegression", "holdout": holdout},
            "promotion": {"minimum": 0.5},
        }
    )


@pytest.fixture(scope="module")
def car_loans() -> pl.DataFrame:
    """The reference period's first two months (about 10,000 applications), timestamps parsed from their text."""
    loans = nannyml_csv("synthetic_car_loan_reference").with_columns(
        pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us")
    )
    return loans.filter(pl.col("timestamp") < dt.datetime(2018, 3, 1)).with_columns(
        repaid_at=pl.col("timestamp") + 30 * DAY
    )


def test_on_car_loans_a_short_ttl_fails_and_the_suggested_one_covers_90_percent_of_the_gaps(
    car_loans: pl.DataFrame,
) -> None:
    # The gaps between applications of one salary range, measured here independently of the library.
    gaps = (
        car_loans.sort("salary_range", "timestamp")
        .select(pl.col("timestamp").diff().over("salary_range").alias("gap"))
        .drop_nulls()
        .get_column("gap")
    )
    median, p90 = gaps.median(), gaps.sort()[int(0.9 * len(gaps) + 0.999999) - 1]
    assert dt.timedelta(minutes=15) < median < 4 * HOUR  # the 15 minutes below are too short for most rows

    spec = car_loans_spec(ttl="15m", holdout="14d")
    features = {"range_activity": compute_features(spec, "range_activity", car_loans.lazy())}
    frame, stats = training_set(spec, car_loans.lazy(), features)
    verdict = feature_coverage(spec, stats, frame.lazy(), features)
    assert stats.rows == car_loans.height
    assert not verdict.passed
    (row,) = verdict.metadata["feature_views"]
    assert row["unusable_share"] > 0.5
    assert row["median_gap"] == duration_text(median)
    suggested = row["ttl_covering_90pct_of_gaps"]
    assert suggested == duration_text(p90)
    assert f"a TTL of {suggested} would cover 90% of the gaps (feature_views.range_activity.ttl)" in verdict.description

    # With the suggested TTL, at most a tenth of the rows are past it (plus each range's very first application).
    better = car_loans_spec(ttl=suggested, holdout="14d")
    frame, stats = training_set(better, car_loans.lazy(), features)
    verdict = feature_coverage(better, stats, frame.lazy(), features)
    assert verdict.passed, verdict.description
    assert stats.stale["range_activity"] <= 0.1 * stats.rows
    assert stats.missing["range_activity"] == car_loans["salary_range"].n_unique()

    assert constant_features(better, frame.lazy()).passed
    assert enough_to_learn(better, frame.lazy()).passed
    too_long = enough_to_learn(car_loans_spec(ttl=suggested, holdout="30d"), frame.lazy())
    assert not too_long.passed and too_long.description.startswith("model.holdout (30d) is as long as or longer")
