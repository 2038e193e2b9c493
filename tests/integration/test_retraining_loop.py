"""The loop closed end to end, each scenario in a temporary instance of its own: the generator's drift begins after the
champion was trained, served traffic is logged, monitoring grades it, the sensor retrains, the gate decides.

- concept drift: the performance check fails, the retrained challenger wins the gate and is promoted;
- a covariate-only shift (a new merchant category): the drift checks fail and a retraining runs, but it does not beat
  the champion by the gate's margin, so the champion stays."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
import yaml

from mlops_assets.core.lake import PARTITION_COLUMN, replace_partitions, scan_table, table_path
from mlops_assets.core.models.modeling import fitted_columns, to_pandas
from mlops_assets.core.models.registry import open_registry
from mlops_assets.core.serving.prediction_log import LOG_SCHEMA
from mlops_assets.definitions import build_definitions
from mlops_assets.demo.story import set_generator_params
from tests.helpers import QUIET, small_fraud_specs

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRST, DRIFT, LAST = date(2026, 1, 1), date(2026, 1, 17), date(2026, 1, 27)


def _specs(folder: Path, scenario: str, margin: float) -> Path:
    specs = small_fraud_specs(
        folder,
        **{
            "slice_by: channel": "slice_by: null",
            "max_slice_drop: 0.05": "max_slice_drop: null",
            "min_improvement: 0.005": f"min_improvement: {margin}",
        },
    )
    set_generator_params(
        specs / "shared" / "card_transactions.yaml", scenarios=[{**yaml.safe_load(f"{{{scenario}}}"), "start": DRIFT}]
    )
    return specs


def _set_monitoring(specs: Path, floor: float, extra: str = "") -> None:
    spec = specs / "fraud.yaml"
    spec.write_text(
        spec.read_text()
        + f"\nmonitoring:\n  min_rows: 100\n  performance_floor: {floor:.4f}\n{extra}"
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
            "feature_timestamps": [None] * rows.height,
            "request": [json.dumps({"channel": c}) for c in rows.get_column("channel")],
            "model_version": ["1"] * rows.height,
            "score": scores,
            "degraded": [False] * rows.height,
            "latency_ms": [5.0] * rows.height,
        }
    ).with_columns(
        pl.lit(None, pl.String).alias("shadow_version"),
        pl.lit(None, pl.Float64).alias("shadow_score"),
        *[pl.lit(None, pl.String).alias(c) for c in ("label", "probabilities", "shadow_label", "shadow_probabilities")],
    )
    frame = log.with_columns(pl.lit(None, pl.String).alias("reason")).select(list(LOG_SCHEMA)).cast(LOG_SCHEMA)  # type: ignore[arg-type]
    replace_partitions(
        table_path(data, "fraud", "prediction_log"),
        frame.with_columns(pl.lit(day.isoformat()).alias(PARTITION_COLUMN)),
        [day.isoformat()],
    )


def _run_loop(
    tmp_path: Path, scenario: str, assets: list[str], monitoring: str = "", margin: float = 0.005, grade_after: int = 0
) -> tuple[Any, Any, list[Any]]:
    """Lake, a champion trained before the drift, four days of logged traffic after it graded by `assets`
    (`grade_after` days later), one sensor tick and, when it asks for one, the retraining run.
    Returns (registry, the tick, the check verdicts)."""
    specs, data = _specs(tmp_path / "specs", scenario, margin), tmp_path / "data"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = open_registry(str(data), tracking)
    with dg.instance_for_test() as instance:
        defs = build_definitions(specs, str(data), tracking_uri=tracking)
        tags = {"dagster/asset_partition_range_start": str(FIRST), "dagster/asset_partition_range_end": str(LAST)}
        daily = defs.resolve_job_def("fraud_daily")
        assert daily.execute_in_process(instance=instance, tags=tags, run_config=QUIET).success
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
        _set_monitoring(specs, 0.7 * before, monitoring)
        defs = build_definitions(specs, str(data), tracking_uri=tracking)
        rebuilt = defs.resolve_job_def("fraud_training").execute_in_process(
            instance=instance, run_config=QUIET, asset_selection=[dg.AssetKey(["fraud", "training_set"])]
        )
        assert rebuilt.success
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
        for offset in range(4):
            day = DRIFT + timedelta(days=offset + grade_after)
            result = defs.resolve_job_def("fraud_monitoring").execute_in_process(
                instance=instance,
                partition_key=day.isoformat(),
                asset_selection=[dg.AssetKey(["fraud", a]) for a in assets],
                run_config=QUIET,
            )
            verdicts += [(e.check_name, e.passed, e.description) for e in result.get_asset_check_evaluations()]

        sensor = defs.resolve_sensor_def("fraud_retraining")
        context = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)
        tick = sensor.evaluate_tick(context)
        for request in tick.run_requests or []:
            retraining = defs.resolve_job_def("fraud_retraining")
            retraining.execute_in_process(instance=instance, tags=request.tags, run_config=QUIET, raise_on_error=False)
    return registry, tick, verdicts


def test_concept_drift_retrains_a_challenger_that_wins_and_is_promoted(tmp_path: Path) -> None:
    # Labels come days late: the rolling performance of the week after the traffic sees them.
    registry, tick, verdicts = _run_loop(tmp_path, "kind: concept_drift", ["performance"], grade_after=6)
    assert sum(not passed for _, passed, _ in verdicts) >= 2, verdicts
    (request,) = tick.run_requests
    assert request.tags["mlops/retrain_reason"] == "performance"
    assert registry.aliases("fraud")["champion"] == "2"  # the challenger won the gate and was promoted
    run = registry.client.get_run(registry.version("fraud", "2").run_id)
    assert run.data.tags["retrain_reason"] == "performance"
    assert "performance" in run.data.tags["retrain_checks"]


def test_a_covariate_shift_retrains_but_the_champion_stays_when_the_retrain_does_not_win(tmp_path: Path) -> None:
    # One of 25 features moving counts as dataset drift here, so that the shift alone triggers a retraining; the gate
    # asks for a margin that ten more days of the same fraud pattern do not buy.
    drift = "  dataset_drift_share: {warn: 0.02, error: 0.03}\n"
    scenario = "kind: new_category, category: crypto_exchange, share: 0.1"
    registry, tick, verdicts = _run_loop(tmp_path, scenario, ["drift_report"], drift, margin=0.05)
    failed = {name for name, passed, _ in verdicts if not passed}
    assert {"feature_drift", "dataset_drift"} <= failed, verdicts
    (request,) = tick.run_requests
    assert request.tags["mlops/retrain_reason"] == "drift"
    assert "merchant_category" in request.tags["mlops/retrain_details"]
    versions = {str(v.version) for v in registry.client.search_model_versions("name='fraud'")}
    assert versions == {"1", "2"}  # the retraining ran and registered a candidate...
    assert registry.aliases("fraud") == {"champion": "1"}  # ...that did not beat the champion by the margin
    gate = registry.version("fraud", "2").tags["promotion_gate"]
    assert "improves on the champion by" in gate and "< required 0.0500" in gate, gate
