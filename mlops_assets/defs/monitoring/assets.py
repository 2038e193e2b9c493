"""The drift report: one window of served traffic against the champion's training set, with its checks."""

from collections.abc import Iterator
from datetime import date, datetime
from typing import cast

import dagster as dg
import polars as pl

from mlops_assets.core.features.views import FEATURE_TIMESTAMP
from mlops_assets.core.lake import PARTITION_COLUMN, Location, replace_partitions, scan_table, table_version
from mlops_assets.core.markdown import markdown_table
from mlops_assets.core.models.aliases import CHAMPION
from mlops_assets.core.models.lineage import LineageError, trained_on
from mlops_assets.core.models.modeling import Columns, fitted_columns, predict, to_pandas
from mlops_assets.core.monitoring.grading import (
    OUTPUT_PREFIX,
    REFERENCE_ROWS,
    OfflineTable,
    ViewRows,
    offline_frames,
    offline_stats,
    offline_verdict,
    scored_reference,
    served_features,
    served_rows,
    skew_stats,
    skew_verdict,
    warm_masks,
    window_days,
    window_report,
)
from mlops_assets.core.monitoring.performance import (
    judge,
    labelled_predictions,
    labels_known_by,
    metrics_by_version,
    rolling_days,
)
from mlops_assets.core.monitoring.report import render, top_movers
from mlops_assets.core.object_store import ObjectStoreError
from mlops_assets.core.serving.prediction_log import LOG_SCHEMA, degraded_share
from mlops_assets.defs.common.metadata import links, page_metadata, table_metadata
from mlops_assets.defs.common.partitions import daily_partitions
from mlops_assets.defs.common.resources import LakeResource, MlflowResource, ReportsResource
from mlops_assets.defs.keys import (
    drift_report_key,
    drift_stats_key,
    feature_key,
    group,
    model_keys,
    performance_key,
    prediction_log_key,
    raw_key,
    raw_table,
    table_of,
    training_set_key,
)
from mlops_assets.defs.monitoring.checks import (
    DATA_QUALITY,
    DATASET_DRIFT,
    FEATURE_DRIFT,
    OFFLINE_DRIFT,
    PERFORMANCE,
    PREDICTION_DRIFT,
    SKEW,
)
from mlops_assets.settings import drift_report_page
from mlops_assets.spec import PipelineSpec

SCORED_REFERENCE_ROWS = 50_000

CHECKS = {
    FEATURE_DRIFT: "No feature's distribution moved past the KS/PSI thresholds (WARN/ERROR by level).",
    DATASET_DRIFT: "The share of features drifted at ERROR stays under monitoring.dataset_drift_share.",
    PREDICTION_DRIFT: "The champion's score distribution stays close to its scores on the training set.",
    DATA_QUALITY: "Nulls, unseen categories, missing features, degraded answers and unknown model versions.",
    SKEW: "Served feature values equal the offline feature rows they came from (same entity and feature timestamp).",
    OFFLINE_DRIFT: "Features computed offline from the day's raw data against the training period (before serving).",
}


