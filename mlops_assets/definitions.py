"""Builds the Dagster code location from a folder of specs: one asset graph per pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from mlops_assets.defs import keys
from mlops_assets.defs.common.resources import (
    bento_resource,
    lake_resource,
    mlflow_resource,
    online_store_resource,
    reports_resource,
)
from mlops_assets.defs.common.schedules import daily_schedule
from mlops_assets.defs.features import definitions as features
from mlops_assets.defs.features.assets import build_feature_assets
from mlops_assets.defs.ingest import definitions as ingest
from mlops_assets.defs.ingest.assets import build_ingest_assets
from mlops_assets.defs.models import definitions as models
from mlops_assets.defs.monitoring import definitions as monitoring
from mlops_assets.defs.scoring import definitions as scoring
from mlops_assets.defs.serving import definitions as serving
from mlops_assets.defs.serving.assets import build_online_assets
from mlops_assets.defs.training import definitions as training
from mlops_assets.spec import BUILTIN_SPECS_DIR, PipelineSpec, load_specs


def pipeline_definitions(spec: PipelineSpec, specs_dir: Path) -> dg.Definitions:
    """One pipeline: what each stage defines, and the jobs that cross stages (a day of data, training, retraining)."""
    stages = [
        ingest.definitions(spec),
        features.definitions(spec),
        training.definitions(spec),
        models.definitions(spec),
        serving.definitions(spec, specs_dir),
        monitoring.definitions(spec),
        scoring.definitions(spec),
    ]
    day = dg.AssetSelection.groups(keys.group(spec, "ingest"), keys.group(spec, "features")) | dg.AssetSelection.assets(
        *(keys.online_key(spec, view) for view in spec.views_of(spec.name)), keys.prediction_log_key(spec)
    )
    trained = dg.AssetSelection.assets(
        keys.training_set_key(spec), *(keys.model_keys(spec).values() if spec.model else [])
    )
    jobs: list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition] = [
        dg.define_asset_job(
            keys.daily_job(spec),
            selection=day,
            description="Ingest a day (or a range of days) of every source, compute its feature views and sync the "
            "online store.",
        ),
        dg.define_asset_job(
            keys.training_job(spec),
            selection=trained,
            description="Rebuild the point-in-time training set, then train, evaluate, gate and promote a model.",
        ),
    ]
    if spec.model:
        jobs.append(
            dg.define_asset_job(
                keys.retraining_job(spec),
                selection=trained | dg.AssetSelection.assets(keys.bento_key(spec)),
                description="Retrain: training set, candidate, evaluation and gate, card, champion, bento.",
            )
        )
    across = dg.Definitions(jobs=jobs, schedules=[daily_schedule(keys.daily_job(spec), "30 0 * * *", spec)])
    return dg.Definitions.merge(*stages, across)


def namespace_definitions(spec: PipelineSpec, users: list[str]) -> dg.Definitions:
    """A shared namespace (`spec.in_namespace`): its sources, feature views and online sync, materialized once for
    the pipelines that include its file (`users`), by its own daily job (a quarter of an hour before theirs)."""
    assets = [*build_ingest_assets(spec, users), *build_feature_assets(spec, users), *build_online_assets(spec)]
    job = dg.define_asset_job(
        keys.daily_job(spec),
        selection=dg.AssetSelection.assets(*assets),
        description=f"Ingest a day (or a range) of the shared sources of `{spec.name}`, compute its feature views "
        "and sync them to the online store: once for every pipeline that reads them.",
    )
    return dg.Definitions(
        assets=assets, jobs=[job], schedules=[daily_schedule(keys.daily_job(spec), "15 0 * * *", spec)]
    )


def build_definitions(
    specs_dir: Path | str | None = None,
    data_dir: str = "data",
    tracking_uri: str | None = None,
    online_store_url: str | None = None,
    lake_uri: str | None = None,
) -> dg.Definitions:
    """Every pipeline of the specs folder (built-in examples by default), sharing one lake and one MLflow.

    MLflow defaults to SQLite in the data folder with artifacts beside it; `tracking_uri` points it at a server.
    The online store defaults to SQLite in the data folder; `online_store_url` (redis://...) points it at Redis.
    The lake (landing files, Delta tables) defaults to the data folder; `lake_uri` (s3://bucket/prefix, or
    MLOPS_LAKE_URI) puts it in object storage.

    Runs execute in-process by default (on a small machine the multiprocess executor costs about a second per step);
    MLOPS_EXECUTOR chooses another for runs the Dagster daemon or UI launches (see `executor_from_environment`).
    """
    folder = Path(specs_dir).resolve() if specs_dir else BUILTIN_SPECS_DIR
    specs = load_specs(folder)
    namespaces: dict[str, PipelineSpec] = {}
    for spec in specs:  # load_specs refused pipelines declaring a shared table differently: any of them will do
        for namespace in spec.namespaces():
            namespaces.setdefault(namespace, spec.in_namespace(namespace))
    return dg.Definitions.merge(
        *(pipeline_definitions(spec, folder) for spec in specs),
        *(
            namespace_definitions(spec, [s.name for s in specs if name in s.namespaces()])
            for name, spec in namespaces.items()
        ),
        dg.Definitions(
            resources={
                "lake": lake_resource(data_dir, lake_uri),
                "mlflow_store": mlflow_resource(data_dir, tracking_uri),
                "online_store": online_store_resource(data_dir, online_store_url),
                "bentoml_store": bento_resource(data_dir),
                "reports": reports_resource(data_dir, lake_uri),
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
