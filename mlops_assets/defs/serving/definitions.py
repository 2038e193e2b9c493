"""The serving stage: the online store's sync, the prediction log, the bento of the live models (rebuilt when the
champion changes) and the shadow comparison of a challenger on live traffic."""

from pathlib import Path

import dagster as dg

from mlops_assets.defs import keys
from mlops_assets.defs.serving.ab_test import build_ab_test_asset
from mlops_assets.defs.serving.assets import (
    build_bento_asset,
    build_online_assets,
    build_prediction_log_asset,
    build_shadow_evaluation_asset,
)
from mlops_assets.spec import PipelineSpec


def definitions(spec: PipelineSpec, specs_dir: Path) -> dg.Definitions:
    assets = [*build_online_assets(spec), build_prediction_log_asset(spec)]
    if spec.model is None:
        return dg.Definitions(assets=assets)
    bento, shadow = build_bento_asset(spec, specs_dir), build_shadow_evaluation_asset(spec)
    ab, ab_jobs = [], []
    if spec.serving.ab_test is not None:
        ab = [build_ab_test_asset(spec)]
        ab_jobs = [
            dg.define_asset_job(
                keys.ab_job(spec),
                selection=dg.AssetSelection.assets(*ab),
                description="Analyse the running A/B experiment: the group-sequential test and its decision.",
            )
        ]
    return dg.Definitions(
        assets=[*assets, bento, shadow, *ab],
        jobs=[
            *ab_jobs,
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
        ],
        # Evaluates the bento's automation condition: a champion change (gate, promote, rollback) rebuilds it when
        # the daemon runs (`mlops ui`), as the CLI does itself.
        sensors=[
            dg.AutomationConditionSensorDefinition(
                keys.bento_automation_sensor(spec),
                target=dg.AssetSelection.assets(bento),
                default_status=dg.DefaultSensorStatus.RUNNING,
                description="Requests a bento build after the champion changed (the bento's eager condition).",
            )
        ],
    )
