"""Batch scoring on tiny frames: the population, its point-in-time features (those of the training set), the day's
partition written whole and replaced, the champion of a moment, the checks, and the spec's located errors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.features.views import FEATURE_TIMESTAMP, compute_features
from mlops_assets.core.lake import PARTITION_COLUMN, replace_partitions, replace_partitions_streamed, scan_table
from mlops_assets.core.models.history import (
    NoChampionError,
    champion_at,
    champion_history,
    change_record,
    change_tag,
)
from mlops_assets.core.models.modeling import Outputs, build_pipeline, fit, model_columns
from mlops_assets.core.scoring import batch
from mlops_assets.core.scoring.batch import (
    MODEL_VERSION,
    PREDICTION_TIME,
    RUN_ID,
    SCORE,
    ScoringError,
    ScoringModel,
    day_end,
    feature_time_column,
    population,
    population_features,
    score_day,
    view_inputs,
)
from mlops_assets.core.scoring.grading import drift_verdict, nulls_verdict, rows_verdict
from mlops_assets.core.training.training_set import training_set
from mlops_assets.spec import PipelineSpec, SpecError, load_spec

DAY = dt.date(2026, 1, 3)


def spec_of(cutoff: str = "at", **scoring: Any) -> PipelineSpec:
    """A small pipeline scoring the events of a day (or, with `active_within`, its active customers)."""
    entities = "active_within" in scoring
    spec = PipelineSpec.model_validate(
        {
            "name": "mini",
            "start_date": "2026-01-01",
            "entity": {"name": "customer", "keys": ["customer_id"]},
            "sources": {
                "events": {
                    "path": "events/{date}.parquet",
                    "event_timestamp": "ts",
                    "columns": {
                        "customer_id": {"dtype": "string"},
                        "ts": {"dtype": "datetime"},
                        "amount": {"dtype": "float"},
                        "application_id": {"dtype": "string"},
                        "approved": {"dtype": "int"},
                    },
                }
            },
            "feature_views": {
                "spend": {
                    "source": "events",
                    "ttl": "1d",
                    "aggregations": [
                        {"functions": ["count"], "windows": ["1d"]},
                        {"column": "amount", "functions": ["sum", "max"], "windows": ["1d"]},
                    ],
                }
            },
            "request_features": {"amount": {"dtype": "float"}},
            "label": {
                "source": "events",
                "column": "approved",
                "timestamp": "ts",
                "prediction_timestamp": "ts",
                "feature_cutoff": cutoff,
            },
            "model": {
                "estimator": "sklearn.linear_model.LogisticRegression",
                "holdout": "1d",
                **({"features": ["count_1d", "amount_sum_1d", "amount_max_1d"]} if entities else {}),
            },
            "promotion": {"minimum": 0.0},
            "scoring": {
                "population": {"source": "events", **({} if entities else {"carry": ["application_id"]}), **scoring}
            },
        }
    )
    assert spec.cross_reference_problems() == []
    return spec


def events() -> pl.DataFrame:
    """Four days of events of 12 customers, every 50 minutes or so: distinct times, so a row is known by its time."""
    rng = np.random.default_rng(3)
    n = 4 * 24
    times = [dt.datetime(2026, 1, 1) + dt.timedelta(minutes=60 * i + int(rng.integers(0, 50))) for i in range(n)]
    amounts = rng.gamma(2.0, 30.0, n).round(2)
    return pl.DataFrame(
        {
            "customer_id": [f"c{int(c):02d}" for c in rng.integers(0, 12, n)],
            "ts": times,
            "amount": amounts,
            "application_id": [f"a{i:04d}" for i in range(n)],
            "approved": (amounts + rng.normal(0, 20, n) > 60).astype(int),
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")))


def lake(tmp_path: Path, spec: PipelineSpec, frame: pl.DataFrame) -> tuple[Path, dict[str, pl.LazyFrame]]:
    """The raw table of the events (daily partitions) and the views' rows."""
    raw = tmp_path / "raw_events"
    rows = frame.with_columns(pl.col("ts").dt.date().cast(pl.String).alias(PARTITION_COLUMN))
    replace_partitions(raw, rows, rows.get_column(PARTITION_COLUMN).unique().to_list())
    return raw, {name: compute_features(spec, name, frame.lazy()) for name in spec.feature_views}


