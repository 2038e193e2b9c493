"""A validated table: a daily-partitioned Delta table, its quarantine table and the blocking rows_valid check."""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from mlops_assets.core.ingest.validation import Split
from mlops_assets.core.lake import Location, replace_partitions
from mlops_assets.defs.common.checks import grade_rows, rows_valid_spec
from mlops_assets.defs.common.metadata import table_metadata
from mlops_assets.defs.common.partitions import SINGLE_RUN, daily_partitions
from mlops_assets.defs.keys import group, quarantine_key
from mlops_assets.spec import PipelineSpec

KINDS = {"delta", "polars", "pandera"}


def validated_table_specs(
    spec: PipelineSpec,
    key: dg.AssetKey,
    *,
    stage: str,
    description: str,
    quarantine_description: str,
    code_version: str,
    deps: Sequence[dg.AssetDep] = (),
) -> dict[str, Any]:
    """The multi_asset arguments shared by every validated table: its specs, check and partitioning."""
    group_name, owners = group(spec, stage), [spec.owner] if spec.owner else None
    q_key = quarantine_key(key)
    return {
        "specs": [
            dg.AssetSpec(
                key,
                deps=deps,
                description=description,
                code_version=code_version,
                group_name=group_name,
                kinds=KINDS,
                owners=owners,
            ),
            dg.AssetSpec(
                q_key,
                deps=[key],
                description=quarantine_description,
                code_version=code_version,
                group_name=group_name,
                kinds=KINDS,
                owners=owners,
            ),
        ],
        "check_specs": [rows_valid_spec(key, q_key)],
        "partitions_def": daily_partitions(spec),
        "backfill_policy": SINGLE_RUN,
    }


def publish_split(
    path: Location, key: dg.AssetKey, split: Split, days: list[str], max_share: float, metadata: dict[str, Any]
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Replace the days in the quarantine table, then in the table; report both and grade the rows."""
    q_key = quarantine_key(key)
    q_path = path.with_name(q_key.path[-1])
    # Quarantine first: if the run dies between the two commits, a re-run restores both.
    replace_partitions(q_path, split.rejected, days)
    replace_partitions(path, split.accepted, days)
    yield dg.MaterializeResult(asset_key=key, metadata={**table_metadata(path, split.accepted), **metadata})
    yield dg.MaterializeResult(asset_key=q_key, metadata=table_metadata(q_path, split.rejected))
    yield grade_rows(key, split, max_share, days)
