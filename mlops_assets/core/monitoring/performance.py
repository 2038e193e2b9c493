"""Performance on live traffic: logged predictions joined to the labels that arrived later, per window and version.

Labels come days after the predictions, so a day's performance is rolling: the predictions of the last
`monitoring.performance_window` up to that day, with the labels confirmed by its end (the same verdict whenever the
day is re-run). The champion's metric falling below `monitoring.performance_floor` is the evidence for a
`performance` retraining.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import polars as pl

from mlops_assets.core.models.modeling import compute_metrics, targets
from mlops_assets.core.serving.prediction_log import logged_outputs
from mlops_assets.core.serving.shadow import labels_by_request
from mlops_assets.spec import LOWER_IS_BETTER, PipelineSpec, parse_duration


@dataclass(frozen=True)
class PerformanceVerdict:
    passed: bool
    description: str
    champion_value: float | None
    labelled: int


def rolling_days(day: date, spec: PipelineSpec) -> list[str]:
    """The prediction-log partitions a day's performance covers: `performance_window` of days ending with it."""
    days = max(parse_duration(spec.monitoring.performance_window).days, 1)
    return [(day - timedelta(days=n)).isoformat() for n in reversed(range(days))]


def labels_known_by(labels: pl.LazyFrame, spec: PipelineSpec, day: date) -> pl.LazyFrame:
    """The labels confirmed by the end of `day` (the label timestamp), so a re-run of the day sees the same ones."""
    return labels.filter(pl.col(spec.label.timestamp) < datetime.combine(day + timedelta(days=1), time.min))


def labelled_predictions(log: pl.DataFrame, labels: pl.DataFrame, spec: PipelineSpec) -> pl.DataFrame:
    """The answered predictions that have a label: request_id, model_version, score, probabilities, label
    (fallbacks left out)."""
    answered = log.filter(pl.col("model_version") != "fallback").unique("request_id", keep="first", maintain_order=True)
    if "probabilities" not in answered.columns:  # logged before multiclass existed
        answered = answered.with_columns(pl.lit(None, pl.String).alias("probabilities"))
    return answered.select("request_id", "model_version", "score", "probabilities").join(
        labels_by_request(labels, spec), on="request_id", how="inner"
    )


def metrics_by_version(rows: pl.DataFrame, spec: PipelineSpec) -> pl.DataFrame:
    """One row per model version: labelled predictions and the spec's metrics (None where undefined)."""
    assert spec.model is not None
    out = []
    for (version,), group in rows.group_by(["model_version"], maintain_order=True):
        task = spec.model.task
        metrics = compute_metrics(
            targets(group.get_column("label"), task),
            logged_outputs(group, task),
            spec.model.metrics,
            spec.model.threshold,
        )
        out.append({"model_version": version, "labelled": group.height, **metrics})
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "model_version": pl.String,
        "labelled": pl.Int64,
        **dict.fromkeys(spec.model.metrics, pl.Float64),
    }
    return pl.DataFrame(out, schema=schema)


def judge(table: pl.DataFrame, spec: PipelineSpec, champion: str, min_rows: int) -> PerformanceVerdict:
    """Whether the champion's promotion metric on labelled live traffic stays above the floor."""
    assert spec.promotion is not None
    metric, floor = spec.promotion.metric, spec.monitoring.performance_floor
    assert metric is not None, "filled in with the task's first metric when the spec is loaded"
    row = table.filter(pl.col("model_version") == champion)
    labelled = int(row.get_column("labelled").item()) if row.height else 0
    value = row.get_column(metric).item() if row.height else None
    if floor is None:
        return PerformanceVerdict(
            True, "monitoring.performance_floor is not declared: reported, not judged", value, labelled
        )
    if labelled < min_rows or value is None:
        return PerformanceVerdict(
            True,
            f"{labelled} labelled predictions of champion {champion} (at least {min_rows} needed): not judged",
            value,
            labelled,
        )
    below = value > floor if metric in LOWER_IS_BETTER else value < floor  # lower is better: the floor is a ceiling
    word = "is worse than" if below else "meets"
    return PerformanceVerdict(
        not below,
        f"champion {champion}: {metric} {value:.4f} on {labelled} labelled predictions {word} the floor {floor}",
        value,
        labelled,
    )
