"""Serving's assets: the online store (latest row per entity and view, synced incrementally) and the prediction log."""

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from mlops_assets.core.features.online import sync_view
from mlops_assets.core.lake import PARTITION_COLUMN, replace_partitions, scan_table, table_version
from mlops_assets.core.markdown import markdown_table
from mlops_assets.core.models.aliases import CHALLENGER, CHAMPION
from mlops_assets.core.serving.prediction_log import (
    LOG_SCHEMA,
    degraded_share,
    duplicate_request_ids,
    log_folder,
    read_day,
)
from mlops_assets.core.serving.privacy import purge_prediction_log, retention_cutoff
from mlops_assets.core.serving.shadow import ShadowError, ShadowOutcome, TooFewLabels, compare
from mlops_assets.defs.common.metadata import table_metadata
from mlops_assets.defs.common.partitions import SINGLE_RUN, daily_partitions, partition_days
from mlops_assets.defs.common.resources import BentoResource, LakeResource, MlflowResource, OnlineStoreResource
from mlops_assets.defs.keys import (
    bento_key,
    feature_key,
    group,
    model_keys,
    online_key,
    prediction_log_key,
    raw_key,
    shadow_evaluation_key,
    table_of,
)
from mlops_assets.spec import PipelineSpec


def build_online_asset(spec: PipelineSpec, view_name: str) -> dg.AssetsDefinition:
    view = spec.feature_views[view_name]

    @dg.asset(
        key=online_key(spec, view_name),
        deps=[feature_key(spec, view_name)],
        group_name=group(spec, "serving"),
        kinds={"polars", "redis", "sqlite"},
        owners=[spec.owner] if spec.owner else None,
        code_version=spec.code_version("feature_views", view_name),
        description=f"The latest `{view_name}` row of every {spec.entity.name} in the online store, as computed "
        f"offline by the view's feature function; only entities with rows newer than the last sync are written. "
        f"Readers treat rows older than {view.ttl} as stale.",
    )
    def _online(lake: LakeResource, online_store: OnlineStoreResource) -> dg.MaterializeResult:
        path = table_of(lake.root, feature_key(spec, view_name))
        namespace = spec.view_namespace(view_name)  # a shared view: one key space for every pipeline using it
        result = sync_view(online_store.store(), namespace, view_name, scan_table(path), spec.entity.keys)
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
    return [build_online_asset(spec, name) for name in spec.views_of(spec.name)]