def champion(spec: PipelineSpec, frame: pl.DataFrame, version: str = "1") -> ScoringModel:
    features = {name: compute_features(spec, name, frame.lazy()) for name in spec.feature_views}
    training, _ = training_set(spec, frame.lazy(), features)
    assert spec.model is not None
    columns = model_columns(spec, training)
    pipeline = fit(build_pipeline(spec.model, columns), training, columns, "approved")
    return ScoringModel(version, pipeline, "binary", spec.model.threshold)


@pytest.mark.parametrize("cutoff", ["at", "before", "previous_day"])
def test_a_rows_features_are_those_the_training_set_joins_to_the_same_event(tmp_path: Path, cutoff: str) -> None:
    spec, frame = spec_of(cutoff), events()
    raw, features = lake(tmp_path, spec, frame)
    people = population(spec, raw, DAY)
    (chunk,) = list(people.chunks())
    joined = population_features(spec, chunk, view_inputs(spec, features, DAY), entities=False)
    training, _ = training_set(spec, frame.lazy(), features)
    expected = training.filter(pl.col("ts").dt.date() == DAY)
    names = ["count_1d", "amount_sum_1d", "amount_max_1d"]
    assert joined.height == expected.height == frame.filter(pl.col("ts").dt.date() == DAY).height
    got = joined.select("customer_id", pl.col(PREDICTION_TIME).alias("ts"), *names).sort("ts")
    assert got.equals(expected.select("customer_id", "ts", *names).sort("ts"))
    assert got.select(pl.col(names).null_count().sum()).row(0) != (got.height,)  # features were found


def test_an_active_entity_is_scored_once_as_of_the_days_end_with_its_latest_row_before_midnight(
    tmp_path: Path,
) -> None:
    spec, frame = spec_of(active_within="2d"), events()
    raw, features = lake(tmp_path, spec, frame)
    people = population(spec, raw, DAY)
    active = frame.filter(pl.col("ts").dt.date().is_between(DAY - dt.timedelta(days=1), DAY))
    assert people.rows == active.get_column("customer_id").n_unique()
    (chunk,) = list(people.chunks())
    joined = population_features(spec, chunk, view_inputs(spec, features, DAY), entities=True)
    end = day_end(DAY)
    assert joined.get_column(PREDICTION_TIME).unique().to_list() == [end]
    rows = features["spend"].collect()
    for row in joined.iter_rows(named=True):
        before = rows.filter(
            (pl.col("customer_id") == row["customer_id"])
            & (pl.col(FEATURE_TIMESTAMP) < end)
            & (pl.col(FEATURE_TIMESTAMP) >= end - dt.timedelta(days=1))
        ).sort(FEATURE_TIMESTAMP)
        latest = before.row(-1, named=True) if before.height else None
        assert row[feature_time_column("spend")] == (latest[FEATURE_TIMESTAMP] if latest else None)
        assert row["amount_sum_1d"] == (latest["amount_sum_1d"] if latest else None)


