"""The drift report asset on the small fraud lake: logged windows in, statistics, checks and an HTML report out."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from mlops_assets.core.lake import PARTITION_COLUMN, replace_partitions, scan_table, table_path
from mlops_assets.core.models.modeling import fitted_columns, to_pandas
from mlops_assets.core.models.registry import open_registry
from mlops_assets.core.serving.prediction_log import LOG_SCHEMA
from mlops_assets.definitions import build_definitions
from tests.helpers import QUIET, Served

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _log_window(served: Served, day: str, rows: pl.DataFrame, version: str = "1", **edits: Any) -> None:
    """Served traffic for `day`: training rows as the service would have logged them, scored by the champion."""
    registry = open_registry(str(served.data), served.tracking)
    model = registry.load_sklearn("fraud", "1")
    columns = fitted_columns(model)
    features = rows.select(columns.all).with_columns(**edits) if edits else rows.select(columns.all)
    scores = model.predict_proba(to_pandas(features, columns))[:, 1] if rows.height else []
    log = pl.DataFrame(
        {
            "request_id": [f"{day}-{i}" for i in range(rows.height)],
            "timestamp": [f"{day}T12:00:00"] * rows.height,
            "entity": [json.dumps({"customer_id": c}) for c in rows.get_column("customer_id")],
            "features": [json.dumps(r) for r in features.iter_rows(named=True)],
            "feature_timestamps": [None] * rows.height,  # not served from an online store: no skew to compare
            "request": [json.dumps({"channel": c}) for c in rows.get_column("channel")],
            "model_version": [version] * rows.height,
            "score": [float(s) for s in scores],
            "label": [None] * rows.height,  # multiclass only
            "probabilities": [None] * rows.height,
            "shadow_version": [None] * rows.height,
            "shadow_score": [None] * rows.height,
            "shadow_label": [None] * rows.height,
            "shadow_probabilities": [None] * rows.height,
            "degraded": [False] * rows.height,
            "reason": [None] * rows.height,
            "latency_ms": [5.0] * rows.height,
        },
        schema_overrides={"timestamp": pl.String},
    ).with_columns(pl.col("timestamp").str.to_datetime(time_unit="us"))
    frame = log.select(list(LOG_SCHEMA)).cast(LOG_SCHEMA).with_columns(pl.lit(day).alias(PARTITION_COLUMN))  # type: ignore[arg-type]
    replace_partitions(table_path(served.data, "fraud", "prediction_log"), frame, [day])


def _report(served: Served, day: str) -> tuple[dict[str, Any], dict[str, tuple[bool, str, str]]]:
    defs = build_definitions(served.specs, str(served.data), tracking_uri=served.tracking)
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("fraud_monitoring").execute_in_process(
            instance=instance,
            partition_key=day,
            asset_selection=[dg.AssetKey(["fraud", "drift_report"])],
            run_config=QUIET,
        )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    metadata = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    checks = {
        e.check_name: (e.passed, e.severity.value, e.description or "") for e in result.get_asset_check_evaluations()
    }
    return metadata, checks


@pytest.fixture(scope="module")
def holdout(served: Served) -> pl.DataFrame:
    """A sample of training rows as live traffic would be: from the days whose 7-day windows were full (the lake's
    30-day windows are full on no day of it: those features are not graded)."""
    training = scan_table(table_path(served.data, "fraud", "training_set")).collect()
    return training.filter(pl.col("transaction_ts") >= datetime(2026, 1, 8)).sample(1500, seed=1)


def test_a_window_like_training_raises_nothing(served: Served, holdout: pl.DataFrame) -> None:
    _log_window(served, "2026-02-01", holdout)
    metadata, checks = _report(served, "2026-02-01")
    assert checks["dataset_drift"][0] and checks["prediction_drift"][0], checks
    assert metadata["logged_predictions"] == 1500 and metadata["drifted_share"] == 0.0
    report = Path(metadata["report"].removeprefix("file://"))
    assert report.exists() and "fraud drift report, 2026-02-01" in report.read_text()
    stats = scan_table(table_path(served.data, "fraud", "drift_stats")).filter(pl.col("window") == "2026-02-01")
    assert "amount" in stats.collect().get_column("feature").to_list()


def test_shifted_amounts_fail_the_feature_checks_with_evidence(served: Served, holdout: pl.DataFrame) -> None:
    amount_columns = [c for c in holdout.columns if c.startswith("amount")]
    shifted = {c: pl.col(c) * 3 for c in amount_columns}
    _log_window(served, "2026-02-02", holdout, **shifted)
    metadata, checks = _report(served, "2026-02-02")
    passed, severity, text = checks["feature_drift"]
    assert not passed and severity == "ERROR" and "amount" in text
    assert metadata["top_feature"].startswith("amount") and metadata["top_feature_psi"] > 0.25
    assert "values outside the training range" in checks["data_quality"][2]
    assert "amount" in metadata["top_movers"]
    report = Path(metadata["report"].removeprefix("file://")).read_text()
    assert report.count("data:image/png;base64") >= 2  # a distribution plot per drifted feature and the trends


def test_bad_windows_give_clear_check_results(served: Served, holdout: pl.DataFrame) -> None:
    _log_window(served, "2026-02-03", holdout.head(0))
    _, checks = _report(served, "2026-02-03")
    skew = checks.pop("training_serving_skew")
    assert skew[0] and "no answer with online feature rows to compare" in skew[2]
    offline = checks.pop("offline_feature_drift")  # the lake has no raw data that day
    assert not offline[0] and offline[1] == "WARN" and "0 offline feature rows" in offline[2]
    assert all(
        not ok and severity == "WARN" and "0 logged predictions" in text for ok, severity, text in checks.values()
    )

    _log_window(served, "2026-02-04", holdout, version="42", count_1h=pl.lit(None, pl.Float64))
    _, checks = _report(served, "2026-02-04")
    passed, severity, text = checks["data_quality"]
    assert not passed and severity == "ERROR"
    assert "count_1h is missing entirely" in text and "model versions the registry does not know: ['42']" in text
    assert checks["prediction_drift"][2].endswith("prediction drift not measured")
