"""One window of monitoring: served features and scores against the champion's training set, graded by the spec.

The statistics come from `drift`; this module decides what the window means (levels per feature, dataset drift,
prediction drift, data quality) and says why in words a person can act on. No Dagster, no MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import cast

import numpy as np
import polars as pl
from scipy import stats as scipy_stats

from mlops_assets.core.features.views import FEATURE_TIMESTAMP, KNOWN_AT
from mlops_assets.core.lake import PARTITION_COLUMN
from mlops_assets.core.markdown import markdown_table
from mlops_assets.core.models.modeling import Columns, Outputs
from mlops_assets.core.monitoring.calibration import ERROR_QUANTILE, WARN_QUANTILE, Noise, design_effect
from mlops_assets.core.monitoring.drift import (
    Distinct,
    FeatureStats,
    Level,
    categorical_stats,
    compare,
    compared_values,
    drifted_share,
    effective,
    graded,
    numeric_stats,
    stats_frame,
    thresholds_of,
)
from mlops_assets.core.serving.prediction_log import degraded_share, logged_outputs
from mlops_assets.spec import DriftThresholds, MonitoringSpec, PipelineSpec

# The rows of a window's stats that describe the model's outputs, not a feature: the score or value (binary,
# regression), the predicted class and each class's probability (multiclass).
SCORE = "__score__"
LABEL = "__label__"
OUTPUT_PREFIX = "__"


def probability_row(name: str) -> str:
    return f"__proba_{name}__"


def output_stats(
    reference: Outputs, current: Outputs, bins: int, p_values: bool = False, design_effect: float = 1.0
) -> list[FeatureStats]:
    """Drift of the model's outputs: the distribution of scores or predicted values; for multiclass, of the
    predicted classes (chi-squared, PSI) and of each class's probability; calibrated to the window's size, its rows
    over `design_effect` when they are clustered (see `served_design_effect`)."""
    deff = design_effect
    if reference.task != "multiclass":
        return [numeric_stats(SCORE, reference.values, current.values.astype(float), bins, True, p_values, deff)]
    stats = [
        categorical_stats(
            LABEL,
            pl.Series(reference.labels, dtype=pl.String),
            pl.Series(current.labels if len(current) else [], dtype=pl.String),
            calibrate=True,
            design_effect=deff,
        )
    ]
    for j, name in enumerate(reference.classes):
        column = current.classes.index(name) if name in current.classes else None
        values = current.values[:, column] if column is not None else np.zeros(len(current))
        stats.append(numeric_stats(probability_row(name), reference.values[:, j], values, bins, True, p_values, deff))
    return stats


def served_design_effect(log: pl.DataFrame) -> float:
    """The design effect of logged scores clustered by entity and UTC day: the requests of one entity on one day
    share its view's features (a segment-keyed pipeline, hundreds a day), so their scores are not independent rows
    (core/monitoring/calibration.py)."""
    if log.height < 2:
        return 1.0
    clusters = log.select(pl.concat_str("entity", pl.col("timestamp").dt.date().cast(pl.String), separator="|"))
    scores = log.get_column("score").cast(pl.Float64).fill_null(float("nan")).to_numpy()
    return design_effect(scores, clusters.to_series().fill_null("").to_numpy())


_ORDER = {"ok": 0, "warn": 1, "error": 2}


def worst(levels: Sequence[Level]) -> Level:
    return max(levels, key=_ORDER.__getitem__, default="ok")


def distribution_level(stats: FeatureStats, thresholds: DriftThresholds) -> Level:
    """Drift of the distribution itself: KS (numeric) and PSI, each above its floor and its noise."""
    noise = stats.noise.get
    return worst([graded(stats.ks, thresholds.ks, noise("ks")), graded(stats.psi, thresholds.psi, noise("psi"))])


def quality_level(stats: FeatureStats, thresholds: DriftThresholds) -> Level:
    """Data quality: more nulls than the reference, categories it never had (each above its floor and noise)."""
    noise = stats.noise.get
    return worst(
        [
            graded(stats.null_rate_increase, thresholds.null_rate_increase, noise("null_rate_increase")),
            graded(stats.unseen_share, thresholds.unseen_share, noise("unseen_share")),
        ]
    )


def live(stats: FeatureStats) -> bool:
    """A feature with values in the reference: one all null there (a view never available in training) says
    nothing about drift, and is reported by data quality instead of counted by dataset drift."""
    return stats.reference_rows > 0 and stats.null_rate_reference < 1.0


NOT_GRADED = "not graded"


def too_few(features: Sequence[FeatureStats], min_rows: int) -> dict[str, int]:
    """The features compared on fewer than `min_rows` rows of the window, with their rows: reported, never graded (a
    view's daily rows of a few segments are a few observations a day, however many requests they answered)."""
    return {s.feature: s.current_rows for s in features if s.current_rows < min_rows}


def not_graded_note(few: Mapping[str, int], min_rows: int) -> str:
    """What a check says of the features it left ungraded (empty when it graded them all)."""
    if not few:
        return ""
    shown = ", ".join(f"{name} ({rows} rows)" for name, rows in list(few.items())[:10])
    return (
        f"; not graded, too few rows (fewer than monitoring.min_rows, {min_rows}; a view's row counts once per "
        f"entity and day, so a longer monitoring.window holds more): {shown}"
    )


def levels(
    stats: Sequence[FeatureStats],
    thresholds: Sequence[DriftThresholds],
    quality: DriftThresholds,
    few: Mapping[str, int],
) -> list[pl.Series]:
    """Each row's distribution level (by its own thresholds) and quality level ('not graded' for those in `few`)."""
    pairs = list(zip(stats, thresholds, strict=True))
    return [
        pl.Series(
            "distribution_level",
            [NOT_GRADED if s.feature in few else distribution_level(s, t) for s, t in pairs],
            pl.String,
        ),
        pl.Series(
            "quality_level", [NOT_GRADED if s.feature in few else quality_level(s, quality) for s in stats], pl.String
        ),
    ]


def threshold_columns(stats: Sequence[FeatureStats], thresholds: Sequence[DriftThresholds]) -> list[pl.Series]:
    """Per feature, the level each graded statistic had to reach to warn and to fail (floor and noise combined)."""
    bounds = [thresholds_of(s, t) for s, t in zip(stats, thresholds, strict=True)]
    return [
        pl.Series(f"{name}_{side}_at", [b[name][i] for b in bounds], pl.Float64)
        for name in ("ks", "psi", "null_rate_increase", "unseen_share")
        for i, side in enumerate(("warn", "error"))
    ]


@dataclass(frozen=True)
class CheckVerdict:
    """A check's result for one window: its level, a sentence, and the evidence (for metadata)."""

    level: Level
    description: str
    evidence: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowReport:
    window: str
    rows: int
    stats: pl.DataFrame  # one row per feature (and one for the score), with levels
    checks: dict[str, CheckVerdict]


def served_features(log: pl.DataFrame, columns: Columns) -> pl.DataFrame:
    """The model inputs the service used, from the prediction log's JSON feature vectors, typed like training."""
    if log.height == 0:
        return pl.DataFrame(
            schema={**dict.fromkeys(columns.numeric, pl.Float64), **dict.fromkeys(columns.categorical, pl.String)}
        )
    decoded = pl.DataFrame([json.loads(v) for v in log.get_column("features")], infer_schema_length=None)
    return pl.DataFrame(
        [
            *[
                (
                    decoded.get_column(c).cast(pl.Float64)
                    if c in decoded.columns
                    else pl.Series(c, [None] * log.height, pl.Float64)
                ).alias(c)
                for c in columns.numeric
            ],
            *[
                (
                    decoded.get_column(c).cast(pl.String)
                    if c in decoded.columns
                    else pl.Series(c, [None] * log.height, pl.String)
                ).alias(c)
                for c in columns.categorical
            ],
        ]
    )


@dataclass(frozen=True)
class ViewRows:
    """The model inputs that are feature views' rows (not request fields), the entity keys that own them, and the
    reference's prediction time (whose day says which daily row a training row holds)."""

    features: frozenset[str]
    keys: list[str]
    timestamp: str

    @classmethod
    def of(cls, spec: PipelineSpec, columns: Sequence[str]) -> ViewRows:
        features = frozenset(c for c in columns if c not in spec.request_features)
        return cls(features, list(spec.entity.keys), spec.label.prediction_timestamp)

    def distinct(self, reference: pl.DataFrame, log: pl.DataFrame) -> Distinct:
        """Each side's entity and day per row: the reference's by its prediction time, the log's by its request's."""
        day = "__day"
        return Distinct(
            self.features,
            reference.select(*self.keys, pl.col(self.timestamp).dt.date().alias(day)),
            served_entities(log, self.keys).with_columns(log.get_column("timestamp").dt.date().alias(day)),
        )


def served_entities(log: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """The entity keys of each logged answer, as text (as the requests carried them)."""
    if log.height == 0:
        return pl.DataFrame(schema=dict.fromkeys(keys, pl.String))
    decoded = pl.DataFrame([json.loads(e) for e in log.get_column("entity")], infer_schema_length=None)
    return decoded.select(pl.col(k).cast(pl.String) for k in keys)


def window_report(
    window: str,
    monitoring: MonitoringSpec,
    reference: pl.DataFrame,
    reference_outputs: Outputs,
    log: pl.DataFrame,
    columns: Columns,
    champion: str,
    known_versions: set[str],
    masks: Mapping[str, pl.Series] | None = None,
    views: ViewRows | None = None,
) -> WindowReport:
    """Grade one window of logged predictions: features, dataset, scores and data quality (`masks`: per windowed
    feature, the reference rows whose window had its whole history; `views`: which features are a view's rows, to
    be counted once per entity and day). A feature compared on fewer than `monitoring.min_rows` rows is reported,
    not graded."""
    thresholds = monitoring.thresholds
    current = served_features(log, columns)
    distinct = views.distinct(reference, log) if views is not None else None
    features = compare(
        reference.select(columns.all),
        current,
        columns.numeric,
        columns.categorical,
        monitoring.psi_bins,
        calibrate=True,
        p_values=monitoring.p_values,
        masks=masks,
        distinct=distinct,
    )
    answered = log.filter(pl.col("model_version") == champion) if log.height else log
    for column in ("score", "probabilities"):  # a log written before multiclass existed has no probabilities
        if column not in answered.columns:
            answered = answered.with_columns(pl.lit(None, pl.String).alias(column))
    deff = served_design_effect(answered)
    outputs = output_stats(
        reference_outputs,
        logged_outputs(answered, reference_outputs.task),
        monitoring.psi_bins,
        monitoring.p_values,
        deff,
    )
    graded_with = [thresholds] * len(features) + [monitoring.prediction_drift] * len(outputs)
    few = too_few(features, monitoring.min_rows)
    stats = stats_frame([*features, *outputs]).with_columns(
        *levels([*features, *outputs], graded_with, thresholds, few),
        *threshold_columns([*features, *outputs], graded_with),
        pl.lit("served").alias("source"),
    )
    rows = log.height
    if rows < monitoring.min_rows:
        reason = (
            f"window {window} has {rows} logged predictions, fewer than monitoring.min_rows "
            f"({monitoring.min_rows}): not graded"
        )
        verdict = CheckVerdict("warn", reason, {"window": window, "rows": rows})
        return WindowReport(
            window,
            rows,
            stats,
            dict.fromkeys(("feature_drift", "dataset_drift", "prediction_drift", "data_quality"), verdict),
        )
    return WindowReport(
        window,
        rows,
        stats,
        {
            "feature_drift": _feature_drift(window, features, monitoring, few),
            "dataset_drift": _dataset_drift(window, features, monitoring, few),
            "prediction_drift": _prediction_drift(window, outputs, monitoring, deff),
            "data_quality": _data_quality(
                window,
                features,
                log,
                monitoring,
                known_versions,
                out_of_range(reference, current, [c for c in columns.numeric if c not in few], masks, distinct),
                few,
            ),
        },
    )


def _describe(stats: FeatureStats) -> str:
    parts = [f"{name} {value:.3f}" for name, value in (("KS", stats.ks), ("PSI", stats.psi)) if value is not None]
    return f"{stats.feature} ({', '.join(parts)})"


def calibration_table(features: Sequence[FeatureStats], thresholds: DriftThresholds) -> str:
    """What each feature's distribution had to reach in this window to warn and to fail (the spec's floor, or the
    reference's own noise at the window's size when that is larger), beside what it reached."""
    rows = []
    for s in features:
        bounds = thresholds_of(s, thresholds)
        for name, value in (("KS", s.ks), ("PSI", s.psi)):
            if value is not None:
                warn, error = bounds[name.lower()]
                rows.append(
                    {
                        "feature": s.feature,
                        "statistic": name,
                        "value": f"{value:.4f}",
                        "warns at": f"{warn:.4f}",
                        "fails at": f"{error:.4f}",
                        "rows": s.current_rows,
                    }
                )
    return markdown_table(rows)


def _feature_drift(
    window: str, features: list[FeatureStats], monitoring: MonitoringSpec, few: Mapping[str, int]
) -> CheckVerdict:
    thresholds = monitoring.thresholds
    graded_ones = [s for s in features if s.feature not in few]
    found = [(s, distribution_level(s, thresholds)) for s in graded_ones]
    moved = sorted([(s, lv) for s, lv in found if lv != "ok"], key=lambda x: -(x[0].psi or 0))
    level = worst([lv for _, lv in found])
    note = not_graded_note(few, monitoring.min_rows)
    evidence: dict[str, object] = {
        "window": window,
        "thresholds_table": calibration_table(graded_ones, thresholds),
        **({"not_graded": list(few)} if few else {}),
    }
    if not graded_ones:
        return CheckVerdict("warn", f"{window}: no feature graded{note}", evidence)
    if not moved:
        return CheckVerdict("ok", f"{window}: no feature drifted{note}", evidence)
    text = ", ".join(f"{_describe(s)} {lv}" for s, lv in moved[:10])
    return CheckVerdict(
        level,
        f"{window}: {len(moved)} features drifted: {text}{note}",
        {**evidence, "features": [s.feature for s, _ in moved]},
    )


def _dataset_drift(
    window: str, features: list[FeatureStats], monitoring: MonitoringSpec, few: Mapping[str, int]
) -> CheckVerdict:
    counted = [s for s in features if live(s) and s.feature not in few]
    levels = [distribution_level(s, monitoring.thresholds) for s in counted]
    share = drifted_share(levels)
    level = monitoring.dataset_drift_share.level(share)
    drifted = [s.feature for s, lv in zip(counted, levels, strict=True) if lv == "error"]
    dead = sum(not live(s) for s in features if s.feature not in few)
    return CheckVerdict(
        level,
        f"{window}: {share:.0%} of {len(counted)} live features drifted at error level "
        f"(dataset drift: {monitoring.dataset_drift_share.warn:.0%} warns, "
        f"{monitoring.dataset_drift_share.error:.0%} fails)"
        + (f": {', '.join(drifted)}" if drifted else "")
        + (f"; {dead} features without values in training not counted (see data_quality)" if dead else "")
        + (f"; {len(few)} features with too few rows not counted (see feature_drift)" if few else ""),
        {"window": window, "drifted_share": share, "drifted": drifted, "live_features": len(counted)},
    )


def _prediction_drift(
    window: str, outputs: list[FeatureStats], monitoring: MonitoringSpec, design_effect: float
) -> CheckVerdict:
    if outputs[0].current_rows == 0:
        return CheckVerdict(
            "warn",
            f"{window}: no outputs of the champion were logged: prediction drift not measured",
            {"window": window},
        )
    levels = [distribution_level(s, monitoring.prediction_drift) for s in outputs]
    described = ", ".join(f"{_describe(s)} {lv}" for s, lv in zip(outputs, levels, strict=True))
    worst_output = max(outputs, key=lambda s: s.psi or 0.0)
    rows = outputs[0].current_rows
    clustered = (
        f" ({rows} answers, worth {effective(rows, design_effect)} independent ones: those of one entity on one day "
        f"move together, design effect {design_effect:.2f})"
        if design_effect >= 1.05
        else ""
    )
    return CheckVerdict(
        worst(levels),
        f"{window}: champion outputs vs its training set: {described}{clustered}",
        {
            "window": window,
            "ks": worst_output.ks,
            "psi": worst_output.psi,
            "output": worst_output.feature,
            "design_effect": round(design_effect, 3),
        },
    )


def out_of_range(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    numeric: Sequence[str],
    masks: Mapping[str, pl.Series] | None = None,
    distinct: Distinct | None = None,
) -> dict[str, tuple[float, Noise]]:
    """Per numeric feature, the share of current values outside the range the reference ever had (on the values
    compared for drift: a window still filling up has a narrower range), and that share's noise when nothing
    changed: each of n new values falls outside the range of N others with probability 2 / (N + 1)."""
    shares = {}
    for name in numeric:
        known, values = compared_values(reference, current, name, masks, distinct)
        known, values = known.drop_nulls(), values.drop_nulls()
        low, high = known.min(), known.max()
        if low is None or values.len() == 0:
            continue
        outside = int(((values < low) | (values > high)).sum())
        chance = min(1.0, 2 / (known.len() + 1))
        warn, error = scipy_stats.binom.ppf([WARN_QUANTILE, ERROR_QUANTILE], values.len(), chance) / values.len()
        shares[name] = (outside / values.len(), Noise(float(warn), float(error)))
    return shares


def _data_quality(
    window: str,
    features: list[FeatureStats],
    log: pl.DataFrame,
    monitoring: MonitoringSpec,
    known: set[str],
    outside: dict[str, tuple[float, Noise]],
    few: Mapping[str, int],
) -> CheckVerdict:
    thresholds = monitoring.thresholds
    problems: list[tuple[Level, str]] = []
    for name, (share, noise) in sorted(outside.items(), key=lambda item: -item[1][0]):
        # Values never seen in training, like unseen categories: the model extrapolates on them.
        level = graded(share, thresholds.unseen_share, noise)
        if level != "ok":
            problems.append((level, f"{name} has {share:.1%} values outside the training range"))
    # Not problems of the window, so never more than a note: features without a reference are not graded.
    warming = [s.feature for s in features if s.reference_rows == 0]
    dead = [s.feature for s in features if s.reference_rows and s.null_rate_reference == 1.0]
    if dead:  # a view stale or missing in every training row: a problem of the training set, worth a warning
        problems.append(("warn", f"{len(dead)} features had no value in the training set: {', '.join(dead[:10])}"))
    notes = (
        [f"not graded yet: {', '.join(warming[:10])} (their windows were still filling up in every training row)"]
        if warming
        else []
    )
    for s in features:
        if not live(s) or s.feature in few:
            continue
        if s.current_rows and s.null_rate_current == 1.0:
            problems.append(("error", f"{s.feature} is missing entirely"))
            continue
        null = graded(s.null_rate_increase, thresholds.null_rate_increase, s.noise.get("null_rate_increase"))
        if null != "ok":
            problems.append((null, f"{s.feature} nulls {s.null_rate_reference:.1%} -> {s.null_rate_current:.1%}"))
        unseen = graded(s.unseen_share, thresholds.unseen_share, s.noise.get("unseen_share"))
        if unseen != "ok":
            problems.append((unseen, f"{s.feature} has {s.unseen_share:.1%} values never seen in training"))
    degraded = degraded_share(log)
    fallback = monitoring.fallback_rate.level(degraded)
    if fallback != "ok":
        problems.append((fallback, f"{degraded:.1%} of the answers were degraded (store failure or fallback)"))
    unknown = sorted(set(log.get_column("model_version").drop_nulls()) - known - {"fallback"})
    if unknown:
        count = log.filter(pl.col("model_version").is_in(unknown)).height
        problems.append(("warn", f"{count} predictions from model versions the registry does not know: {unknown}"))
    evidence: dict[str, object] = {"window": window, "degraded_share": degraded, "not_graded_yet": len(warming)}
    if not problems:
        return CheckVerdict("ok", f"{window}: " + "; ".join(["data quality as in training", *notes]), evidence)
    return CheckVerdict(
        worst([lv for lv, _ in problems]),
        f"{window}: " + "; ".join([*(text for _, text in problems), *notes]),
        {**evidence, "problems": [t for _, t in problems]},
    )


SKEW_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "view": pl.String,
    "feature": pl.String,
    "compared": pl.Int64,
    "mismatched": pl.Int64,
    "not_found_offline": pl.Int64,
    "max_abs_diff": pl.Float64,
}


def skew_stats(log: pl.DataFrame, offline: Mapping[str, pl.DataFrame], spec: PipelineSpec) -> pl.DataFrame:
    """Per feature, how many served values differ from the offline feature row they came from.

    Each logged answer records the feature timestamp of every view's online row, so the offline row is found
    exactly (entity and timestamp): a difference is a different computation (skew), never staleness. Values are
    compared bit for bit after typing them like the offline table (JSON keeps every float exactly). Degraded answers
    and views served without a row are left out.
    """
    keys = spec.entity.keys
    answered = log.filter(~pl.col("degraded") & pl.col("feature_timestamps").is_not_null())
    if answered.height == 0:
        return pl.DataFrame(schema=SKEW_SCHEMA)
    entities = pl.DataFrame([json.loads(e) for e in answered.get_column("entity")], infer_schema_length=None).select(
        keys
    )
    stamps = [json.loads(t) for t in answered.get_column("feature_timestamps")]
    served = [json.loads(f) for f in answered.get_column("features")]
    rows = []
    for view, table in offline.items():
        names = [c for c in table.columns if c not in (*keys, FEATURE_TIMESTAMP, KNOWN_AT, PARTITION_COLUMN)]
        frame = entities.with_columns(
            pl.Series(FEATURE_TIMESTAMP, [t.get(view) for t in stamps], pl.String)
            .str.to_datetime(time_unit="us")
            .cast(table.schema[FEATURE_TIMESTAMP]),
            *[
                pl.Series(n, [v.get(n) for v in served], strict=False).cast(table.schema[n], strict=False)
                for n in names
            ],
        ).filter(pl.col(FEATURE_TIMESTAMP).is_not_null())
        reference = table.unique([*keys, FEATURE_TIMESTAMP], keep="last").with_columns(pl.lit(True).alias("__found"))
        joined = frame.join(reference, on=[*keys, FEATURE_TIMESTAMP], how="left", suffix="__offline")
        found = joined.get_column("__found").fill_null(False)
        for name in names:
            a, b = joined.get_column(name), joined.get_column(f"{name}__offline")
            same = (a == b).fill_null(False) | (a.is_null() & b.is_null())
            difference = (a.cast(pl.Float64, strict=False) - b.cast(pl.Float64, strict=False)).abs().filter(found)
            rows.append(
                {
                    "view": view,
                    "feature": name,
                    "compared": int(found.sum()),
                    "mismatched": int((found & ~same).sum()),
                    "not_found_offline": int((~found).sum()),
                    "max_abs_diff": float(cast("float | None", difference.max()) or 0.0) if difference.len() else 0.0,
                }
            )
    return pl.DataFrame(rows, schema=SKEW_SCHEMA)


def skew_verdict(window: str, skew: pl.DataFrame, monitoring: MonitoringSpec) -> CheckVerdict:
    """The worst feature's share of served values that differ from (or are missing) offline."""

    def total(column: str) -> int:  # of an Int64 column (polars types any sum as int | float | Decimal)
        return cast(int, skew.get_column(column).sum())

    if skew.height == 0 or total("compared") + total("not_found_offline") == 0:
        return CheckVerdict("ok", f"{window}: no answer with online feature rows to compare", {"window": window})
    shares = skew.with_columns(
        ((pl.col("mismatched") + pl.col("not_found_offline")) / (pl.col("compared") + pl.col("not_found_offline")))
        .fill_nan(0.0)
        .alias("share")
    ).sort("share", descending=True)
    top = shares.row(0, named=True)
    level = monitoring.skew_share.level(top["share"])
    bad = shares.filter(pl.col("share") > 0)
    if bad.height == 0:
        compared = int(cast("int | None", skew.get_column("compared").max()) or 0)
        return CheckVerdict(
            "ok", f"{window}: served features equal their offline rows ({compared} answers)", {"window": window}
        )
    text = ", ".join(
        f"{r['view']}.{r['feature']} {r['share']:.1%} ({r['mismatched']} differ, {r['not_found_offline']} not found, "
        f"max diff {r['max_abs_diff']:.3g})"
        for r in bad.head(10).iter_rows(named=True)
    )
    return CheckVerdict(
        level,
        f"{window}: served values differ from offline: {text}",
        {"window": window, "features": bad.get_column("feature").to_list()},
    )


def offline_stats(frames: OfflineFrames, monitoring: MonitoringSpec) -> pl.DataFrame:
    """Drift of the features as the offline path computes them from fresh raw data, table by table.

    Each entry is one table's feature columns (a feature view's rows, or the request fields of the raw source),
    over the reference period and over the window: like is compared with like, one row per event on both sides.
    """
    stats: list[FeatureStats] = []
    for table, frame in frames.reference.items():
        numeric = [c for c, t in frame.schema.items() if t.is_numeric()]
        categorical = [c for c in frame.columns if c not in numeric]
        stats += compare(
            frame,
            frames.current[table],
            numeric,
            categorical,
            monitoring.psi_bins,
            calibrate=True,
            p_values=monitoring.p_values,
            masks=frames.masks.get(table),
        )
    thresholds = [monitoring.thresholds] * len(stats)
    return stats_frame(stats).with_columns(
        *levels(stats, thresholds, monitoring.thresholds, too_few(stats, monitoring.min_rows)),
        *threshold_columns(stats, thresholds),
        pl.lit("offline").alias("source"),
    )


def offline_verdict(window: str, stats: pl.DataFrame, monitoring: MonitoringSpec) -> CheckVerdict:
    """Features computed offline from the window's raw data against the training period: drift before serving (a
    table with fewer than `monitoring.min_rows` rows in the window, such as a few segments' daily rows, not graded)."""
    rows = int(cast("int | None", stats.get_column("current_rows").max()) or 0) if stats.height else 0
    if rows < monitoring.min_rows:
        text = (
            f"{window}: {rows} offline feature rows, fewer than monitoring.min_rows ({monitoring.min_rows}): not graded"
        )
        return CheckVerdict("warn", text, {"window": window, "rows": rows})
    moved = stats.filter(pl.col("distribution_level").is_in(["warn", "error"])).sort(
        "psi", descending=True, nulls_last=True
    )
    few = stats.filter(pl.col("distribution_level") == NOT_GRADED)
    note = not_graded_note(dict(few.select("feature", "current_rows").iter_rows()), monitoring.min_rows)
    if moved.height == 0:
        return CheckVerdict(
            "ok", f"{window}: no feature computed offline drifted ({rows} rows){note}", {"window": window}
        )
    level: Level = "error" if "error" in moved.get_column("distribution_level").to_list() else "warn"
    text = ", ".join(
        f"{r['feature']} (KS {r['ks'] or 0:.3f}, PSI {r['psi'] or 0:.3f}) {r['distribution_level']}"
        for r in moved.head(10).iter_rows(named=True)
    )
    evidence: dict[str, object] = {"window": window, "features": moved.get_column("feature").to_list()}
    return CheckVerdict(level, f"{window}: {moved.height} features drifted offline: {text}{note}", evidence)


# The offline reference: a seeded sample of the training period's rows is enough for the statistics, bounded in memory.
REFERENCE_ROWS = 200_000


@dataclass(frozen=True)
class OfflineTable:
    """A table of the lake read for offline drift: its scan, its time column, and the columns compared (default:
    every column but keys, times and partitions)."""

    frame: pl.LazyFrame
    timestamp: str
    columns: list[str] = field(default_factory=list)
    daily_keys: list[str] | None = None  # reduce to each entity's last row of each day (a daily-synced store's rows)

    def rows(self) -> pl.LazyFrame:
        if self.daily_keys is None:
            return self.frame
        day = pl.col(PARTITION_COLUMN)
        return self.frame.sort(self.timestamp).group_by([*self.daily_keys, day], maintain_order=True).last()


@dataclass(frozen=True)
class OfflineFrames:
    """Per table, its columns over the training period (a seeded sample) and over the window, and per windowed
    feature the reference rows whose window had its whole history."""

    reference: dict[str, pl.DataFrame]
    current: dict[str, pl.DataFrame]
    masks: dict[str, dict[str, pl.Series]]


def offline_frames(
    tables: Mapping[str, OfflineTable],
    spec: PipelineSpec,
    days: Sequence[str],
    start: datetime,
    end: datetime,
    seed: int,
) -> OfflineFrames:
    """Per table, its columns over the training period and over the window's days (partitions)."""
    frames = OfflineFrames({}, {}, {})
    skip = (*spec.entity.keys, FEATURE_TIMESTAMP, KNOWN_AT, PARTITION_COLUMN)
    for name, table in tables.items():
        columns = table.columns or [c for c in table.frame.collect_schema() if c not in skip]
        past = table.rows().filter(pl.col(table.timestamp).is_between(start, end)).select(table.timestamp, *columns)
        sample = past.collect()
        sample = sample.sample(min(REFERENCE_ROWS, sample.height), seed=seed)
        frames.masks[name] = warm_masks(sample, table.timestamp, spec, columns)
        frames.reference[name] = sample.select(columns)
        frames.current[name] = table.rows().filter(pl.col(PARTITION_COLUMN).is_in(list(days))).select(columns).collect()
    return frames


def window_days(day: date, spec: PipelineSpec) -> list[str]:
    """The days a day's drift report grades: the day, and before it as many as the spec's window holds."""
    return [(day - timedelta(days=i)).isoformat() for i in reversed(range(spec.monitoring.window_days))]


def feature_windows(spec: PipelineSpec, columns: Sequence[str]) -> dict[str, timedelta]:
    """The history each of `columns` aggregates: its own window for an aggregation, the view's lookback for a custom
    function's features (the longest of them when several custom views could own a column); request fields none."""
    windows: dict[str, timedelta] = {}
    custom = [v.lookback_delta for v in spec.feature_views.values() if v.function]
    for view in spec.feature_views.values():
        windows |= view.feature_windows() or {}
    return {
        c: windows[c] if c in windows else max(custom)
        for c in columns
        if c in windows or (custom and c not in spec.request_features)
    }


def scored_reference(reference: pl.DataFrame, masks: Mapping[str, pl.Series]) -> pl.DataFrame:
    """The reference rows the model's outputs are compared on: those whose windows were all full, of the features
    that have any full window (a feature never full in training is left out of this too: no row would remain)."""
    usable = [mask for mask in masks.values() if mask.any()]
    if not usable:
        return reference
    return reference.filter(pl.all_horizontal(usable))


def warm_masks(
    frame: pl.DataFrame, time_column: str, spec: PipelineSpec, columns: Sequence[str]
) -> dict[str, pl.Series]:
    """Per windowed feature, the rows of `frame` (at `time_column`) whose window had its whole history: at least its
    length after the first day of data. Earlier rows saw windows still filling up: served traffic would look
    drifted against them though nothing changed."""
    start = datetime.combine(spec.start_date, time())
    times = frame.get_column(time_column)
    return {c: times >= start + window for c, window in feature_windows(spec, columns).items()}


def served_rows(views: Mapping[str, pl.LazyFrame], log: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Each view's offline rows on the days the logged answers' online rows came from (to compare them for skew)."""
    days: set[str] = set()
    for stamps in log.get_column("feature_timestamps").drop_nulls():
        days |= {stamp[:10] for stamp in json.loads(stamps).values() if stamp}
    if not days:
        return {}
    return {view: frame.filter(pl.col(PARTITION_COLUMN).is_in(sorted(days))).collect() for view, frame in views.items()}
