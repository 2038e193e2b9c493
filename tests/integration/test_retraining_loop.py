"""The loop closed end to end in one temporary instance: concept drift -> performance check -> sensor -> retraining
-> a challenger that wins the gate -> promoted, with the reason recorded on its MLflow run."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mlops_assets.definitions import build_definitions
from mlops_assets.defs.common.resources import mlflow_resource
from mlops_assets.lake import PARTITION_COLUMN, replace_partitions, scan_table, table_path
from mlops_assets.modeling import fitted_columns, to_pandas
from mlops_assets.prediction_log import LOG_SCHEMA
from tests.conftest import QUIET, small_fraud_specs

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRST, DRIFT, LAST = date(2026, 1, 1), date(2026, 1, 17), date(2026, 1, 27)


def _specs(folder: Path) -> Path:
    specs = small_fraud_specs(
        folder,
        **{"slice_by: channel": "slice_by: null", "max_slice_drop: 0.05": "max_slice_drop: null"},
    )
    shared = specs / "shared" / "card_transactions.yaml"
    text = shared.read_text()
    start = text.index("    scenarios:")
    end = text.index("\nsources:")
    shared.write_text(text[:start] + f"    scenarios:\n      - {{kind: concept_drift, start: {DRIFT}}}\n" + text[end:])
    return specs


def _set_monitoring(specs: Path, floor: float) -> None:
    spec = specs / "fraud.yaml"
    spec.write_text(
        spec.read_text()
        + f"\nmonitoring:\n  min_rows: 100\n  performance_floor: {floor:.4f}\n"
        + "  retraining: {sustained_k: 2, sustained_n: 3, cooldown: 1d, max_per_week: 2, promotion: automatic}\n"
    )


def _log_traffic(data: Path, training: pl.DataFrame, model: object, day: date) -> None:
    """The day's transactions as the service logged them (the skew contract makes served vectors training rows)."""
    rows = training.filter(pl.col("transaction_ts").dt.date() == day)
    columns = fitted_columns(model)  # type: ignore[arg-type]
    scores = model.predict_proba(to_pandas(rows, columns))[:, 1]  # type: ignore[attr-defined]
    log = pl.DataFrame(
        {
            "request_id": rows.get_column("transaction_id"),
            "timestamp": rows.get_column("transaction_ts"),
            "entity": [json.dumps({"customer_id": c}) for c in rows.get_column("customer_id")],
            "features": [json.dumps(r, default=str) for r in rows.select(columns.all).iter_rows(named=True)],
            "request": [json.dumps({"channel": c}) for c in rows.get_column("channel")],
            "model_version": ["1"] * rows.height,
            "score": scores,
            "degraded": [False] * rows.height,
            "latency_ms": [5.0] * rows.height,
        }
    ).with_columns(pl.lit(None, pl.String).alias("shadow_version"), pl.lit(None, pl.Float64).alias("shadow_score"))
    frame = log.with_columns(pl.lit(None, pl.String).alias("degraded_reason")).select(list(LOG_SCHEMA)).cast(LOG_SCHEMA)  # type: ignore[arg-type]
    replace_partitions(
        table_path(data, "fraud", "prediction_log"),
        frame.with_columns(pl.lit(day.isoformat()).alias(PARTITION_COLUMN)),
        [day.isoformat()],
    )


def test_concept_drift_retrains_a_challenger_that_wins_and_is_promoted(tmp_path: Path) -> None:
    specs, data = _specs(tmp_path / "specs"), tmp_path / "data"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = mlflow_resource(str(data), tracking).registry()
    with dg.instance_for_test() as instance:
        defs = build_definitions(specs, str(data), tracking_uri=tracking)
        tags = {"dagster/asset_partition_range_start": str(FIRST), "dagster/asset_partition_range_end": str(LAST)}
        assert (
            defs.resolve_job_def("fraud_daily")
            .execute_in_process(instance=instance, tags=tags, run_config=QUIET)
            .success
        )
        # The champion was trained before the drift began.
        as_of = {"ops": {"fraud__training_set": {"config": {"as_of": f"{DRIFT}T00:00:00"}}}}
        assert (
            defs.resolve_job_def("fraud_training")
            .execute_in_process(instance=instance, run_config={**QUIET, **as_of})
            .success
        )
        assert registry.aliases("fraud") == {"champion": "1"}
        before = registry.version_metrics("fraud", "1")["pr_auc"]

        # Live traffic after the drift, labelled since; the floor sits below what the champion showed in training.
        _set_monitoring(specs, floor=0.7 * before)
        defs = build_definitions(specs, str(data), tracking_uri=tracking)
        everything = defs.resolve_job_def("fraud_training").execute_in_process(
            instance=instance, run_config=QUIET, asset_selection=[dg.AssetKey(["fraud", "training_set"])]
        )
        assert everything.success
        # Each labelled transaction with its request id (the transaction id), as the service received it.
        ids = scan_table(table_path(data, "fraud", "raw_labels")).select(
            "customer_id", "transaction_ts", "transaction_id"
        )
        training = (
            scan_table(table_path(data, "fraud", "training_set"))
            .join(ids.unique(["customer_id", "transaction_ts"]), on=["customer_id", "transaction_ts"])
            .collect()
        )
        champion = registry.load_sklearn("fraud", "1")
        verdicts = []
        for offset in range(4):
            day = DRIFT + timedelta(days=offset)
            _log_traffic(data, training, champion, day)
            result = defs.resolve_job_def("fraud_monitoring").execute_in_process(
                instance=instance,
                partition_key=day.isoformat(),
                asset_selection=[dg.AssetKey(["fraud", "performance"])],
                run_config=QUIET,
            )
            (check,) = result.get_asset_check_evaluations()
            verdicts.append((check.passed, check.description))
        assert sum(not passed for passed, _ in verdicts) >= 2, verdicts

        sensor = defs.resolve_sensor_def("fraud_retraining")
        tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
        assert tick.run_requests, (tick.skip_message, verdicts)
        (request,) = tick.run_requests
        assert request.tags["mlops/retrain_reason"] == "performance"
        retrained = defs.resolve_job_def("fraud_retraining").execute_in_process(
            instance=instance, tags=request.tags, run_config=QUIET
        )
        assert retrained.success
        assert registry.aliases("fraud")["champion"] == "2"  # the challenger won the gate and was promoted
        run = registry.client.get_run(registry.version("fraud", "2").run_id)
        assert run.data.tags["retrain_reason"] == "performance"
        assert "performance" in run.data.tags["retrain_checks"]