def test_a_day_is_written_whole_in_chunks_and_a_rerun_replaces_only_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = spec_of().model_dump(mode="json")
    data["scoring"]["chunk_rows"] = 5
    spec, frame = PipelineSpec.model_validate(data), events()
    raw, features = lake(tmp_path, spec, frame)
    model, path = champion(spec, frame), tmp_path / "scores"
    other = DAY - dt.timedelta(days=1)
    score_day(spec, path, population(spec, raw, other), view_inputs(spec, features, other), model, "run-0")
    first = score_day(spec, path, population(spec, raw, DAY), view_inputs(spec, features, DAY), model, "run-1")
    day_rows = frame.filter(pl.col("ts").dt.date() == DAY)
    assert first.rows == first.population_rows == day_rows.height > 5  # several chunks
    again = score_day(spec, path, population(spec, raw, DAY), view_inputs(spec, features, DAY), model, "run-2")
    table = scan_table(path).collect()
    day = table.filter(pl.col(PARTITION_COLUMN) == DAY.isoformat())
    assert day.height == day_rows.height and day.get_column(RUN_ID).unique().to_list() == ["run-2"]
    assert sorted(day.get_column("application_id")) == sorted(day_rows.get_column("application_id"))
    assert table.filter(pl.col(PARTITION_COLUMN) == other.isoformat()).get_column(RUN_ID).unique().to_list() == [
        "run-0"
    ]
    assert again.delta_version == first.delta_version + 1  # type: ignore[operator]
    assert day.get_column(MODEL_VERSION).unique().to_list() == ["1"]
    assert day.get_column(SCORE).is_between(0, 1).all()
    assert rows_verdict(again, day.height).level == "ok"
    # The drift check's sample: every score of a day under DRIFT_SAMPLE_ROWS, a uniform share of those above it.
    assert sum(len(o.values) for o in again.sample) == again.rows
    monkeypatch.setattr(batch, "DRIFT_SAMPLE_ROWS", again.rows // 3)
    capped = score_day(spec, path, population(spec, raw, DAY), view_inputs(spec, features, DAY), model, "run-3")
    assert capped.rows == again.rows and 0 < sum(len(o.values) for o in capped.sample) < capped.rows


def test_an_empty_population_empties_the_days_partition_and_warns(tmp_path: Path) -> None:
    spec, frame = spec_of(), events()
    raw, features = lake(tmp_path, spec, frame)
    model, path = champion(spec, frame), tmp_path / "scores"
    score_day(spec, path, population(spec, raw, DAY), view_inputs(spec, features, DAY), model, "run-1")
    # The day's events are gone (ingested again, empty): its scores go too, in one commit.
    replace_partitions(raw, frame.clear().with_columns(pl.lit(DAY.isoformat()).alias(PARTITION_COLUMN)), [str(DAY)])
    result = score_day(spec, path, population(spec, raw, DAY), view_inputs(spec, features, DAY), model, "run-2")
    assert (result.population_rows, result.rows) == (0, 0)
    assert scan_table(path, [DAY.isoformat()]).collect().height == 0
    verdict = rows_verdict(result, 0)
    assert verdict.level == "warn" and "is empty" in verdict.description
    assert drift_verdict(spec, Outputs("binary", np.full(300, 0.5)), result.outputs("binary")).level == "ok"


def test_a_population_column_missing_from_the_ingested_table_is_named(tmp_path: Path) -> None:
    spec, frame = spec_of(), events()
    raw, _ = lake(tmp_path, spec, frame.drop("application_id"))
    with pytest.raises(ScoringError, match=r"population's columns \['application_id'\] are not in the ingested table"):
        population(spec, raw, DAY)


def test_rows_without_a_views_usable_features_warn_naming_the_view(tmp_path: Path) -> None:
    spec, frame = spec_of(), events()
    raw, features = lake(tmp_path, spec, frame)
    stale = {"spend": features["spend"].with_columns(pl.col(FEATURE_TIMESTAMP) - dt.timedelta(days=3))}
    result = score_day(
        spec, tmp_path / "scores", population(spec, raw, DAY), view_inputs(spec, stale, DAY), champion(spec, frame), "r"
    )
    assert result.without_features["spend"] == result.rows
    verdict = nulls_verdict(spec, result)
    assert verdict.level == "warn" and "spend 100.0% (max 50%)" in verdict.description


def test_the_score_distribution_is_graded_against_the_holdout_scores() -> None:
    spec = spec_of()
    rng = np.random.default_rng(0)
    reference = Outputs("binary", rng.beta(2, 5, 5000))
    assert drift_verdict(spec, reference, Outputs("binary", rng.beta(2, 5, 5000))).level == "ok"
    shifted = drift_verdict(spec, reference, Outputs("binary", rng.beta(5, 2, 5000)))
    assert shifted.level == "error" and "__score__" in shifted.description
    few = drift_verdict(spec, reference, Outputs("binary", rng.beta(5, 2, 50)))
    assert few.level == "ok" and "not graded" in few.description


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_the_champion_of_a_moment_is_the_last_change_at_or_before_it() -> None:
    recorded = {
        change_tag(1, "1"): change_record("1", None, "2026-01-05T00:00:00+00:00"),
        change_tag(2, "2"): change_record("2", "1", "2026-01-08T12:00:00+00:00"),
        change_tag(3, "1"): change_record("1", "2", "2026-01-09T00:00:00+00:00"),  # a rollback
        change_tag(4, "2"): change_record("2", "1", "2026-01-09T00:00:00+00:00"),  # promoted again in the same second
    }
    # The versions' own tags keep only their latest promotion: they add nothing the record has.
    versions = {
        "1": {"promoted_at": "2026-01-05T00:00:00+00:00"},
        "2": {"promoted_at": "2026-01-09T00:00:00+00:00", "rolled_back_at": "2026-01-09T00:00:00+00:00"},
    }
    history = champion_history(recorded, versions)
    assert [(c.version, c.previous) for c in history] == [("1", None), ("2", "1"), ("1", "2"), ("2", "1")]
    assert champion_at(history, _at("2026-01-05T00:00:00")).version == "1"  # naive: UTC; at the moment itself
    assert champion_at(history, _at("2026-01-08T23:59:59+00:00")).version == "2"
    assert champion_at(history, _at("2026-01-09T00:00:00+00:00")).version == "2"  # the later record wins a tie
    with pytest.raises(NoChampionError, match=r"2026-01-04T23:59:59\+00:00 \(the first was at 2026-01-05"):
        champion_at(history, _at("2026-01-04T23:59:59+00:00"))
    with pytest.raises(NoChampionError, match="none is recorded"):
        champion_at([], _at("2026-01-04T00:00:00+00:00"))


def test_changes_numbered_by_an_older_registry_and_stamped_by_a_newer_one_read_as_one_history() -> None:
    recorded = {
        "champion_change.000001": change_record("1", None, "2026-01-05T00:00:00+00:00"),
        "champion_change.000002": change_record("2", "1", "2026-01-09T00:00:00+00:00"),
        # Recorded after the upgrade, in the same second as the last numbered change: it comes after it.
        change_tag(1_796_774_400_000_000_000, "1"): change_record("1", "2", "2026-01-09T00:00:00+00:00"),
    }
    assert [(c.version, c.previous) for c in champion_history(recorded, {})] == [("1", None), ("2", "1"), ("1", "2")]


def test_a_hand_edited_change_record_is_named_with_what_a_record_holds() -> None:
    for text in ("{not json", '{"version": "2"}', '{"version": "2", "at": "yesterday"}'):
        with pytest.raises(ValueError, match=r"registered model tag 'champion_change.000003' is not a champion change"):
            champion_history({"champion_change.000003": text}, {})


def test_a_registry_without_the_record_rebuilds_its_history_from_the_versions_tags() -> None:
    versions = {
        "1": {"promoted_at": "2026-01-05T00:00:00+00:00"},
        "2": {
            "promoted_at": "2026-01-07T00:00:00+00:00",
            "previous_champion": "1",
            "rolled_back_at": "2026-01-08T00:00:00+00:00",
        },
        "3": {},
    }
    history = champion_history({"other": "tag"}, versions)
    assert [(c.at.day, c.version) for c in history] == [(5, "1"), (7, "2"), (8, "1")]
    assert champion_at(history, _at("2026-01-08T06:00:00+00:00")).version == "1"
    assert json.loads(change_record("2", "1", "x")) == {"version": "2", "previous": "1", "at": "x"}


def _problems(**scoring: Any) -> list[str]:
    base = spec_of()
    data = base.model_dump(mode="json")
    data["scoring"] = {"population": {"source": "events"}, **scoring}
    return PipelineSpec.model_validate(data).cross_reference_problems()


def test_a_population_that_cannot_be_had_is_refused_naming_the_field() -> None:
    assert _problems(population={"source": "clicks"}) == [
        "scoring.population.source: unknown source 'clicks' (known: ['events'])"
    ]
    assert _problems(population={"source": "events", "carry": ["branch", "customer_id"]}) == [
        "scoring.population.carry: 'branch' is not a column of source 'events'",
        "scoring.population.carry: 'customer_id' is already a column of the scores table",
    ]
    assert _problems(population={"source": "events", "active_within": "7d"}) == [
        "scoring.population.active_within: an entity population has no request, but the model takes the request "
        "features ['amount']: score rows (omit active_within) or leave them out of model.features"
    ]
    data = spec_of().model_dump(mode="json")
    data["sources"]["other"] = {
        "path": "o/{date}.csv",
        "event_timestamp": "ts",
        "columns": {"customer_id": {"dtype": "string"}, "ts": {"dtype": "datetime"}},
    }
    data["scoring"] = {"population": {"source": "other"}}
    assert PipelineSpec.model_validate(data).cross_reference_problems() == [
        "scoring.population.source: the model takes request feature 'amount', which is not a column of source 'other'"
    ]
    data["scoring"] = {"population": {"source": "other", "active_within": "2d"}}
    data["model"]["features"] = ["count_1d"]
    assert PipelineSpec.model_validate(data).cross_reference_problems() == []
    data["scoring"]["population"]["carry"] = ["ts"]
    assert PipelineSpec.model_validate(data).cross_reference_problems() == [
        "scoring.population.carry: an entity population has one row per entity, no columns to carry"
    ]


def test_the_scoring_section_is_checked_when_the_spec_loads(tmp_path: Path) -> None:
    data = spec_of().model_dump(mode="json", exclude_defaults=True)
    data["scoring"] = {"population": {"source": "events", "active_within": "36h"}, "schedule": "every night"}
    path = tmp_path / "mini.yaml"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    text = str(error.value)
    assert str(path) in text
    assert "scoring.population.active_within: Value error, an activity window is whole days" in text
    assert "scoring.schedule: Value error, expected a cron expression of 5 fields" in text
    data["scoring"] = {"population": {"source": "events"}}
    data.pop("model"), data.pop("promotion")
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError, match="scoring: batch scoring needs a model"):
        load_spec(path)


