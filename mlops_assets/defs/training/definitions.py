"""The training stage: the point-in-time training set and its health checks."""

import dagster as dg

from mlops_assets.defs.training.assets import build_training_set_asset
from mlops_assets.spec import PipelineSpec


def definitions(spec: PipelineSpec) -> dg.Definitions:
    return dg.Definitions(assets=[build_training_set_asset(spec)])
