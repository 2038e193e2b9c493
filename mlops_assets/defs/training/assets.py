"""The training set: a point-in-time join of label events to every feature view."""

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from mlops_assets.core.lake import TableDigest, overwrite_table, scan_table, table_version
from mlops_assets.core.markdown import markdown_table
from mlops_assets.core.training.training_set import (
    Verdict,
    constant_features,
    enough_to_learn,
    feature_coverage,
    sum_stats,
    training_set_chunks,
)
from mlops_assets.defs.common.metadata import table_metadata
from mlops_assets.defs.common.resources import LakeResource
from mlops_assets.defs.keys import feature_key, group, raw_key, table_of, training_set_key
from mlops_assets.spec import PipelineSpec

FEATURE_COVERAGE = "feature_coverage"
CONSTANT_FEATURES = "constant_features"
ENOUGH_TO_LEARN = "enough_to_learn"


class TrainingSetConfig(dg.Config):
    as_of: str | None = Field(
        default=None,
        description="ISO time: build the training set as it could have been built then (labels and feature rows "
        "known by then only). Empty: everything known now.",
    )


def training_set_check_specs(spec: PipelineSpec) -> list[dg.AssetCheckSpec]:
    """The training set's checks: the blocking ones stop the model from being trained on what cannot teach it."""
    key = training_set_key(spec)
    checks = [
        dg.AssetCheckSpec(
            FEATURE_COVERAGE,
            asset=key,
            blocking=True,
            description="Fails (ERROR, blocking) when a feature view has no usable features (no row yet, or one "
            "older than its TTL) in more than its max_unusable_share of rows, with the cause measured: the gaps "
            "between an entity's feature rows against the TTL, entities the view never saw.",
        ),
        dg.AssetCheckSpec(
            CONSTANT_FEATURES,
            asset=key,
            description="Warns when a model input has one value (or none) across the whole training set.",
        ),
    ]
    if spec.model is not None:
        checks.append(
            dg.AssetCheckSpec(
                ENOUGH_TO_LEARN,
                asset=key,
                blocking=True,
                description=f"Fails (ERROR, blocking) before anything is trained when the holdout "
                f"({spec.model.holdout}) is as long as the training part, or the training part has fewer than "
                + (
                    f"{spec.model.min_distinct_targets} distinct label values"
                    if spec.model.task == "regression"
                    else f"{spec.model.min_class_rows} examples of a class"
                )
                + ".",
            )
        )
    return checks


def check_result(name: str, verdict: Verdict, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    """A verdict as a check result; its tables (lists of rows) as markdown."""
    return dg.AssetCheckResult(
        check_name=name,
        passed=verdict.passed,
        severity=severity,
        description=verdict.description,
        metadata={k: _metadata_value(v) for k, v in verdict.metadata.items()},
    )


def _metadata_value(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    columns = list(dict.fromkeys(c for row in value for c in row))
    return dg.MetadataValue.md(markdown_table({c: row.get(c, "") for c in columns} for row in value))


def build_training_set_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    label = spec.label
    inputs = [raw_key(spec, label.source), *(feature_key(spec, v) for v in spec.feature_views)]
    cutoff = {
        "at": "at or before",
        "before": "strictly before",
        "previous_day": "of the days before the day of",  # what the daily-synced online store holds then
    }[label.feature_cutoff]
    # The label rate of a 0/1 label; other labels (classes, values) have none.
    binary = spec.model is None or spec.model.task == "binary"

    @dg.asset(
        key=training_set_key(spec),
        deps=inputs,
        group_name=group(spec, "training"),
        code_version=spec.fingerprint(),
        kinds={"delta", "polars"},
        owners=[spec.owner] if spec.owner else None,
        check_specs=training_set_check_specs(spec),
        description=f"Each `{label.column}` label of `{label.source}` with the latest row of every feature view "
        f"{cutoff} its `{label.prediction_timestamp}`, within each view's TTL (older rows are nulled and counted).",
    )
    def _training_set(
        context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: LakeResource
    ) -> dg.MaterializeResult:
        as_of = datetime.fromisoformat(config.as_of) if config.as_of else None
        paths = {key: table_of(lake.root, key) for key in inputs}
        labels = scan_table(paths[inputs[0]])
        features = {v: scan_table(paths[feature_key(spec, v)]) for v in spec.feature_views}
        digest, parts, spans = TableDigest(), [], []

        def chunks() -> Iterator[pl.DataFrame]:
            # Label days a chunk at a time, streamed into one commit: memory holds one chunk, readers the old table.
            for frame, stats in training_set_chunks(spec, labels, features, as_of=as_of):
                parts.append(stats)
                spans.append(
                    frame.select(
                        pl.col(label.prediction_timestamp).min().alias("first_prediction"),
                        pl.col(label.prediction_timestamp).max().alias("last_prediction"),
                        pl.col(label.timestamp).max().alias("last_label"),
                        (pl.col(label.column).cast(pl.Float64, strict=False).sum() if binary else pl.lit(0.0)).alias(
                            "positives"
                        ),
                    )
                )
                yield digest.add(frame)

        path = table_of(lake.root, training_set_key(spec))
        try:
            overwrite_table(path, chunks())
        except ValueError as exc:  # views that cannot be joined, each reason located
            raise dg.Failure(description=f"{spec.name} training set: {exc}", allow_retries=False) from exc
        stats = sum_stats(parts)
        span = pl.concat(spans).select(
            pl.col("first_prediction").min(),
            pl.col("last_prediction").max(),
            pl.col("last_label").max(),
            pl.col("positives").sum(),
        )
        first, last, last_label, positives = span.row(0)
        view_rows = [
            {
                "feature_view": v,
                "no_row": stats.missing[v],
                "stale (past TTL)": stats.stale[v],
                "duplicates": stats.duplicates[v],
            }
            for v in spec.feature_views
        ]
        context.log.info(f"training set: {stats.rows} rows, {stats.missing} without a feature row")
        written = scan_table(path)
        checks = [
            check_result(
                FEATURE_COVERAGE,
                feature_coverage(spec, stats, written, features, as_of),
                dg.AssetCheckSeverity.ERROR,
            ),
            check_result(CONSTANT_FEATURES, constant_features(spec, written), dg.AssetCheckSeverity.WARN),
        ]
        if spec.model is not None:
            checks.append(check_result(ENOUGH_TO_LEARN, enough_to_learn(spec, written), dg.AssetCheckSeverity.ERROR))
        return dg.MaterializeResult(
            check_results=checks,
            metadata={
                **table_metadata(path, digest),
                "as_of": config.as_of or "now",
                "labels_before_start_date": stats.before_start,
                **({"label_rate": positives / stats.rows if stats.rows else 0.0} if binary else {}),
                "first_prediction": str(first),
                "last_prediction": str(last),
                "last_label": str(last_label),
                "input_delta_versions": {k.to_user_string(): table_version(p) for k, p in paths.items()},
                "rows_by_feature_view": dg.MetadataValue.md(markdown_table(view_rows)),
                "null_counts": dg.MetadataValue.md(
                    markdown_table({"feature": f, "nulls": n} for f, n in stats.nulls.items())
                ),
                "duplicates": sum(stats.duplicates.values()),
            },
        )

    return _training_set
