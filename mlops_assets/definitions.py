"""Builds the Dagster code location from a folder of specs: one asset graph per pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from mlops_assets.defs import keys
from mlops_assets.defs.common.resources import (
    LakeResource,
    bento_resource,
    mlflow_resource,
    online_store_resource,
)
from mlops_assets.defs.features.assets import build_feature_assets
from mlops_assets.defs.ingest.assets import build_ingest_assets
from mlops_assets.defs.models.assets import build_model_assets
from mlops_assets.defs.models.jobs import build_retention
from mlops_assets.defs.monitoring.assets import build_drift_report_asset, build_performance_asset
from mlops_assets.defs.monitoring.schedules import daily_schedule
from mlops_assets.defs.monitoring.sensors import build_retraining_sensor
from mlops_assets.defs.serving.assets import (
    build_bento_asset,
    build_online_assets,
    build_prediction_log_asset,
    build_shadow_evaluation_asset,
)
from mlops_assets.defs.training.assets import build_training_set_asset
from mlops_assets.spec import BUILTIN_SPECS_DIR, PipelineSpec, load_specs


def pipeline_definitions(spec: PipelineSpec, specs_dir: Path) -> dg.Definitions:
    daily = [
        *build_ingest_assets(spec),
        *build_feature_assets(spec),
        *build_online_assets(spec),
        build_prediction_log_asset(spec),
    ]
    training = [build_training_set_asset(spec), *(build_model_assets(spec) if spec.model else [])]
    jobs: list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition] = [
        dg.define_asset_job(
            keys.daily_job(spec),
            selection=dg.AssetSelection.assets(*daily),
            description="Ingest a day (or a range of days) of every source, compute its feature views and sync the "
            "online store.",
        ),
        dg.define_asset_job(
            keys.training_job(spec),
            selection=dg.AssetSelection.assets(*training),
            description="Rebuild the point-in-time training set, then train, evaluate, gate and promote a model.",
        ),
    ]
    schedules = [daily_schedule(keys.daily_job(spec), "30 0 * * *", spec)]
    sensors: list[dg.SensorDefinition] = []
    serving = []
    if spec.model:
        retention, schedule = build_retention(spec)
        jobs.append(retention)
        schedules.append(schedule)
        bento, shadow = build_bento_asset(spec, specs_dir), build_shadow_evaluation_asset(spec)
        serving += [bento, shadow]
        # Evaluates the bento's automation condition: a champion change (gate, promote, rollback) rebuilds it when
        # the daemon runs (`mlops ui`), as the CLI does itself.
        sensors.append(
            dg.AutomationConditionSensorDefinition(
                keys.bento_automation_sensor(spec),
                target=dg.AssetSelection.assets(bento),
                default_status=dg.DefaultSensorStatus.RUNNING,
                description="Requests a bento build after the champion changed (the bento's eager condition).",
            )
        )
        jobs += [
            dg.define_asset_job(
                keys.bento_job(spec),
                selection=dg.AssetSelection.assets(bento),
                description="Build the BentoML bundle of the live models (a no-op when they have not changed).",
            ),
            dg.define_asset_job(
                keys.shadow_job(spec),
                selection=dg.AssetSelection.assets(shadow),
                description="Compare champion and challenger on labelled live traffic through the promotion gate.",
            ),
        ]
        drift, performance = build_drift_report_asset(spec), build_performance_asset(spec)
        serving += [drift, performance]
        monitor = dg.define_asset_job(
            keys.monitoring_job(spec),
            selection=dg.AssetSelection.assets(drift, performance),
            description="A day's drift report and live performance with their checks (the daily job ingests the "
            "prediction log first).",
        )
        retrain = dg.define_asset_job(
            keys.retraining_job(spec),
            selection=dg.AssetSelection.assets(*training, bento),
            description="Retrain: training set, candidate, evaluation and gate, card, champion, bento.",
        )
        jobs += [monitor, retrain]
        # The day's drift report reads what the daily job ingested: its prediction log partition.
        schedules.append(daily_schedule(keys.monitoring_job(spec), "30 1 * * *", spec, keys.prediction_log_key(spec)))
        sensors.append(build_retraining_sensor(spec, keys.retraining_job(spec)))
    return dg.Definitions(assets=[*daily, *training, *serving], jobs=jobs, schedules=schedules, sensors=sensors)


def build_definitions(
    specs_dir: Path | str | None = None,
    data_dir: str = "data",
    tracking_uri: str | None = None,
    online_store_url: str | None = None,
) -> dg.Definitions:
    """Every pipeline of the specs folder (built-in examples by default), sharing one lake and one MLflow.

    MLflow defaults to SQLite in the data folder with artifacts beside it; `tracking_uri` points it at a server.
    The online store defaults to SQLite in the data folder; `online_store_url` (redis://...) points it at Redis.

    Runs execute in-process by default (on a small machine the multiprocess executor costs about a second per step);
    MLOPS_EXECUTOR chooses another for runs the Dagster daemon or UI launches (see `executor_from_environment`).
    """
    folder = Path(specs_dir).resolve() if specs_dir else BUILTIN_SPECS_DIR
    specs = load_specs(folder)
    return dg.Definitions.merge(
        *(pipeline_definitions(spec, folder) for spec in specs),
        dg.Definitions(
            resources={
                "lake": LakeResource(data_dir=data_dir),
                "mlflow_store": mlflow_resource(data_dir, tracking_uri),
                "online_store": online_store_resource(data_dir, online_store_url),
                "bentoml_store": bento_resource(data_dir),
            },
            executor=executor_from_environment(),
        ),
    )


EXECUTOR_ENV, BROKER_ENV, BACKEND_ENV = "MLOPS_EXECUTOR", "MLOPS_CELERY_BROKER", "MLOPS_CELERY_BACKEND"


def executor_from_environment() -> dg.ExecutorDefinition:
    """MLOPS_EXECUTOR: `in_process` (default), `multiprocess`, or `celery` (dagster-celery: each step a task on the
    workers of MLOPS_CELERY_BROKER, results through MLOPS_CELERY_BACKEND; both read from the environment where the
    run starts, never written into the run's configuration)."""
    choice = os.environ.get(EXECUTOR_ENV, "in_process")
    if choice == "in_process":
        return dg.in_process_executor
    if choice == "multiprocess":
        return dg.multiprocess_executor
    if choice == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured({"broker": {"env": BROKER_ENV}, "backend": {"env": BACKEND_ENV}})
    raise ValueError(f"{EXECUTOR_ENV}={choice!r}: expected in_process, multiprocess or celery")