def build_prediction_log_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    retention = spec.serving.log_retention
    # backfill_policy on @asset is beta; a whole range of days must ingest in one run, like the other daily assets.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.asset(
            key=prediction_log_key(spec),
            group_name=group(spec, "serving"),
            kinds={"delta", "polars"},
            owners=[spec.owner] if spec.owner else None,
            partitions_def=daily_partitions(spec),
            backfill_policy=SINGLE_RUN,
            description="Every logged prediction of the day (request, features used, scores and model versions, "
            "degraded flag, latency), ingested from serving's batch files: exactly the answers delivered; request "
            "ids used twice (across restarts) are kept and counted."
            + (
                f" Days older than serving.log_retention ({retention}) are deleted, files and partitions, and the "
                "table vacuumed."
                if retention
                else ""
            ),
        )
        def _prediction_log(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
            days = partition_days(context)
            folder = log_folder(lake.root, spec.name)
            cutoff = retention_cutoff(retention, datetime.now(UTC).date()) if retention else None
            # A day past retention is not ingested again (its partition is emptied, then purged with the rest).
            frame = pl.concat(
                [
                    (
                        read_day(folder, day) if cutoff is None or day >= cutoff else pl.DataFrame(schema=LOG_SCHEMA)
                    ).with_columns(pl.lit(day.isoformat()).alias(PARTITION_COLUMN))
                    for day in days
                ]
            )
            path = table_of(lake.root, prediction_log_key(spec))
            replace_partitions(path, frame, [d.isoformat() for d in days])
            purged = {}
            if cutoff is not None:
                done = purge_prediction_log(folder, path, cutoff)
                purged = {
                    "retention": retention,
                    "retention_cutoff": cutoff.isoformat(),
                    "purged_log_days": ", ".join(done.log_days) or "none",
                    "purged_table_days": ", ".join(done.table_days) or "none",
                    "vacuumed_files": done.vacuumed_files,
                }
            return dg.MaterializeResult(
                metadata={
                    **table_metadata(path, frame),
                    **purged,
                    "degraded_share": degraded_share(frame),
                    "model_versions": ", ".join(sorted(set(frame.get_column("model_version").drop_nulls()))) or "none",
                    # Kept, not dropped; label joins (shadow, performance) take the first answer of an id.
                    "duplicate_request_ids": duplicate_request_ids(frame),
                }
            )

    return _prediction_log


def build_bento_asset(spec: PipelineSpec, specs_dir: Path) -> dg.AssetsDefinition:
    @dg.asset(
        key=bento_key(spec),
        deps=[model_keys(spec)["champion"]],
        group_name=group(spec, "serving"),
        kinds={"bentoml"},
        owners=[spec.owner] if spec.owner else None,
        # A champion change (gate, `mlops promote`, `mlops rollback`) requests a new bento when automation runs.
        automation_condition=dg.AutomationCondition.eager(),
        description="The BentoML bundle that serves this pipeline: the champion, the challenger and the version "
        "the champion replaced, imported from the MLflow registry by alias, with the specs and the feature code. "
        "Rebuilt only when those change; `mlops serve` serves the latest. With MLOPS_BENTO_URI, also exported "
        "there (`<uri>/<pipeline>/<name>-<version>.bento`) for `mlops serve --bento` on another host.",
    )
    def _bento(mlflow_store: MlflowResource, bentoml_store: BentoResource) -> dg.MaterializeResult:
        from mlops_assets.core.serving.bundle import BundleError, build_bento

        try:
            built = build_bento(
                spec.name, specs_dir, mlflow_store.registry(), bentoml_store.root, export_root=bentoml_store.export_root
            )
        except BundleError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        serve = f"mlops serve {spec.name}   (or: BENTOML_HOME={bentoml_store.root} bentoml serve {built.tag})"
        return dg.MaterializeResult(
            metadata={
                "bento_tag": built.tag,
                "rebuilt": not built.reused,
                **{f"model_version/{alias}": version for alias, version in built.versions.items()},
                "size_bytes": built.size_bytes,
                "path": dg.MetadataValue.path(built.path),
                "source_hash": built.source_hash,
                **({"exported_to": dg.MetadataValue.path(built.exported)} if built.exported else {}),
                "serve": f"mlops serve {spec.name} --bento {built.exported}   (on any host)"
                if built.exported
                else serve,
            }
        )

    return _bento


SHADOW_GATE = "shadow_gate"


def build_shadow_evaluation_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    assert spec.promotion is not None
    promotion = spec.promotion
    key = shadow_evaluation_key(spec)

    @dg.asset(
        key=key,
        deps=[prediction_log_key(spec), raw_key(spec, spec.label.source)],
        group_name=group(spec, "serving"),
        kinds={"polars", "mlflow"},
        owners=[spec.owner] if spec.owner else None,
        description="Champion and challenger on live traffic: every logged prediction that both scored (one "
        "answering, the other in shadow or canary) joined to its label, both evaluated on the same rows. Its "
        "blocking check applies the promotion gate; `mlops promote PIPELINE --from-shadow` promotes on a pass.",
        check_specs=[
            dg.AssetCheckSpec(
                SHADOW_GATE,
                asset=key,
                blocking=True,
                description=f"The challenger beats the champion on labelled live traffic by the promotion gate "
                f"({promotion.metric}, at least {promotion.min_shadow_rows} labelled predictions).",
            )
        ],
    )
    def _shadow_evaluation(
        lake: LakeResource, mlflow_store: MlflowResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        aliases = mlflow_store.registry().aliases(spec.name)
        if CHALLENGER not in aliases or CHAMPION not in aliases:
            raise dg.Failure(description=f"{spec.name!r} has no champion and challenger to compare: {aliases}")
        champion, challenger = aliases[CHAMPION], aliases[CHALLENGER]
        log_path = table_of(lake.root, prediction_log_key(spec))
        log = pl.read_delta(str(log_path)) if log_path.exists() else pl.DataFrame(schema=LOG_SCHEMA)
        labels = pl.read_delta(str(table_of(lake.root, raw_key(spec, spec.label.source))))
        versions = {"champion_version": champion, "challenger_version": challenger}
        try:
            result = compare(spec, log, labels, champion, challenger, promotion.min_shadow_rows)
        except ShadowError as exc:
            waiting = isinstance(exc, TooFewLabels)
            evidence: dict[str, str | int] = {
                **versions,
                "outcome": (ShadowOutcome.WAITING_FOR_LABELS if waiting else ShadowOutcome.CANNOT_COMPARE).value,
                "labelled_rows": exc.rows if isinstance(exc, TooFewLabels) else 0,
            }
            yield dg.MaterializeResult(metadata={**evidence, "problem": str(exc)})
            yield dg.AssetCheckResult(check_name=SHADOW_GATE, passed=False, description=str(exc), metadata=evidence)
            return
        table = [
            {"metric": m, "champion": f"{v:.4f}", "challenger": f"{result.challenger.metrics[m]:.4f}"}
            for m, v in result.champion.metrics.items()
        ]
        metric = promotion.metric
        assert metric is not None, "filled in with the task's first metric when the spec is loaded"
        yield dg.MaterializeResult(
            metadata={
                **versions,
                "labelled_rows": result.rows,
                "metrics": dg.MetadataValue.md(markdown_table(table)),
                f"champion/{metric}": result.champion.metrics[metric],
                f"challenger/{metric}": result.challenger.metrics[metric],
            }
        )
        outcome = ShadowOutcome.WON if result.decision.passed else ShadowOutcome.LOST
        yield dg.AssetCheckResult(
            check_name=SHADOW_GATE,
            passed=result.decision.passed,
            description="; ".join(result.decision.reasons),
            metadata={**versions, "outcome": outcome.value, "labelled_rows": result.rows},
        )

    return _shadow_evaluation
