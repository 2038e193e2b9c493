"""Grading a window: offline drift table by table, with the evidence a person acts on."""

import json
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.models.modeling import Columns, Outputs
from mlops_assets.core.monitoring.grading import (
    OfflineFrames,
    ViewRows,
    WindowReport,
    distribution_level,
    offline_stats,
    offline_verdict,
    out_of_range,
    output_stats,
    served_features,
    warm_masks,
    window_report,
)
from mlops_assets.core.serving.prediction_log import logged_outputs
from mlops_assets.spec import MonitoringSpec, load_specs


def _tables(shift: float, rows: int = 3000, seed: int = 0) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    return {
        "customer_spend": pl.DataFrame(
            {"amount_sum_1d": rng.gamma(2.0, 50.0, rows) * shift, "count_1d": rng.poisson(3, rows)}
        ),
        "raw_transactions": pl.DataFrame(
            {"channel": rng.choice(["online", "pos", "atm"], rows), "amount": rng.gamma(2, 40, rows)}
        ),
    }


def test_offline_features_are_compared_table_by_table_and_the_mover_is_named() -> None:
    monitoring = MonitoringSpec()
    same = offline_stats(OfflineFrames(_tables(1.0), _tables(1.0, seed=1), {}), monitoring)
    assert set(same.get_column("feature")) == {"amount_sum_1d", "count_1d", "channel", "amount"}
    assert set(same.get_column("source")) == {"offline"}
    assert offline_verdict("2026-03-01", same, monitoring).level == "ok"
    moved = offline_stats(OfflineFrames(_tables(1.0), _tables(2.0, seed=1), {}), monitoring)
    verdict = offline_verdict("2026-03-01", moved, monitoring)
    assert verdict.level == "error" and "amount_sum_1d" in verdict.description
    assert verdict.evidence["features"] == ["amount_sum_1d"]


def test_an_offline_window_without_rows_is_not_graded() -> None:
    monitoring = MonitoringSpec()
    empty = {name: frame.head(0) for name, frame in _tables(1.0).items()}
    verdict = offline_verdict(
        "2026-03-01", offline_stats(OfflineFrames(_tables(1.0), empty, {}), monitoring), monitoring
    )
    assert verdict.level == "warn" and "0 offline feature rows" in verdict.description


def test_values_outside_the_training_range_are_counted_per_feature() -> None:
    reference = pl.DataFrame({"amount": [1.0, 5.0, 10.0], "count_1d": [0, 2, 4]})
    current = pl.DataFrame({"amount": [0.5, 5.0, 11.0, None], "count_1d": [1, 2, 3, 4]})
    shares = out_of_range(reference, current, ["amount", "count_1d"])
    assert {name: share for name, (share, _) in shares.items()} == {"amount": 2 / 3, "count_1d": 0.0}
    # Of 3 new values, each outside the range of 3 known ones with probability 1/2: 2 of 3 outside is chance.
    assert shares["amount"][1].warn == 1.0
    assert out_of_range(reference.head(0), current, ["amount"]) == {}


def _requests(rows: int) -> dict[str, list[object]]:
    """The time and entity of `rows` logged requests of one day, each of its own customer."""
    return {
        "timestamp": [datetime(2026, 1, 1, 12)] * rows,
        "entity": [json.dumps({"customer_id": f"c{i:06d}"}) for i in range(rows)],
    }


