"""The monitoring stage: a day's drift report and live performance with their checks, their daily schedule, and
the retraining sensor that acts on sustained evidence."""

import dagster as dg

from mlops_assets.defs import keys
from mlops_assets.defs.common.schedules import daily_schedule
from mlops_assets.defs.monitoring.assets import build_drift_report_asset, build_performance_asset
from mlops_assets.defs.monitoring.sensors import build_retraining_sensor
from mlops_assets.spec import PipelineSpec


def definitions(spec: PipelineSpec) -> dg.Definitions:
    if spec.model is None:
        return dg.Definitions()
    drift, performance = build_drift_report_asset(spec), build_performance_asset(spec)
    monitor = dg.define_asset_job(
        keys.monitoring_job(spec),
        selection=dg.AssetSelection.assets(drift, performance),
        description="A day's drift report and live performance with their checks (the daily job ingests the "
        "prediction log first).",
    )
    return dg.Definitions(
        assets=[drift, performance],
        jobs=[monitor],
        # The day's drift report reads what the daily job ingested: its prediction log partition.
        schedules=[daily_schedule(keys.monitoring_job(spec), "30 1 * * *", spec, keys.prediction_log_key(spec))],
        sensors=[build_retraining_sensor(spec, keys.retraining_job(spec))],
    )
