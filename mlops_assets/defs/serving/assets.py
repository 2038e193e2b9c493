"""The online store as assets: per feature view, the latest row of every entity, synced incrementally."""

import dagster as dg

from mlops_assets.defs.common.resources import LakeResource, OnlineStoreResource
from mlops_assets.defs.features.assets import feature_key
from mlops_assets.lake import scan_table, table_path, table_version
from mlops_assets.online import sync_view
from mlops_assets.spec import PipelineSpec


def online_key(spec: PipelineSpec, view: str) -> dg.AssetKey:
    return dg.AssetKey([spec.name, "online", view])


def build_online_asset(spec: PipelineSpec, view_name: str) -> dg.AssetsDefinition:
    view = spec.feature_views[view_name]

    @dg.asset(
        key=online_key(spec, view_name),
        deps=[feature_key(spec, view_name)],
        group_name=f"{spec.name}_serving",
        kinds={"polars", "redis", "sqlite"},
        owners=[spec.owner] if spec.owner else None,
        code_version=view.fingerprint(),
        description=f"The latest `{view_name}` row of every {spec.entity.name} in the online store, as computed "
        f"offline by the view's feature function; only entities with rows newer than the last sync are written. "
        f"Readers treat rows older than {view.ttl} as stale.",
    )
    def _online(lake: LakeResource, online_store: OnlineStoreResource) -> dg.MaterializeResult:
        path = table_path(lake.root, spec.name, view_name)
        result = sync_view(online_store.store(), spec.name, view_name, scan_table(path), spec.entity.keys)
        return dg.MaterializeResult(
            metadata={
                "entities_written": result.entities_written,
                "watermark": result.watermark or "none",
                "store": online_store.url.split("@")[-1],
                "input_delta_versions": {feature_key(spec, view_name).to_user_string(): table_version(path)},
            }
        )

    return _online


def build_online_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    return [build_online_asset(spec, name) for name in spec.feature_views]
