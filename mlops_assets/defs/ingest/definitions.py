"""The ingest stage: each source's raw daily partitions and their quarantine."""

import dagster as dg

from mlops_assets.defs.ingest.assets import build_ingest_assets
from mlops_assets.spec import PipelineSpec


def definitions(spec: PipelineSpec) -> dg.Definitions:
    return dg.Definitions(assets=build_ingest_assets(spec))