def _window(task: str, shift: float, rows: int = 2000) -> WindowReport:
    rng = np.random.default_rng(0)
    classes = ("a", "b", "c")
    reference = pl.DataFrame({"x": rng.normal(size=rows)})
    if task == "multiclass":
        ref = Outputs(task, rng.dirichlet([4, 2, 1], rows), classes)
        served = rng.dirichlet([4 - 3 * shift, 2, 1 + 3 * shift], rows)
        extra = {
            "probabilities": [json.dumps(dict(zip(classes, r, strict=True))) for r in served],
            "score": served.max(axis=1),
        }
    else:
        ref = Outputs(task, rng.normal(100, 10, rows))
        extra = {"score": rng.normal(100 + 10 * shift, 10, rows), "probabilities": [None] * rows}
    log = pl.DataFrame(
        {
            "model_version": ["1"] * rows,
            **_requests(rows),
            "features": [json.dumps({"x": float(v)}) for v in rng.normal(size=rows)],
            "degraded": [False] * rows,
            **extra,
        }
    )
    return window_report("2026-01-01", MonitoringSpec(), reference, ref, log, Columns(["x"], []), "1", {"1"})


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_prediction_drift_reads_the_outputs_of_each_kind(task: str) -> None:
    steady = _window(task, 0.0)
    assert steady.checks["prediction_drift"].level == "ok"
    moved = _window(task, 1.0)
    verdict = moved.checks["prediction_drift"]
    assert verdict.level == "error"
    outputs = moved.stats.filter(pl.col("feature").str.starts_with("__")).get_column("feature").to_list()
    if task == "multiclass":
        # The predicted classes and each class's probability are graded.
        assert outputs == ["__label__", "__proba_a__", "__proba_b__", "__proba_c__"]
        assert "__proba_a__" in verdict.description and "__label__" in verdict.description
    else:
        assert outputs == ["__score__"]  # the distribution of predicted values


def test_a_windowed_feature_is_compared_only_on_training_rows_whose_window_was_full() -> None:
    """A 30-day window is filling up for the first 30 days of data: those rows are not its reference. A feature
    with no full window in the whole training set is not graded (data quality says so) and not counted by dataset
    drift; a 7-day one is graded on its rows from day 8."""
    (spec,) = load_specs()  # fraud: windows of 1h to 30d, data from 2026-01-01
    rng = np.random.default_rng(0)
    times = pl.datetime_range(datetime(2026, 1, 1), datetime(2026, 1, 20, 23), "1h", eager=True)
    day = (times - datetime(2026, 1, 1)).dt.total_days()
    # A sum over a filling window grows with the days of history, then stays put: the served window is full.
    reference = pl.DataFrame(
        {"t": times, "amount_sum_7d": rng.normal(100, 10, len(times)) * (day.clip(0, 7) / 7), "amount_sum_30d": 1.0}
    )
    masks = warm_masks(reference, "t", spec, ["amount_sum_7d", "amount_sum_30d"])
    assert masks["amount_sum_7d"].sum() == (times >= datetime(2026, 1, 8)).sum() and not masks["amount_sum_30d"].any()
    served = pl.DataFrame({"amount_sum_7d": rng.normal(100, 10, 500), "amount_sum_30d": rng.normal(300, 30, 500)})
    log = pl.DataFrame(
        {
            "model_version": ["1"] * 500,
            **_requests(500),
            "features": [json.dumps(r) for r in served.iter_rows(named=True)],
            "degraded": [False] * 500,
            "score": rng.random(500),
            "probabilities": [None] * 500,
        }
    )
    columns = Columns(["amount_sum_7d", "amount_sum_30d"], [])
    outputs = Outputs("binary", rng.random(len(times)))
    report = window_report("2026-01-21", MonitoringSpec(), reference, outputs, log, columns, "1", {"1"}, masks)
    assert report.checks["feature_drift"].level == "ok"  # against all rows, the 7-day sum would have drifted
    assert "0% of 1 live features" in report.checks["dataset_drift"].description
    quality = report.checks["data_quality"]
    assert quality.level == "ok" and "not graded yet: amount_sum_30d" in quality.description
    unmasked = window_report("2026-01-21", MonitoringSpec(), reference, outputs, log, columns, "1", {"1"})
    assert unmasked.checks["feature_drift"].level != "ok"


def test_served_vectors_read_whatever_json_type_each_record_gave_a_value() -> None:
    """A count logged as 3 in one record and 2.5 (a mean) or null in another: one column of floats, not an error
    (a window of several days met this first)."""
    log = pl.DataFrame({"features": [json.dumps({"x": None})] * 200 + [json.dumps({"x": 3}), json.dumps({"x": 2.5})]})
    served = served_features(log, Columns(["x"], []))
    assert served.get_column("x").to_list()[-2:] == [3.0, 2.5] and served.schema["x"] == pl.Float64


