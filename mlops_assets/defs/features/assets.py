"""Feature views (the offline store): feature values per entity and time, daily-partitioned Delta tables."""

import warnings
from collections.abc import Iterator, Sequence
from datetime import timedelta

import dagster as dg
import polars as pl

from mlops_assets.core.features.views import FEATURE_TIMESTAMP, FeatureFunctionError, feature_partitions
from mlops_assets.core.ingest.validation import build_schema, split_valid
from mlops_assets.core.lake import PARTITION_COLUMN, scan_table, table_version
from mlops_assets.defs.common.metadata import listed
from mlops_assets.defs.common.partitions import lookback_days, partition_days
from mlops_assets.defs.common.resources import LakeResource
from mlops_assets.defs.common.shared import guard_definition
from mlops_assets.defs.common.validated import publish_split, validated_table_specs
from mlops_assets.defs.keys import feature_key, raw_key, table_of
from mlops_assets.spec import PipelineSpec


def build_feature_asset(spec: PipelineSpec, view_name: str, users: Sequence[str] = ()) -> dg.AssetsDefinition:
    """`users`: the pipelines reading a shared view (its changes are guarded: defs/common/shared.py)."""
    view = spec.feature_views[view_name]
    code_version = spec.code_version("feature_views", view_name)
    key, upstream = feature_key(spec, view_name), raw_key(spec, view.source)
    history = lookback_days(view.lookback_delta)
    how = f"function `{view.function}`" if view.function else "windowed aggregations"
    with warnings.catch_warnings():
        # Beta parameter, needed: the first partitions' windows reach back before the pipeline's start date.
        warnings.simplefilter("ignore", dg.BetaWarning)
        history_mapping = dg.TimeWindowPartitionMapping(
            start_offset=-history, allow_nonexistent_upstream_partitions=True
        )

    @dg.multi_asset(
        name=f"{spec.name}__{view_name}",
        **validated_table_specs(
            spec,
            key,
            stage="features",
            code_version=code_version,
            deps=[dg.AssetDep(upstream, partition_mapping=history_mapping)],
            description=(view.description + "\n\n" if view.description else "")
            + f"Feature view `{view_name}` of `{view.source}` ({how}), one row per "
            f"{spec.entity.name} and event time; valid for {view.ttl}.",
            quarantine_description=f"Feature rows of `{view_name}` that broke its constraints, with reasons.",
        ),
    )
    def _features(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        shared = guard_definition(context, key, code_version, users) if users else {}
        days = partition_days(context)
        labels = [d.isoformat() for d in days]
        # Windows reach back `history` days before the first partition: read those raw partitions too.
        reads = [(days[0] - timedelta(days=i)).isoformat() for i in range(history, 0, -1)] + labels
        raw_path = table_of(lake.root, upstream)
        source_columns = list(spec.sources[view.source].columns)
        events = scan_table(raw_path, reads).select(source_columns)
        present = set(scan_table(raw_path, reads).select(PARTITION_COLUMN).unique().collect().to_series())
        # Windows over days that were never ingested are silently short: say so.
        missing = [d for d in reads if d >= spec.start_date.isoformat() and d not in present]
        if missing:
            context.log.warning(f"{upstream.to_user_string()} has no rows for {missing}: windows there are short")
        try:
            rows = feature_partitions(spec, view_name, events, labels)
            split = split_valid(rows.frame, build_schema(f"feature_views.{view_name}", view.constraints))
        except (FeatureFunctionError, ValueError) as exc:
            raise dg.Failure(description=f"feature view {view_name}: {exc}", allow_retries=False) from exc
        if rows.duplicates:
            context.log.warning(
                f"feature view {view_name}: {rows.duplicates} rows shared their {spec.entity.keys} and "
                f"{FEATURE_TIMESTAMP} with another; kept the one known last (ties: by their values)"
            )
        yield from publish_split(
            table_of(lake.root, feature_key(spec, view_name)),
            key,
            split,
            labels,
            view.max_rejected_share,
            {
                "entities": split.accepted.select(pl.struct(spec.entity.keys).n_unique()).item(),
                "input_delta_versions": {upstream.to_user_string(): table_version(raw_path)},
                "lookback_days": history,
                "input_days_without_rows": listed(missing),
                "duplicates": rows.duplicates,
                **shared,
            },
        )

    return _features


def build_feature_assets(spec: PipelineSpec, users: Sequence[str] = ()) -> list[dg.AssetsDefinition]:
    return [build_feature_asset(spec, name, users) for name in spec.views_of(spec.name)]
