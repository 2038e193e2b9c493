"""Point-in-time-correct training sets: each label joined to the feature values usable when it was predicted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta

import polars as pl

from mlops_assets.features import FEATURE_TIMESTAMP, KNOWN_AT, collect
from mlops_assets.spec import PipelineSpec, parse_duration


@dataclass(frozen=True)
class ViewInput:
    """One feature view's rows (keys, feature_timestamp, [known_at], features) and how long they stay valid."""

    frame: pl.LazyFrame
    ttl: timedelta


@dataclass(frozen=True)
class JoinStats:
    rows: int
    missing: dict[str, int] = field(default_factory=dict)
    stale: dict[str, int] = field(default_factory=dict)
    nulls: dict[str, int] = field(default_factory=dict)
    before_start: int = 0


def point_in_time_join(
    labels: pl.LazyFrame,
    views: Mapping[str, ViewInput],
    *,
    keys: list[str],
    prediction_timestamp: str,
    label_timestamp: str,
    inclusive: bool = True,
    as_of: datetime | None = None,
) -> tuple[pl.DataFrame, JoinStats]:
    """For each label, the latest row of each view at (or, not `inclusive`, before) its prediction time.

    A row older than the view's TTL is nulled and counted as stale; no row at all counts as missing. With
    `as_of`, only labels known by then and feature rows known by then (`known_at`) are used, so a backfill
    that arrived later cannot leak into a training set rebuilt for an earlier date.
    """
    if as_of is not None:
        labels = labels.filter(pl.col(label_timestamp) <= as_of)
    joined = labels.sort(prediction_timestamp)
    checks: list[tuple[str, pl.Expr, pl.Expr, list[str]]] = []
    for name, view in views.items():
        frame = view.frame
        if as_of is not None:
            usable = pl.col(KNOWN_AT) if KNOWN_AT in frame.collect_schema().names() else pl.col(FEATURE_TIMESTAMP)
            frame = frame.filter(usable <= as_of)
        features = [c for c in frame.collect_schema().names() if c not in (*keys, FEATURE_TIMESTAMP, KNOWN_AT)]
        stamp = f"__{name}_ts"
        right = frame.select(*keys, pl.col(FEATURE_TIMESTAMP).alias(stamp), *features).sort(stamp)
        joined = joined.join_asof(
            right,
            left_on=prediction_timestamp,
            right_on=stamp,
            by=keys,
            strategy="backward",
            allow_exact_matches=inclusive,
            check_sortedness=False,
        )
        missing = pl.col(stamp).is_null()
        stale = ~missing & (pl.col(prediction_timestamp) - pl.col(stamp) > view.ttl)
        checks.append((name, missing, stale, features))
    flags = [
        expr.alias(f"__{kind}_{name}")
        for name, missing, stale, _ in checks
        for kind, expr in (("missing", missing), ("stale", stale))
    ]
    joined = joined.with_columns(flags).with_columns(
        pl.when(~pl.col(f"__stale_{name}")).then(pl.col(f)).alias(f) for name, *_, features in checks for f in features
    )
    result = collect(joined)
    stats = result.select(
        pl.len().alias("rows"),
        *[pl.col(c).sum() for c in result.columns if c.startswith(("__missing_", "__stale_"))],
    ).row(0, named=True)
    out = result.select(pl.exclude(r"^__.*$")).sort(prediction_timestamp, *keys, maintain_order=True)
    feature_columns = [f for *_, features in checks for f in features]
    return out, JoinStats(
        rows=stats["rows"],
        missing={name: stats[f"__missing_{name}"] for name, *_ in checks},
        stale={name: stats[f"__stale_{name}"] for name, *_ in checks},
        nulls=out.select(pl.col(feature_columns).null_count()).row(0, named=True),
    )


def training_set(
    spec: PipelineSpec, labels: pl.LazyFrame, features: Mapping[str, pl.LazyFrame], as_of: datetime | None = None
) -> tuple[pl.DataFrame, JoinStats]:
    """The spec's training set: label events with their request fields, joined to every feature view.

    Labels of predictions made before the pipeline's start date are left out (and counted): no feature
    history exists for them, so they could only teach the model what missing features look like.
    """
    label = spec.label
    start = datetime.combine(spec.start_date, time())
    known = labels if as_of is None else labels.filter(pl.col(label.timestamp) <= as_of)
    before_start = known.filter(pl.col(label.prediction_timestamp) < start).select(pl.len()).collect().item()
    columns = [*spec.entity.keys, label.prediction_timestamp, label.timestamp, *spec.request_features, label.column]
    views = {name: ViewInput(features[name], parse_duration(view.ttl)) for name, view in spec.feature_views.items()}
    frame, stats = point_in_time_join(
        labels.filter(pl.col(label.prediction_timestamp) >= start).select(list(dict.fromkeys(columns))),
        views,
        keys=spec.entity.keys,
        prediction_timestamp=label.prediction_timestamp,
        label_timestamp=label.timestamp,
        inclusive=label.feature_cutoff == "at",
        as_of=as_of,
    )
    return frame, replace(stats, before_start=before_start)
