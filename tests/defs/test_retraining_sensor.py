"""The retraining sensor against a real Dagster instance: check results in, at most one run request out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.definitions import build_definitions
from mlops_assets.defs.keys import drift_report_key
from mlops_assets.defs.monitoring.checks import DATASET_DRIFT, PREDICTION_DRIFT
from mlops_assets.defs.monitoring.sensors import RETRAIN_AT_TAG, RETRAINING_TAG, evaluate_policy
from mlops_assets.spec import PipelineSpec, load_specs

SPEC: PipelineSpec = load_specs()[0]  # fraud: k=2 of n=3, cooldown 3d, at most 2 a week
SENSOR = "fraud_retraining"


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    monkeypatch.chdir(tmp_path)  # the sensor reads the registry of the default data folder: a fresh, empty one
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with dg.instance_for_test() as instance:
        yield instance


def _window(instance: dg.DagsterInstance, day: str, drifted: bool, check: str = DATASET_DRIFT) -> None:
    """What the drift report's check records for a day (an evaluation stored in the instance)."""
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=drift_report_key(SPEC),
            check_name=check,
            passed=not drifted,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{day}: {'45%' if drifted else '0%'} of 25 features drifted at error level",
            partition=day,
        )
    )


def _tick(
    instance: dg.DagsterInstance, cursor: str | None = None, tracking_uri: str | None = None
) -> tuple[list[dg.RunRequest], str | None, str]:
    defs = build_definitions(tracking_uri=tracking_uri)
    sensor = defs.resolve_sensor_def(SENSOR)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
    result = sensor.evaluate_tick(context)
    skip = result.skip_message or ""
    return list(result.run_requests or []), result.cursor, skip


def _retraining_run(instance: dg.DagsterInstance, at: datetime | None = None) -> str:
    """A retraining run as the sensor's request launches it (tagged with the pipeline, and when it was decided)."""
    job = build_definitions().resolve_job_def("fraud_retraining")
    tags = {RETRAINING_TAG: "fraud", **({RETRAIN_AT_TAG: at.isoformat()} if at else {})}
    return instance.create_run_for_job(job_def=job, tags=tags).run_id


def test_a_single_noisy_window_does_not_retrain(instance: dg.DagsterInstance) -> None:
    for day, drifted in (("2026-03-01", False), ("2026-03-02", True), ("2026-03-03", False)):
        _window(instance, day, drifted)
    requests, _, skip = _tick(instance)
    assert requests == [] and "1 of the last 3 windows failed; 2 of 3 are needed" in skip


def test_k_of_n_requests_exactly_one_run_that_says_why(instance: dg.DagsterInstance) -> None:
    for day, drifted in (("2026-03-01", True), ("2026-03-02", False), ("2026-03-03", True)):
        _window(instance, day, drifted)
    (request,), cursor, _ = _tick(instance)
    assert request.job_name in (None, "fraud_retraining")
    assert request.tags["mlops/retrain_reason"] == "drift"
    assert request.tags["mlops/retrain_windows"] == "2026-03-01,2026-03-03"
    assert request.tags["mlops/retrain_checks"] == DATASET_DRIFT
    assert "45% of 25 features drifted" in request.tags["mlops/retrain_details"]
    assert request.tags["mlops/promotion"] == "automatic"
    # The next tick, with the cursor Dagster kept (as after a restart), does not act on the same evidence again.
    again, _, skip = _tick(instance, cursor)
    assert again == [] and "already acted on this evidence" in skip
    assert json.loads(cursor or "{}")["acted_on"] == [request.run_key]


def test_a_prediction_drift_window_counts_as_evidence_too(instance: dg.DagsterInstance) -> None:
    _window(instance, "2026-03-01", True, PREDICTION_DRIFT)
    _window(instance, "2026-03-02", True)
    (request,), _, _ = _tick(instance)
    assert request.tags["mlops/retrain_checks"] == f"{DATASET_DRIFT},{PREDICTION_DRIFT}"