def _daily_rows(
    entities: int, days: int, first: datetime, counts: float = 3.0, scale: float = 1.0, reuses: int = 5
) -> pl.DataFrame:
    """Each entity's view row of each day (a count, a mean, a category), reused by 1 to `reuses` rows of that day
    (training rows, or requests), each row with its own request field `amount` and time."""
    rng = np.random.default_rng((entities, days, reuses))
    n = entities * days
    rows = pl.DataFrame(
        {
            "customer_id": [f"c{e}" for e in range(entities)] * days,
            "day": np.repeat(np.arange(days), entities),
            "count_1d": rng.poisson(counts, n),
            "amount_mean_1d": rng.gamma(2.0, 50.0 * scale, n),
            "top_channel": rng.choice(["web", "app", "shop"], n),
            "uses": rng.integers(1, reuses + 1, n),
        }
    )
    reused = rows.select(pl.exclude("uses").repeat_by("uses")).explode(pl.all())
    hours = rng.integers(0, 24, reused.height)
    return reused.with_columns(
        (pl.lit(first) + pl.duration(days=pl.col("day"), hours=pl.Series(hours))).alias("ts"),
        pl.Series("amount", rng.normal(50, 10, reused.height)),
    )


def _served(rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` as the prediction log holds them: each request's time, entity, features and the champion's score."""
    return pl.DataFrame(
        {
            "model_version": ["1"] * rows.height,
            "timestamp": rows.get_column("ts"),
            "entity": [json.dumps({"customer_id": c}) for c in rows.get_column("customer_id")],
            "features": [json.dumps(r) for r in rows.select(*VIEW_COLUMNS.all).iter_rows(named=True)],
            "degraded": [False] * rows.height,
            "score": np.random.default_rng(1).random(rows.height),
            "probabilities": [None] * rows.height,
        }
    )


VIEW_COLUMNS = Columns(["count_1d", "amount_mean_1d", "amount"], ["top_channel"])
VIEWS = ViewRows(frozenset({"count_1d", "amount_mean_1d", "top_channel"}), ["customer_id"], "ts")


def _graded(reference: pl.DataFrame, served: pl.DataFrame, columns: Columns = VIEW_COLUMNS) -> WindowReport:
    outputs = Outputs("binary", np.random.default_rng(2).random(2000))
    log = _served(served)
    return window_report("2026-01-22", MonitoringSpec(), reference, outputs, log, columns, "1", {"1"}, views=VIEWS)


def _column(report: WindowReport, feature: str, name: str) -> object:
    return report.stats.filter(pl.col("feature") == feature).get_column(name).item()


def test_a_views_daily_rows_are_counted_once_per_entity_and_day_against_training_rows() -> None:
    """feature_cutoff previous_day: a training row holds its entity's row of the day before, as a served request
    does. Each (entity, day) row is one observation on both sides however many rows reused it; a count of 3 on
    many days of one entity is many observations (counted per entity and value, a low-count feature read as
    drifted when nothing had changed)."""
    first = datetime(2026, 1, 1)
    reference = _daily_rows(400, 20, first)
    entity_days = reference.select("customer_id", "day").n_unique()
    steady = _graded(reference, _daily_rows(400, 1, datetime(2026, 1, 22)))
    assert steady.checks["feature_drift"].level == "ok", steady.checks["feature_drift"].description
    assert steady.checks["dataset_drift"].level == "ok"
    for feature in ("count_1d", "amount_mean_1d", "top_channel"):
        assert _column(steady, feature, "reference_rows") == entity_days < reference.height
        assert _column(steady, feature, "current_rows") == 400
    assert _column(steady, "amount", "reference_rows") == reference.height  # a request field: every row counts

    shifted = _graded(reference, _daily_rows(400, 1, datetime(2026, 1, 22), counts=6.0, scale=2.0))
    verdict = shifted.checks["feature_drift"]
    assert verdict.level == "error" and set(verdict.evidence["features"]) == {"count_1d", "amount_mean_1d"}


def test_a_few_segments_daily_rows_are_reported_not_graded() -> None:
    """Three segments' daily rows are three observations a day: fewer than monitoring.min_rows, so the view's
    features are reported as not graded, never 'ok' (even when they moved); the request field is graded."""
    first = datetime(2026, 1, 1)
    reference = _daily_rows(3, 20, first, reuses=200)
    served = _daily_rows(3, 1, datetime(2026, 1, 22), counts=30.0, scale=5.0, reuses=200)
    report = _graded(reference, served)
    drift = report.checks["feature_drift"]
    assert drift.level == "ok" and "not graded, too few rows" in drift.description
    assert "count_1d (3 rows)" in drift.description
    assert drift.evidence["not_graded"] == ["count_1d", "amount_mean_1d", "top_channel"]
    assert _column(report, "count_1d", "distribution_level") == "not graded"
    assert _column(report, "amount", "distribution_level") == "ok"
    assert "3 features with too few rows not counted" in report.checks["dataset_drift"].description

    moved = served.with_columns(pl.col("amount") * 3)
    assert _graded(reference, moved).checks["feature_drift"].evidence["features"] == ["amount"]
    # Without the request field nothing is graded: a warning, not a pass.
    alone = _graded(reference, served, Columns(["count_1d", "amount_mean_1d"], ["top_channel"])).checks["feature_drift"]
    assert alone.level == "warn" and "no feature graded; not graded, too few rows" in alone.description


def test_an_offline_table_of_a_few_segments_daily_rows_is_reported_not_graded() -> None:
    """Offline, a view's table holds each segment's last row of each day: three rows in a day's window are reported,
    not graded, beside a raw table graded on its events."""
    monitoring = MonitoringSpec()
    segments = {"segment_activity": pl.DataFrame({"events_1d": np.arange(60.0)})}
    current = {"segment_activity": pl.DataFrame({"events_1d": [500.0, 600.0, 700.0]})}
    stats = offline_stats(OfflineFrames(_tables(1.0) | segments, _tables(1.0, seed=1) | current, {}), monitoring)
    verdict = offline_verdict("2026-03-01", stats, monitoring)
    assert verdict.level == "ok" and "not graded, too few rows" in verdict.description
    assert "events_1d (3 rows)" in verdict.description


def _segment_day(rng: np.random.Generator, levels: np.ndarray, per_segment: int) -> pl.DataFrame:
    """A day's log of a segment-keyed pipeline: each segment's requests answered from its one daily row, so their
    scores sit near the segment's level of the day."""
    rows = len(levels) * per_segment
    score = np.clip(np.repeat(levels, per_segment) + rng.normal(0, 0.01, rows), 0, 1)
    return pl.DataFrame(
        {
            "model_version": ["1"] * rows,
            "timestamp": [datetime(2026, 1, 1, 12)] * rows,
            "entity": [json.dumps({"segment": f"s{i // per_segment}"}) for i in range(rows)],
            "features": [json.dumps({"x": float(v)}) for v in rng.normal(size=rows)],
            "degraded": [False] * rows,
            "score": score,
            "probabilities": [None] * rows,
        }
    )


def test_scores_that_move_together_by_entity_and_day_are_graded_at_their_effective_size() -> None:
    """1,000 answers of a day from 10 segments are about 10 observations of the score's distribution, not 1,000.
    Graded as independent rows, unchanged days of such a pipeline warn nearly always; at their effective size (the
    rows over the design effect of the scores clustered by entity and day) none of 20 does, and a real shift still
    fails."""
    rng = np.random.default_rng(3)
    reference, features = Outputs("binary", rng.beta(2, 5, 5000)), pl.DataFrame({"x": rng.normal(size=5000)})

    def graded(levels: np.ndarray) -> tuple[Any, str]:
        log = _segment_day(rng, levels, 100)
        report = window_report("2026-01-01", MonitoringSpec(), features, reference, log, Columns(["x"], []), "1", {"1"})
        as_independent = distribution_level(
            output_stats(reference, logged_outputs(log, "binary"), 10)[0], MonitoringSpec().prediction_drift
        )
        return report.checks["prediction_drift"], as_independent

    unchanged = [graded(rng.beta(2, 5, 10)) for _ in range(20)]
    assert [verdict.level for verdict, _ in unchanged] == ["ok"] * 20
    assert sum(level != "ok" for _, level in unchanged) >= 15  # what grading them as 1,000 rows said
    assert all(verdict.evidence["design_effect"] > 50 for verdict, _ in unchanged)
    assert "1000 answers, worth 10 independent ones" in unchanged[0][0].description
    shifted, _ = graded(rng.beta(5, 2, 10))
    assert shifted.level == "error", shifted.description
