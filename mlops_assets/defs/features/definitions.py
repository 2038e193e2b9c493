"""The features stage: each feature view's daily partitions, checked, and their quarantine."""

import dagster as dg

from mlops_assets.defs.features.assets import build_feature_assets
from mlops_assets.spec import PipelineSpec


def definitions(spec: PipelineSpec) -> dg.Definitions:
    return dg.Definitions(assets=build_feature_assets(spec))