def test_no_retraining_during_the_cooldown_and_beyond_the_weekly_cap(instance: dg.DagsterInstance) -> None:
    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        _window(instance, day, True)
    _retraining_run(instance)
    requests, _, skip = _tick(instance)
    assert requests == [] and "within the cooldown of 3d" in skip
    # Four days later the cooldown is over; with a second run this week the weekly cap of 2 holds.
    _retraining_run(instance)
    later = datetime.now(UTC) + timedelta(days=4)
    decision, _ = evaluate_policy(instance, SPEC.model_copy(update={"monitoring": _cooldown("1d")}), None, later)
    assert decision.retrain is False and "reach the cap of 2" in decision.explanation
    decision, _ = evaluate_policy(instance, SPEC, None, datetime.now(UTC) + timedelta(days=8))
    assert decision.retrain


def _cooldown(value: str) -> object:
    retraining = SPEC.monitoring.retraining.model_copy(update={"cooldown": value})
    return SPEC.monitoring.model_copy(update={"retraining": retraining})


def test_the_cooldown_counts_from_when_the_retraining_was_decided(instance: dg.DagsterInstance) -> None:
    """A run records the policy's clock (`mlops/retrain_at`): a replay of past days is judged in its own time."""
    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        _window(instance, day, True)
    decided = datetime(2026, 3, 3, tzinfo=UTC)
    _retraining_run(instance, at=decided)
    during, _ = evaluate_policy(instance, SPEC, None, decided + timedelta(days=2))
    assert not during.retrain and "within the cooldown" in during.explanation
    after, _ = evaluate_policy(instance, SPEC, None, decided + timedelta(days=3))
    assert after.retrain


def test_a_challenger_waiting_for_its_shadow_comparison_holds_the_sensor_back(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from mlops_assets.defs.common.resources import mlflow_resource

    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        _window(instance, day, True)
    decided = datetime.now(UTC) - timedelta(days=4)
    run_id = _retraining_run(instance, at=decided)
    # A version as the retraining run registers it (tagged with its Dagster run), made challenger.
    # Its registry named: MLflow's process-wide registry URI may be another test's (set by the fluent API).
    uri = mlflow_resource("data").tracking_uri
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model("fraud")
    model = tmp_path / "model"
    model.mkdir()
    client.create_model_version("fraud", str(model), tags={"dagster_run_id": run_id})
    client.set_registered_model_alias("fraud", "challenger", "1")
    requests, _, skip = _tick(instance)
    assert requests == [] and f"version 1 is challenger since {decided.isoformat(timespec='minutes')}" in skip
    # Its patience (7d) over, the sustained drift retrains again.
    decision, _ = evaluate_policy(instance, SPEC, None, decided + timedelta(days=7), ("1", decided))
    assert decision.retrain


def test_an_unreachable_registry_skips_the_tick_with_the_reason(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        _window(instance, day, True)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    requests, _, skip = _tick(instance, tracking_uri="http://127.0.0.1:9")  # nothing listens on the discard port
    assert requests == [] and "the model registry is unreachable" in skip


def _run_window(instance: dg.DagsterInstance, day: str, drifted: bool) -> None:
    """A window graded by a run of the day's partition (runless results cannot record a partition twice)."""
    key = drift_report_key(SPEC)

    @dg.asset(
        key=key,
        partitions_def=dg.DailyPartitionsDefinition("2026-01-01"),
        check_specs=[dg.AssetCheckSpec(DATASET_DRIFT, asset=key)],
    )
    def report() -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(
            check_name=DATASET_DRIFT,
            passed=not drifted,
            severity=dg.AssetCheckSeverity.ERROR,
            description=day,
            metadata={"window": day},  # as the drift report records it
        )

    assert dg.materialize([report], instance=instance, partition_key=day, raise_on_error=False)


def test_a_re_run_window_counts_with_its_newest_verdict(instance: dg.DagsterInstance) -> None:
    _run_window(instance, "2026-03-01", True)
    _run_window(instance, "2026-03-02", True)
    _run_window(instance, "2026-03-02", False)  # the day re-run (say, after a fix upstream): it passes now
    _run_window(instance, "2026-03-03", False)
    requests, _, skip = _tick(instance)
    assert requests == [] and "1 of the last 3 windows failed" in skip