def build_drift_report_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    key = drift_report_key(spec)
    monitoring = spec.monitoring

    @dg.asset(
        key=key,
        # What a day's report reads: its served traffic, the champion and the training set it was trained on, and the
        # day's offline feature rows (offline drift).
        deps=[
            dg.AssetDep(
                prediction_log_key(spec),
                partition_mapping=dg.TimeWindowPartitionMapping(start_offset=1 - monitoring.window_days),
            ),
            model_keys(spec)["champion"],
            training_set_key(spec),
            *(feature_key(spec, view) for view in spec.feature_views),
        ],
        partitions_def=daily_partitions(spec),
        group_name=group(spec, "monitoring"),
        kinds={"polars", "delta", "scipy"},
        owners=[spec.owner] if spec.owner else None,
        code_version=monitoring.fingerprint(),
        description="One day of served traffic against the champion's training set: KS, PSI, chi-squared, null "
        "rates and unseen categories per feature, the score distribution, data quality. Statistics go to the "
        "`drift_stats` Delta table (one partition per day, for trends); a person opens the HTML report linked "
        "in the metadata. Its checks are what the retraining sensor reads.",
        check_specs=[dg.AssetCheckSpec(name, asset=key, description=text) for name, text in CHECKS.items()],
    )
    def _drift_report(
        context: dg.AssetExecutionContext, lake: LakeResource, mlflow_store: MlflowResource, reports: ReportsResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        day = context.partition_key
        registry = mlflow_store.registry()
        champion = registry.aliases(spec.name).get(CHAMPION)
        if champion is None:
            raise dg.Failure(description=f"{spec.name!r} has no champion: nothing to monitor yet", allow_retries=False)
        live = registry.version(spec.name, champion)
        tags = live.tags
        try:
            training, holdout = trained_on(spec, table_of(lake.root, training_set_key(spec)), tags)
        except LineageError as exc:
            raise dg.Failure(description=f"version {champion} of {spec.name!r}: {exc}", allow_retries=False) from exc
        seed = spec.model.seed if spec.model else 0
        reference = training.sample(min(REFERENCE_ROWS, training.height), seed=seed)
        masks = warm_masks(reference, spec.label.prediction_timestamp, spec, reference.columns)
        model = registry.load_sklearn(spec.name, champion)
        columns = fitted_columns(model)
        # The model's outputs on rows it was not trained on (its holdout): on its training rows it is more sure of
        # itself than on any new traffic, which would read as prediction drift from the first day.
        scored = (
            holdout.sample(min(SCORED_REFERENCE_ROWS, holdout.height), seed=seed)
            if holdout.height
            else (scored_reference(reference, masks).head(SCORED_REFERENCE_ROWS))
        )
        reference_outputs = predict(model, to_pandas(scored, columns), spec.model.task if spec.model else "binary")
        log_path = table_of(lake.root, prediction_log_key(spec))
        days = window_days(date.fromisoformat(day), spec)
        log = (
            scan_table(log_path).filter(pl.col(PARTITION_COLUMN).is_in(days)).collect()
            if log_path.exists()
            else pl.DataFrame(schema=LOG_SCHEMA)
        )
        known = registry.versions(spec.name)
        label = day if len(days) == 1 else f"{days[0]}..{day}"
        # Served view features are each entity's daily row (the online store syncs daily). Training rows hold those
        # too when cutoff is previous_day: both sides then count a view's rows once per entity and day. With the
        # other cutoffs a training row holds its own moment's value: both sides count rows as requests weight them.
        # PII inputs are logged dropped or hashed: there is nothing of them to grade against the training set.
        pii = set(spec.serving.pii.fields) if spec.serving.pii else set()
        graded = Columns([c for c in columns.numeric if c not in pii], [c for c in columns.categorical if c not in pii])
        views = ViewRows.of(spec, graded.all) if spec.label.feature_cutoff == "previous_day" else None
        report = window_report(
            label, monitoring, reference, reference_outputs, log, graded, champion, known, masks, views
        )
        scans = {view: scan_table(table_of(lake.root, feature_key(spec, view))) for view in spec.feature_views}
        skew = skew_stats(log, served_rows(scans, log), spec)
        period = training.get_column(spec.label.prediction_timestamp)
        # Prediction times: date-times (polars types a min or max as any Python literal).
        first, last = cast(datetime, period.min()), cast(datetime, period.max())
        offline = offline_stats(
            offline_frames(offline_tables(lake.root, spec), spec, days, first, last, seed), monitoring
        )
        checks = {
            **report.checks,
            SKEW: skew_verdict(day, skew, monitoring),
            OFFLINE_DRIFT: offline_verdict(day, offline, monitoring),
        }

        stats_path = table_of(lake.root, drift_stats_key(spec))
        stats = pl.concat([report.stats, offline], how="diagonal_relaxed").with_columns(
            pl.lit(day).alias("window"), pl.lit(champion).alias("champion_version"), pl.lit(day).alias(PARTITION_COLUMN)
        )
        replace_partitions(stats_path, stats, [day])
        history = scan_table(stats_path).filter(pl.col("source") == "served").collect()
        pages, page_key = reports.pages(), drift_report_page(spec.name, day)
        try:
            with pages.writing(page_key) as (file,):
                render(
                    f"{spec.name} drift report, {day} (champion version {champion})",
                    report.stats,
                    {name: (verdict.level, verdict.description) for name, verdict in checks.items()},
                    reference.select(graded.all),
                    served_features(log, graded),
                    history,
                    file,
                )
        except ObjectStoreError as exc:
            raise dg.Failure(description=f"the drift report of {day}: {exc}") from exc
        is_output = pl.col("feature").str.starts_with(OUTPUT_PREFIX)
        features = report.stats.filter(~is_output)
        top = features.sort("psi", descending=True, nulls_last=True).head(1)
        outputs = report.stats.filter(is_output)
        # Numbers or None (polars types a column's max or mean as any Python literal).
        prediction_psi = cast("float | None", outputs.get_column("psi").max())  # multiclass: the worst output
        drifted = cast("float | None", (features.get_column("distribution_level") == "error").mean())
        yield dg.MaterializeResult(
            metadata={
                **table_metadata(stats_path, stats),
                "window": day,
                "window_days": ", ".join(days),
                "logged_predictions": report.rows,
                "champion_version": champion,
                "reference_rows": reference.height,
                **({"not_graded_pii": ", ".join(sorted(pii & set(columns.all))) or "none"} if pii else {}),
                # Windowed features are compared on the training rows whose window had its whole history only.
                "warming_up": ", ".join(sorted(f for f, m in masks.items() if not m.any())) or "none",
                "top_movers": dg.MetadataValue.md(top_movers(features)),
                "top_feature": top.get_column("feature").item() if top.height else "",
                "top_feature_psi": float(top.get_column("psi").item() or 0.0) if top.height else 0.0,
                "prediction_psi": float(prediction_psi or 0.0),
                "drifted_share": float(drifted or 0.0),
                "degraded_share": degraded_share(log),
                **page_metadata("report", pages.page(page_key)),
                # The champion that served the day: its MLflow version page and the run that trained it.
                **links(registry.links(spec.name, champion, live.run_id)),
                "skew_compared_values": int(skew.get_column("compared").sum()),
                "skew_mismatched_values": int(skew.get_column("mismatched").sum()),
            }
        )
        for name, verdict in checks.items():
            yield dg.AssetCheckResult(
                check_name=name,
                passed=verdict.level == "ok",
                severity=dg.AssetCheckSeverity.ERROR if verdict.level == "error" else dg.AssetCheckSeverity.WARN,
                description=verdict.description,
                metadata={
                    k: dg.MetadataValue.md(str(v))
                    if k.endswith("_table")
                    else v
                    if isinstance(v, int | float | str)
                    else str(v)
                    for k, v in verdict.evidence.items()
                },
            )

    return _drift_report


def offline_tables(root: Location, spec: PipelineSpec) -> dict[str, OfflineTable]:
    """The lake's tables the offline drift reads: every feature view, and the raw source carrying the request fields."""
    # A view's rows as serving meets them: with feature_cutoff previous_day, each entity's last row of each day (what
    # the daily sync writes to the online store); otherwise every row (training joins each event's own).
    daily = list(spec.entity.keys) if spec.label.feature_cutoff == "previous_day" else None
    tables = {
        view: OfflineTable(scan_table(path), FEATURE_TIMESTAMP, daily_keys=daily)
        for view in spec.feature_views
        if table_version(path := table_of(root, feature_key(spec, view))) is not None
    }
    sources = [n for n, s in spec.sources.items() if set(spec.request_features) <= set(s.columns)]
    raw = table_of(root, raw_key(spec, sources[0])) if sources and spec.request_features else None
    if raw is not None and table_version(raw) is not None:
        source = spec.sources[sources[0]]
        tables[raw_table(sources[0])] = OfflineTable(
            scan_table(raw), source.event_timestamp, list(spec.request_features)
        )
    return tables


def build_performance_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    assert spec.promotion is not None
    key, metric, floor = performance_key(spec), spec.promotion.metric, spec.monitoring.performance_floor

    @dg.asset(
        key=key,
        deps=[prediction_log_key(spec), raw_key(spec, spec.label.source)],
        partitions_def=daily_partitions(spec),
        group_name=group(spec, "monitoring"),
        kinds={"polars", "sklearn"},
        owners=[spec.owner] if spec.owner else None,
        description=f"Rolling live performance: the logged predictions of the {spec.monitoring.performance_window} "
        "up to the day, joined (by request id) to the labels confirmed by its end; metrics per model version.",
        check_specs=[
            dg.AssetCheckSpec(
                PERFORMANCE,
                asset=key,
                description=f"The champion's {metric} on labelled live traffic stays above "
                f"monitoring.performance_floor ({floor}).",
            )
        ],
    )
    def _performance(
        context: dg.AssetExecutionContext, lake: LakeResource, mlflow_store: MlflowResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        day = context.partition_key
        days = rolling_days(date.fromisoformat(day), spec)
        champion = mlflow_store.registry().aliases(spec.name).get(CHAMPION, "")
        log_path = table_of(lake.root, prediction_log_key(spec))
        log = (
            scan_table(log_path).filter(pl.col(PARTITION_COLUMN).is_in(days)).collect()
            if log_path.exists()
            else pl.DataFrame(schema=LOG_SCHEMA)
        )
        raw_labels = scan_table(table_of(lake.root, raw_key(spec, spec.label.source)))
        labels = labels_known_by(raw_labels, spec, date.fromisoformat(day)).collect()
        table = metrics_by_version(labelled_predictions(log, labels, spec), spec)
        verdict = judge(table, spec, champion, spec.monitoring.min_rows)
        yield dg.MaterializeResult(
            metadata={
                "window": day,
                "predictions_from": days[0],
                "champion_version": champion,
                "labelled_predictions": int(table.get_column("labelled").sum()),
                f"champion_{metric}": verdict.champion_value if verdict.champion_value is not None else float("nan"),
                "by_version": dg.MetadataValue.md(
                    markdown_table(
                        {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()}
                        for r in table.iter_rows(named=True)
                    )
                ),
            }
        )
        yield dg.AssetCheckResult(
            check_name=PERFORMANCE,
            passed=verdict.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{day} (predictions since {days[0]}): {verdict.description}",
            metadata={"window": day, "labelled": verdict.labelled},
        )

    return _performance
