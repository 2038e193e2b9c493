"""The models stage: candidate, evaluation with the promotion gate, card and champion; the registry's housekeeping."""

import dagster as dg

from mlops_assets.defs.models.assets import build_model_assets
from mlops_assets.defs.models.jobs import build_retention
from mlops_assets.spec import PipelineSpec


def definitions(spec: PipelineSpec) -> dg.Definitions:
    if spec.model is None:
        return dg.Definitions()
    retention, schedule = build_retention(spec)
    return dg.Definitions(assets=build_model_assets(spec), jobs=[retention], schedules=[schedule])
