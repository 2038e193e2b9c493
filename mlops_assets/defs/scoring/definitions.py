"""The scoring stage: batch inference of a declared population, a day at a time, on its own schedule."""

import dagster as dg

from mlops_assets.defs import keys
from mlops_assets.defs.scoring.assets import build_scores_asset
from mlops_assets.defs.scoring.schedules import build_scoring_schedule
from mlops_assets.spec import PipelineSpec


def definitions(spec: PipelineSpec) -> dg.Definitions:
    if spec.scoring is None or spec.model is None:
        return dg.Definitions()
    scores = build_scores_asset(spec)
    return dg.Definitions(
        assets=[scores],
        jobs=[
            dg.define_asset_job(
                keys.scoring_job(spec),
                selection=dg.AssetSelection.assets(scores),
                description="Score a day's population with the version that was champion at the day's end.",
            )
        ],
        schedules=[build_scoring_schedule(spec)],
    )
