"""Point-in-time-correct training sets: each label joined to the feature values usable when it was predicted."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta

import polars as pl

from mlops_assets.features import FEATURE_TIMESTAMP, KNOWN_AT, collect
from mlops_assets.lake import PARTITION_COLUMN
from mlops_assets.spec import PipelineSpec, parse_duration

# Label days joined at a time: a chunk's labels and the feature rows of their prediction days are in memory at once.
CHUNK_DAYS = 10


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
        frame = known_rows(view.frame, as_of)
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
    spec: PipelineSpec,
    labels: pl.LazyFrame,
    features: Mapping[str, pl.LazyFrame],
    as_of: datetime | None = None,
    chunk_days: int = CHUNK_DAYS,
) -> tuple[pl.DataFrame, JoinStats]:
    """The whole training set in memory, ordered by prediction time (see `training_set_chunks`)."""
    chunks = list(training_set_chunks(spec, labels, features, as_of=as_of, chunk_days=chunk_days))
    frame = pl.concat([frame for frame, _ in chunks]).sort(spec.label.prediction_timestamp, *spec.entity.keys)
    return frame, sum_stats(stats for _, stats in chunks)


def training_set_chunks(
    spec: PipelineSpec,
    labels: pl.LazyFrame,
    features: Mapping[str, pl.LazyFrame],
    as_of: datetime | None = None,
    chunk_days: int = CHUNK_DAYS,
) -> Iterator[tuple[pl.DataFrame, JoinStats]]:
    """The spec's training set, `chunk_days` label days at a time: label events with their request fields, joined
    to every feature view; memory holds one chunk's labels and feature rows, and one row per entity and view.

    Label days are the labels' daily partitions (or, without any, the days of the label timestamp). A chunk's rows
    are exactly those the one-step `point_in_time_join` of all labels gives them: each entity's latest feature row
    from before a chunk's window is carried along, so a row past its TTL is still counted stale, not missing.
    Labels of predictions made before the pipeline's start date are left out (counted in the first chunk's stats):
    no feature history exists for them, so they could only teach the model what missing features look like.
    """
    label, keys = spec.label, spec.entity.keys
    predicted = pl.col(label.prediction_timestamp)
    known = labels if as_of is None else labels.filter(pl.col(label.timestamp) <= as_of)
    start = datetime.combine(spec.start_date, time())
    before_start = known.filter(predicted < start).select(pl.len()).collect().item()
    usable = known.filter(predicted >= start)
    partitioned = PARTITION_COLUMN in labels.collect_schema().names()
    day = pl.col(PARTITION_COLUMN) if partitioned else pl.col(label.timestamp).dt.date().cast(pl.String)
    days = (
        usable.group_by(day.alias("day"))
        .agg(predicted.min().alias("first"), predicted.max().alias("last"))
        .sort("day")
        .collect()
    )
    chunks = [days.slice(i, chunk_days) for i in range(0, days.height, chunk_days)] or [days]
    # A chunk reads feature rows from the earliest prediction of it or of any later chunk; each entity's latest
    # older row is carried from the chunks before (for the first, folded from the history a few days at a time).
    opens = list(itertools.accumulate(reversed([c["first"].min() for c in chunks]), min))[::-1]
    views = {name: known_rows(features[name], as_of) for name in spec.feature_views}
    columns = list(dict.fromkeys([*keys, label.prediction_timestamp, label.timestamp, *spec.request_features]))
    carried: dict[str, pl.DataFrame] = {}
    for i, chunk in enumerate(chunks):
        reopens = opens[i + 1] if i + 1 < len(chunks) else None
        inputs = {}
        for name, frame in views.items():
            if not chunk.height:  # no labels at all: the join only gives the training set's columns
                rows = frame.drop(PARTITION_COLUMN, strict=False).clear().collect()
            else:
                history = carried[name] if i else latest_before(frame, keys, opens[0], chunk_days)
                rows = pl.concat(
                    [history, rows_between(frame, opens[i], max(chunk["last"].max(), reopens or opens[i]))]
                )
            inputs[name] = ViewInput(rows.lazy(), parse_duration(spec.feature_views[name].ttl))
            if reopens is not None:
                carried[name] = latest(rows.filter(pl.col(FEATURE_TIMESTAMP) < reopens), keys)
        frame, stats = point_in_time_join(
            usable.filter(day.is_in(chunk["day"].to_list())).select(*columns, label.column),
            inputs,
            keys=keys,
            prediction_timestamp=label.prediction_timestamp,
            label_timestamp=label.timestamp,
            inclusive=label.feature_cutoff == "at",
        )
        yield frame, replace(stats, before_start=before_start if i == 0 else 0)


def known_rows(frame: pl.LazyFrame, as_of: datetime | None) -> pl.LazyFrame:
    """A view's rows known by `as_of` (their `known_at`, or their feature time when the view has none)."""
    if as_of is None:
        return frame
    usable = pl.col(KNOWN_AT) if KNOWN_AT in frame.collect_schema().names() else pl.col(FEATURE_TIMESTAMP)
    return frame.filter(usable <= as_of)


def rows_between(frame: pl.LazyFrame, first: datetime, last: datetime) -> pl.DataFrame:
    """A view's rows with feature times from `first` to `last`, read from those days' partitions only."""
    if PARTITION_COLUMN in frame.collect_schema().names():
        days = pl.col(PARTITION_COLUMN).is_between(pl.lit(first.date().isoformat()), pl.lit(last.date().isoformat()))
        frame = frame.filter(days).drop(PARTITION_COLUMN)
    return collect(frame.filter(pl.col(FEATURE_TIMESTAMP).is_between(first, last)))


def latest(rows: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Each entity's latest row."""
    return rows.sort(FEATURE_TIMESTAMP, maintain_order=True).unique(keys, keep="last", maintain_order=True)


def latest_before(frame: pl.LazyFrame, keys: list[str], moment: datetime, step_days: int) -> pl.DataFrame:
    """Each entity's latest row before `moment`, folded from the daily partitions `step_days` at a time: memory holds
    those days and one row per entity, however long the history."""
    before = pl.col(FEATURE_TIMESTAMP) < moment
    if PARTITION_COLUMN not in frame.collect_schema().names():
        return latest(collect(frame.filter(before)), keys)
    folded = frame.drop(PARTITION_COLUMN).clear().collect()
    first = frame.select(pl.col(PARTITION_COLUMN).min()).collect().item()
    day = date.fromisoformat(first) if first else moment.date() + timedelta(days=1)
    while day <= moment.date():
        until = day + timedelta(days=step_days - 1)
        rows = rows_between(frame, datetime.combine(day, time()), datetime.combine(until, time.max))
        folded = latest(pl.concat([folded, rows.filter(before)]), keys)
        day = until + timedelta(days=1)
    return folded


def sum_stats(parts: Iterable[JoinStats]) -> JoinStats:
    """The stats of a training set built in chunks: every count added up."""
    parts = list(parts)

    def added(field: str) -> dict[str, int]:
        total: Counter[str] = Counter()
        for part in parts:
            total.update(getattr(part, field))
        return {name: total[name] for name in getattr(parts[0], field)}

    return JoinStats(
        rows=sum(p.rows for p in parts),
        missing=added("missing"),
        stale=added("stale"),
        nulls=added("nulls"),
        before_start=sum(p.before_start for p in parts),
    )