def test_a_stream_that_fails_midway_commits_nothing_and_its_error_is_the_streams(tmp_path: Path) -> None:
    path = tmp_path / "t"
    day = pl.DataFrame({"x": [1.0, 2.0], PARTITION_COLUMN: ["2026-01-01"] * 2})
    schema = day.to_arrow().schema
    replace_partitions_streamed(path, lambda: iter([day]), ["2026-01-01"], schema)

    def failing() -> Iterator[pl.DataFrame]:
        yield day.with_columns(pl.col("x") * 10)
        raise RuntimeError("the population's file went away")

    with pytest.raises(RuntimeError, match="the population's file went away"):
        replace_partitions_streamed(path, failing, ["2026-01-01"], schema)
    assert scan_table(path).collect().equals(day)
    with pytest.raises(ValueError, match="1 rows of t fall outside the partitions being replaced"):
        replace_partitions_streamed(
            path,
            lambda: iter([day.head(1).with_columns(pl.lit("2026-01-02").alias(PARTITION_COLUMN))]),
            ["2026-01-01"],
            schema,
        )
    assert scan_table(path).collect().equals(day)


@pytest.mark.parametrize(
    ("task", "estimator"),
    [("multiclass", "sklearn.tree.DecisionTreeClassifier"), ("regression", "sklearn.linear_model.Ridge")],
)
def test_a_multiclass_or_regression_model_writes_its_class_or_value(tmp_path: Path, task: str, estimator: str) -> None:
    data = spec_of().model_dump(mode="json")
    data["model"] = {"task": task, "estimator": estimator, "holdout": "1d"}
    spec = PipelineSpec.model_validate(data)
    amount = pl.col("amount")
    label = (amount // 40).clip(0, 2) if task == "multiclass" else (amount // 5)
    frame = events().with_columns(label.cast(pl.Int64).alias("approved"))
    raw, features = lake(tmp_path, spec, frame)
    training, _ = training_set(spec, frame.lazy(), features)
    assert spec.model is not None
    columns = model_columns(spec, training)
    model = ScoringModel("3", fit(build_pipeline(spec.model, columns), training, columns, "approved", task), task)
    result = score_day(
        spec, tmp_path / "scores", population(spec, raw, DAY), view_inputs(spec, features, DAY), model, "r"
    )
    scores = scan_table(tmp_path / "scores").collect()
    assert scores.height == result.rows > 0
    if task == "multiclass":
        assert scores.schema["prediction"] == pl.String
        assert set(scores["prediction"]) <= {"0", "1", "2"} and scores["score"].is_between(1 / 3, 1).all()
        assert result.outputs(task).values.shape == (result.rows, 3)
    else:
        assert scores.schema["prediction"] == pl.Float64 and scores["score"].equals(scores["prediction"].alias("score"))
    assert drift_verdict(spec, result.outputs(task), result.outputs(task)).level == "ok"
