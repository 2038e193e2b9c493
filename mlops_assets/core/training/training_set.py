"""Point-in-time-correct training sets: each label joined to the feature values usable when it was predicted."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

import polars as pl

from mlops_assets.core.features.views import FEATURE_TIMESTAMP, KNOWN_AT, collect, resolve_duplicates, to_utc
from mlops_assets.core.lake import PARTITION_COLUMN
from mlops_assets.spec import PipelineSpec, parse_duration

# Label days joined at a time: a chunk's labels and the feature rows of their prediction days are in memory at once.
CHUNK_DAYS = 10


# The label's time the views are joined at when it is not its prediction time (dropped with the join's own columns).
JOIN_AT = "__join_at"


@dataclass(frozen=True)
class ViewInput:
    """One feature view's rows (keys, feature_timestamp, [known_at], features) and how long they stay valid."""

    frame: pl.LazyFrame
    ttl: timedelta


@dataclass(frozen=True)
class JoinStats:
    """Counts of a join, per view: labels with no feature row, with a row past the TTL, feature rows that shared
    their keys and feature_timestamp with another (all but one dropped); nulls per feature."""

    rows: int
    missing: dict[str, int] = field(default_factory=dict)
    stale: dict[str, int] = field(default_factory=dict)
    nulls: dict[str, int] = field(default_factory=dict)
    before_start: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)


def point_in_time_join(
    labels: pl.LazyFrame,
    views: Mapping[str, ViewInput],
    *,
    keys: list[str],
    prediction_timestamp: str,
    label_timestamp: str,
    inclusive: bool = True,
    as_of: datetime | None = None,
    join_at: str | None = None,
) -> tuple[pl.DataFrame, JoinStats]:
    """For each label, the latest row of each view at (or, not `inclusive`, before) its prediction time (or the time
    in the label's `join_at` column: the start of its day, for rows an online store synced daily holds then).

    A row older than the view's TTL is nulled and counted as stale; no row at all counts as missing. With
    `as_of`, only labels known by then and feature rows known by then (`known_at`) are used, so a backfill
    that arrived later cannot leak into a training set rebuilt for an earlier date. Rows come ordered by
    (prediction time, keys), labels of equal ones in their input order.
    """
    if as_of is not None:
        labels = labels.filter(pl.col(label_timestamp) <= as_of)
    label_schema = labels.collect_schema()
    # Which frame each column of the join comes from: a feature may take none of these names.
    owners = dict.fromkeys(label_schema.names(), "a column of the labels")
    selected: dict[str, pl.LazyFrame] = {}
    features: dict[str, list[str]] = {}
    for name, view in views.items():
        frame = known_rows(view.frame, as_of)
        schema = frame.collect_schema()
        features[name] = [c for c in schema.names() if c not in (*keys, FEATURE_TIMESTAMP, KNOWN_AT, PARTITION_COLUMN)]
        problems = join_problems(name, schema, label_schema, keys, prediction_timestamp)
        problems += [
            f"feature view {name!r}: feature {f!r} is already {owners[f]} of the training set; rename the feature"
            for f in features[name]
            if f in owners
        ]
        problems += [
            f"feature view {name!r}: feature {f!r} starts with '__', kept for the join's own columns; rename it"
            for f in features[name]
            if f.startswith("__")
        ]
        if problems:
            raise ValueError("; ".join(problems))
        owners |= dict.fromkeys(features[name], f"a feature of view {name!r}")
        known = [KNOWN_AT] if KNOWN_AT in schema else []
        selected[name] = frame.select(*keys, FEATURE_TIMESTAMP, *known, *features[name])
    on = join_at or prediction_timestamp
    # The labels' order and each view's rows and order are independent: prepared at once, each on a core when free.
    with ThreadPoolExecutor(max_workers=1 + len(selected)) as pool:
        ordering = pool.submit(label_needles, labels, prediction_timestamp, on, keys)
        sorting = {name: pool.submit(view_haystack, frame, keys) for name, frame in selected.items()}
        ordered, needles = ordering.result()
        prepared = {name: job.result() for name, job in sorting.items()}
    frames = {name: rows for name, (rows, _, _) in prepared.items()}
    duplicates = {name: dropped for name, (_, dropped, _) in prepared.items()}
    found = {name: latest_rows(needles, haystack, inclusive) for name, (_, _, haystack) in prepared.items()}
    if any(other_keys(ordered, frames[name], keys, rows) for name, rows in found.items()):
        found = exact_latest_rows(ordered, frames, keys, on, inclusive)
    predicted = ordered.get_column(prediction_timestamp)
    columns, missing, stale = [], {}, {}
    for name, rows in frames.items():
        age = predicted - rows.get_column(FEATURE_TIMESTAMP).gather(found[name])
        missing[name], stale[name] = found[name].null_count(), int((age > views[name].ttl).sum())
        # Gathered by an index without nulls (unless there is no row to point at), then nulled: a gather by a
        # nullable index takes half as long again.
        index = found[name].fill_null(0) if rows.height else found[name]
        fresh = (age <= views[name].ttl).fill_null(False)
        columns.append(rows.select(pl.when(fresh).then(pl.col(features[name]).gather(index))))
    out = pl.concat([ordered.select(pl.exclude(r"^__.*$")), *columns], how="horizontal")
    return out, JoinStats(
        rows=out.height,
        missing=missing,
        stale=stale,
        nulls={f: out.get_column(f).null_count() for names in features.values() for f in names},
        duplicates=duplicates,
    )


def in_time_order(frame: pl.DataFrame, time: str, keys: list[str]) -> pl.DataFrame:
    """The rows ordered by (time, keys), rows alike in their order: sorted by time, then by keys where times tie.

    Sorted by all at once, polars compares the keys throughout: several times slower, ten times with many equal
    times. Sorted by time first (eagerly, so that it knows the times sorted), it orders the keys of a time alone.
    """
    frame = frame.sort(time, maintain_order=True)
    if frame.get_column(time).n_unique() < frame.height:
        frame = frame.sort(time, *keys, maintain_order=True)
    return frame


# A row's place in a join: its entity's group in the high 64 bits of an Int128, its time (as an unsigned number) in
# the low ones. Sorted, each entity's rows are together in time order, whatever the width of the times.
_HIGH = 2**64
_LOW = 2**63

# The labels' places sorted (one column, "place") and where each label is among them.
Needles = tuple[pl.DataFrame, pl.Series]


def label_needles(labels: pl.LazyFrame, time: str, on: str, keys: list[str]) -> tuple[pl.DataFrame, Needles]:
    """The labels in time order (see `in_time_order`) and their places at their time `on`, hashed."""
    ordered = in_time_order(collect(labels), time, keys)
    (place,) = entity_places([ordered.select(*keys, pl.col(on).alias(FEATURE_TIMESTAMP))], keys, exact=False)
    return ordered, needles_of(place)


def needles_of(place: pl.Series) -> Needles:
    order = place.arg_sort()
    # Where each label is among the needles: the inverse permutation, scattered (cheaper than sorting again).
    back = pl.zeros(len(order), pl.UInt32, eager=True).scatter(
        order, pl.arange(len(order), dtype=pl.UInt32, eager=True)
    )
    return pl.DataFrame({"place": place.gather(order)}), back


def view_haystack(frame: pl.LazyFrame, keys: list[str]) -> tuple[pl.DataFrame, int, pl.DataFrame]:
    """A view's rows (duplicates resolved, see `resolved`), how many were dropped, and their places sorted, hashed."""
    rows, duplicates = resolved(collect(frame), keys)
    return rows, duplicates, haystack_of(entity_places([rows], keys, exact=False)[0])


def haystack_of(place: pl.Series) -> pl.DataFrame:
    """Places sorted, with the index of each one's row ("row") and the place again ("__found")."""
    by_place = place.arg_sort()
    return pl.DataFrame({"place": place.gather(by_place), "row": by_place}).with_columns(__found=pl.col("place"))


def latest_rows(needles: Needles, haystack: pl.DataFrame, inclusive: bool) -> pl.Series:
    """For each label, the index of its entity's latest row at (or, not `inclusive`, before) its time; null for none,
    and for labels with a null key or time, as polars' `join_asof` does."""
    sorted_needles, back = needles
    # Both sides sorted by place: join_asof without `by` is one merge (a search per label is several times slower).
    latest = sorted_needles.join_asof(
        haystack, on="place", strategy="backward", allow_exact_matches=inclusive, check_sortedness=False
    )
    # The place just before a label's is of its entity only when in its group (an earlier group's otherwise).
    same = pl.col("__found") // _HIGH == pl.col("place") // _HIGH
    return latest.select(pl.when(same).then("row")).to_series().gather(back)


def other_keys(labels: pl.DataFrame, rows: pl.DataFrame, keys: list[str], found: pl.Series) -> bool:
    """Whether a label's row found is of other keys than its own: entities grouped by hash, two hashed alike."""
    theirs = rows.select(pl.col(keys).gather(found)).with_columns(found.alias("__row"))
    alike = pl.all_horizontal(pl.col(k).eq_missing(labels.get_column(k)) for k in keys)
    return bool(theirs.select((pl.col("__row").is_not_null() & ~alike).any()).item())


def exact_latest_rows(
    labels: pl.DataFrame, views: Mapping[str, pl.DataFrame], keys: list[str], on: str, inclusive: bool
) -> dict[str, pl.Series]:
    """`latest_rows` of every view, entities grouped by their keys themselves: slower, for when two hash alike."""
    frames = [labels.select(*keys, pl.col(on).alias(FEATURE_TIMESTAMP)), *views.values()]
    places = entity_places(frames, keys, exact=True)
    needles = needles_of(places[0])
    return {name: latest_rows(needles, haystack_of(p), inclusive) for name, p in zip(views, places[1:], strict=True)}


def entity_places(frames: list[pl.DataFrame], keys: list[str], exact: bool) -> list[pl.Series]:
    """Each row's place (see `_HIGH`) by its keys and `feature_timestamp`: the entity a hash of its keys or
    (`exact`) their rank among all the frames' keys; null when a key or the time is null."""
    group = entity_hash(keys)
    if exact:
        ranks = pl.concat([f.select(keys) for f in frames]).select(pl.struct(keys).rank("dense")).to_series()
        offsets = itertools.accumulate((f.height for f in frames), initial=0)
        frames = [
            f.with_columns(ranks.slice(o, f.height).alias("__group")) for o, f in zip(offsets, frames, strict=False)
        ]
        group = pl.col("__group")
    place = group.cast(pl.Int128) * _HIGH + pl.col(FEATURE_TIMESTAMP).to_physical().cast(pl.Int128) + _LOW
    known = pl.all_horizontal(pl.col(keys).is_not_null())
    return [f.select(pl.when(known).then(place)).to_series() for f in frames]


def entity_hash(keys: list[str]) -> pl.Expr:
    """A 63-bit hash of a row's keys: its entity's group in a place, where it leaves room for the time."""
    return pl.struct(keys).hash(seed=0) // 2


def join_problems(
    view_name: str,
    view: pl.Schema,
    labels: pl.Schema,
    keys: list[str],
    prediction_timestamp: str,
    labels_name: str = "the labels",
) -> list[str]:
    """Why a view's rows cannot be joined to the labels: a key or time column missing or of another type, named
    with both columns and both types (polars would only fail, or panic, on them)."""
    where = f"feature view {view_name!r}"
    problems = [f"{where}: has no entity key column {k!r} (its columns: {view.names()})" for k in keys if k not in view]
    problems += [f"{labels_name} have no entity key column {k!r}" for k in keys if k not in labels]
    problems += [
        f"{where}: entity key {k!r} is {view[k]} in the view but {labels[k]} in {labels_name}; declare it with one "
        "dtype in every source"
        for k in keys
        if k in view and k in labels and view[k] != labels[k]
    ]
    stamp, predicted = view.get(FEATURE_TIMESTAMP), labels.get(prediction_timestamp)
    if stamp is None:
        problems.append(f"{where}: has no {FEATURE_TIMESTAMP!r} column (its columns: {view.names()})")
    elif predicted is None:
        problems.append(f"{labels_name} have no prediction time column {prediction_timestamp!r}")
    elif stamp != predicted:
        problems.append(
            f"{where}: {FEATURE_TIMESTAMP!r} is {stamp} but {prediction_timestamp!r} of {labels_name} is {predicted}; "
            "both must be naive UTC datetimes of one unit"
        )
    return problems


def resolved(rows: pl.DataFrame, keys: list[str]) -> tuple[pl.DataFrame, int]:
    """A view's rows with one per (keys, feature_timestamp) (see `resolve_duplicates`), and how many were dropped."""
    subset = [*keys, FEATURE_TIMESTAMP]
    # As many distinct 64-bit hashes of (keys, time) as rows: no duplicates. A few times cheaper than counting the
    # distinct values themselves, which is left for when there may be some (or for a collision).
    if rows.height < 2 or rows.select(pl.struct(subset).hash(seed=0).n_unique()).item() == rows.height:
        return rows, 0
    duplicates = rows.height - rows.n_unique(subset)
    if not duplicates:
        return rows, 0
    return collect(resolve_duplicates(rows.lazy(), keys)), duplicates


def training_set(
    spec: PipelineSpec,
    labels: pl.LazyFrame,
    features: Mapping[str, pl.LazyFrame],
    as_of: datetime | None = None,
    chunk_days: int = CHUNK_DAYS,
) -> tuple[pl.DataFrame, JoinStats]:
    """The whole training set in memory, ordered by prediction time (see `training_set_chunks`)."""
    chunks = list(training_set_chunks(spec, labels, features, as_of=as_of, chunk_days=chunk_days))
    frame = in_time_order(pl.concat([frame for frame, _ in chunks]), spec.label.prediction_timestamp, spec.entity.keys)
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

    Views that cannot be joined fail first, with every reason (`training_set_problems`); time-zone-aware inputs
    are read as UTC. Duplicate feature rows are resolved as the feature step does, and counted once each.
    """
    label, keys = spec.label, spec.entity.keys
    as_of = naive_utc(as_of)
    labels = to_utc(labels)[0]
    features = {name: to_utc(features[name])[0] for name in spec.feature_views}
    problems = training_set_problems(spec, labels, features)
    if problems:
        raise ValueError("; ".join(problems))
    predicted = pl.col(label.prediction_timestamp)
    known = labels if as_of is None else labels.filter(pl.col(label.timestamp) <= as_of)
    start = datetime.combine(spec.start_date, time())
    before_start = known.filter(predicted < start).select(pl.len()).collect().item()
    usable = known.filter(predicted >= start)
    join_at = None
    if label.feature_cutoff == "previous_day":
        # The rows a daily-synced online store holds during a day: those of the days before it. Joined as of the
        # start of the prediction's day, strictly before; stale by the prediction's own time, as serving judges.
        join_at = JOIN_AT
        usable = usable.with_columns(predicted.dt.truncate("1d").alias(JOIN_AT))
        predicted = pl.col(JOIN_AT)
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
    # (polars types a min as any Python literal: here a prediction time, or None in the one chunk of no labels at
    # all, whose opening is never read.)
    firsts = [cast(datetime, c["first"].min()) for c in chunks]
    opens = list(itertools.accumulate(reversed(firsts), min))[::-1]
    views = {name: known_rows(features[name], as_of) for name in spec.feature_views}
    # Protected attributes that are no model input ride along for the holdout's fairness groups (see model_inputs).
    evaluated = spec.evaluation_columns()
    columns = list(
        dict.fromkeys([*keys, label.prediction_timestamp, label.timestamp, *spec.request_features, *evaluated])
    )
    columns += [join_at] if join_at else []
    carried: dict[str, pl.DataFrame] = {}
    for i, chunk in enumerate(chunks):
        reopens = opens[i + 1] if i + 1 < len(chunks) else None
        inputs, duplicates = {}, {}
        for name, frame in views.items():
            if not chunk.height:  # no labels at all: the join only gives the training set's columns
                rows, duplicates[name] = frame.drop(PARTITION_COLUMN, strict=False).clear().collect(), 0
            else:
                first_history = latest_before(frame, keys, opens[0], chunk_days) if not i else None
                history, duplicates[name] = first_history or (carried[name], 0)
                read = rows_between(frame, opens[i], max(cast(datetime, chunk["last"].max()), reopens or opens[i]))
                recent, dropped = resolved(read, keys)
                if dropped and reopens is not None:
                    # Chunks may read the same recent rows: each counts the duplicates of its own stretch of time
                    # (the first also those of the history before it), so that every row read is counted once.
                    dropped = resolved(read.filter(pl.col(FEATURE_TIMESTAMP) < reopens), keys)[1]
                duplicates[name] += dropped
                # The history is before the recent rows, one per entity: the two have no duplicates between them.
                rows = pl.concat([history, recent])
            inputs[name] = ViewInput(rows.lazy(), parse_duration(spec.feature_views[name].ttl))
            if reopens is not None:
                carried[name] = latest(rows.filter(pl.col(FEATURE_TIMESTAMP) < reopens), keys)
        joined, stats = point_in_time_join(
            usable.filter(day.is_in(chunk["day"].to_list())).select(*columns, label.column),
            inputs,
            keys=keys,
            prediction_timestamp=label.prediction_timestamp,
            label_timestamp=label.timestamp,
            inclusive=label.feature_cutoff == "at",
            join_at=join_at,
        )
        yield joined, replace(stats, before_start=before_start if i == 0 else 0, duplicates=duplicates)


def training_set_problems(spec: PipelineSpec, labels: pl.LazyFrame, features: Mapping[str, pl.LazyFrame]) -> list[str]:
    """Why the feature tables, as they are, cannot be joined to the labels: a custom view's feature named like
    another column (its names are known only from its output), or keys and times of other types."""
    label = spec.label
    columns = [*spec.entity.keys, label.prediction_timestamp, label.timestamp, *spec.request_features, label.column]
    columns += spec.evaluation_columns()
    label_schema = labels.select(list(dict.fromkeys(columns))).collect_schema()
    problems = []
    for name, view in spec.feature_views.items():
        schema = features[name].collect_schema()
        if view.function:
            internal = (*spec.entity.keys, FEATURE_TIMESTAMP, KNOWN_AT, PARTITION_COLUMN)
            problems += spec.feature_clash_problems(name, [c for c in schema.names() if c not in internal])
        labels_name = f"the labels (source {label.source!r})"
        problems += join_problems(name, schema, label_schema, spec.entity.keys, label.prediction_timestamp, labels_name)
    return list(dict.fromkeys(problems))


def naive_utc(moment: datetime | None) -> datetime | None:
    """A moment as the lake stores times: naive UTC (an aware one converted, a naive one taken as UTC)."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


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
    """Each entity's latest row (of several at that time, the one `resolve_duplicates` keeps)."""
    rows = resolved(rows, keys)[0]
    return rows.sort(FEATURE_TIMESTAMP, maintain_order=True).unique(keys, keep="last", maintain_order=True)


def latest_before(frame: pl.LazyFrame, keys: list[str], moment: datetime, step_days: int) -> tuple[pl.DataFrame, int]:
    """Each entity's latest row before `moment`, folded from the daily partitions `step_days` at a time: memory holds
    those days and one row per entity, however long the history. Also how many duplicate rows the history had."""
    before = pl.col(FEATURE_TIMESTAMP) < moment
    if PARTITION_COLUMN not in frame.collect_schema().names():
        rows, duplicates = resolved(collect(frame.filter(before)), keys)
        return latest(rows, keys), duplicates
    folded, duplicates = frame.drop(PARTITION_COLUMN).clear().collect(), 0
    first = frame.select(pl.col(PARTITION_COLUMN).min()).collect().item()
    day = date.fromisoformat(first) if first else moment.date() + timedelta(days=1)
    while day <= moment.date():
        until = day + timedelta(days=step_days - 1)
        # Twins share their feature time, so their day: each fold sees all of a row's twins.
        rows, dropped = resolved(
            rows_between(frame, datetime.combine(day, time()), datetime.combine(until, time.max)).filter(before), keys
        )
        folded, duplicates = latest(pl.concat([folded, rows]), keys), duplicates + dropped
        day = until + timedelta(days=1)
    return folded, duplicates


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
        duplicates=added("duplicates"),
    )


# --- What the training set's checks measure -----------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A check's outcome in plain values: passed or not, why in words, and the numbers measured (tables as lists
    of rows) for its metadata."""

    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def feature_coverage(
    spec: PipelineSpec,
    stats: JoinStats,
    training: pl.LazyFrame,
    features: Mapping[str, pl.LazyFrame],
    as_of: datetime | None = None,
) -> Verdict:
    """Each view's share of training rows without its features (no row yet, or one past the TTL) against its
    `max_unusable_share`; for a view above it, the cause measured (see `unusable_causes`)."""
    rows, failing = [], []
    for name, view in spec.feature_views.items():
        unusable = stats.missing.get(name, 0) + stats.stale.get(name, 0)
        share = unusable / stats.rows if stats.rows else 0.0
        row: dict[str, Any] = {
            "feature_view": name,
            "no_row": stats.missing.get(name, 0),
            "stale": stats.stale.get(name, 0),
            "unusable_share": round(share, 4),
            "max_unusable_share": view.max_unusable_share,
            "ttl": view.ttl,
        }
        if share > view.max_unusable_share:
            frame = known_rows(to_utc(features[name])[0], naive_utc(as_of))
            causes, measured = unusable_causes(spec, name, stats, training, frame)
            row |= measured
            failing.append(
                f"feature view {name!r}: {share:.1%} of {stats.rows} rows have no usable features "
                f"(max_unusable_share {view.max_unusable_share:.0%}): {causes}"
            )
        rows.append(row)
    worst = max((r["unusable_share"] for r in rows), default=0.0)
    metadata = {
        "rows": stats.rows,
        "worst_unusable_share": worst,
        **{f"unusable_share/{r['feature_view']}": r["unusable_share"] for r in rows},
        "feature_views": rows,
    }
    if failing:
        return Verdict(False, "; ".join(failing), metadata)
    if not stats.rows:
        return Verdict(True, "the training set has no rows: nothing to measure", metadata)
    return Verdict(True, f"every view has usable features in enough rows (worst unusable share {worst:.1%})", metadata)


def unusable_causes(
    spec: PipelineSpec, view_name: str, stats: JoinStats, training: pl.LazyFrame, view: pl.LazyFrame
) -> tuple[str, dict[str, Any]]:
    """Why a view's features are unusable in so many rows, in words and numbers: rows past the TTL against the
    gaps between an entity's consecutive feature rows (and the TTL that would cover 90% of them), rows without
    any feature row split into entities the view never saw and predictions before an entity's first row."""
    keys, spec_view = spec.entity.keys, spec.feature_views[view_name]
    where = f"feature_views.{view_name}"
    words: list[str] = []
    measured: dict[str, Any] = {}
    stale, missing = stats.stale.get(view_name, 0), stats.missing.get(view_name, 0)
    if stale:
        median, p90 = entity_gaps(view, keys)
        if median is not None and p90 is not None:
            covering = duration_text(p90)
            measured |= {"median_gap": duration_text(median), "ttl_covering_90pct_of_gaps": covering}
            words.append(
                f"{stale} rows are past the TTL of {spec_view.ttl}, while the median gap between an entity's "
                f"consecutive feature rows is {duration_text(median)}; a TTL of {covering} would cover 90% of the "
                f"gaps ({where}.ttl)"
            )
        else:
            words.append(f"{stale} rows are past the TTL of {spec_view.ttl} (no entity has two feature rows)")
    if missing:
        seen = view.select(keys).unique()
        never = training.select(keys).join(seen, on=keys, how="anti").select(pl.len()).collect().item()
        measured |= {"entity_never_in_view": never, "before_first_row": missing - never}
        words.append(
            f"{missing} rows have no feature row at all: {never} are of entities the view never had a row for "
            f"(is {where}.source the source of these entities?), {missing - never} were predicted before the "
            "entity's first row (materialize earlier days of the view)"
        )
    return "; ".join(words), measured


def entity_gaps(view: pl.LazyFrame, keys: list[str]) -> tuple[timedelta | None, timedelta | None]:
    """The median and 90th percentile (the smallest gap at least 90% of gaps do not exceed) of the time between an
    entity's consecutive feature rows; None without any entity having two rows."""
    gaps = (
        view.select(*keys, FEATURE_TIMESTAMP)
        .sort([*keys, FEATURE_TIMESTAMP])
        .select(pl.col(FEATURE_TIMESTAMP).diff().over(keys).dt.total_microseconds().alias("gap"))
        .drop_nulls()
        .select(
            pl.col("gap").median().alias("median"),
            pl.col("gap").quantile(0.9, interpolation="higher").alias("p90"),
        )
        .pipe(collect)
    )
    median, p90 = gaps.row(0)
    if median is None or p90 is None:
        return None, None
    return timedelta(microseconds=median), timedelta(microseconds=p90)


def duration_text(delta: timedelta) -> str:
    """A duration as the spec writes one, rounded up: minutes up to 2 hours, hours up to 2 days, then days."""
    minutes = max(1, math.ceil(delta.total_seconds() / 60))
    if minutes <= 120:
        return f"{minutes}m"
    hours = math.ceil(minutes / 60)
    return f"{hours}h" if hours <= 48 else f"{math.ceil(hours / 24)}d"


def model_inputs(spec: PipelineSpec, training: pl.LazyFrame) -> list[str]:
    """The training set's columns a model learns from: the declared ones, or every feature and request feature."""
    label = spec.label
    schema = training.collect_schema()
    if spec.model is not None and spec.model.features:
        return [c for c in spec.model.features if c in schema]
    not_inputs = {*spec.entity.keys, label.prediction_timestamp, label.timestamp, label.column}
    not_inputs |= set(spec.evaluation_columns())
    return [c for c in schema.names() if c not in not_inputs]


def constant_features(spec: PipelineSpec, training: pl.LazyFrame) -> Verdict:
    """Model inputs with one value (or none) across the whole training set: nothing to learn from them."""
    schema = training.collect_schema()
    inputs = [c for c in model_inputs(spec, training) if not schema[c].is_nested()]
    if not inputs:
        return Verdict(True, "no model inputs", {"constant_features": 0, "inputs": 0})
    profile = training.select(
        pl.len().alias("__rows"),
        *[e for c in inputs for e in (pl.col(c).min().alias(f"min:{c}"), pl.col(c).max().alias(f"max:{c}"))],
        *[pl.col(c).null_count().alias(f"nulls:{c}") for c in inputs],
    ).collect()
    facts = profile.row(0, named=True)
    rows = facts["__rows"]
    constant = [
        {
            "feature": c,
            "value": "all null" if facts[f"nulls:{c}"] == rows else str(facts[f"min:{c}"]),
            "nulls": facts[f"nulls:{c}"],
        }
        for c in inputs
        if facts[f"min:{c}"] == facts[f"max:{c}"]
    ]
    metadata = {"rows": rows, "inputs": len(inputs), "constant_features": len(constant), "constant": constant}
    if not rows:
        return Verdict(True, "the training set has no rows: nothing to measure", metadata)
    if constant:
        listed = ", ".join(f"{r['feature']} ({r['value']})" for r in constant)
        words = f"{len(constant)} of {len(inputs)} inputs have one value in all {rows} rows: {listed}"
        return Verdict(False, words, metadata)
    return Verdict(True, f"each of the {len(inputs)} inputs has more than one value", metadata)


def enough_to_learn(spec: PipelineSpec, training: pl.LazyFrame) -> Verdict:
    """Whether the training set, split as the candidate will be (the last `model.holdout` of predictions held
    out), leaves enough to learn from: a training part longer than the holdout, at least `model.min_class_rows`
    examples of every class (binary, multiclass) or `model.min_distinct_targets` label values (regression)."""
    model, label = spec.model, spec.label
    assert model is not None, "checked only for pipelines with a model"
    predicted, target = pl.col(label.prediction_timestamp), pl.col(label.column)
    holdout = parse_duration(model.holdout)
    first, last, rows = (
        training.select(predicted.min().alias("first"), predicted.max().alias("last"), pl.len()).collect().row(0)
    )
    metadata: dict[str, Any] = {"rows": rows, "holdout": model.holdout}
    if not rows:
        return Verdict(False, "the training set is empty: materialize more days of data and labels", metadata)
    cutoff = last - holdout
    span = cutoff - first
    train = training.filter(predicted <= cutoff)
    train_rows = train.select(pl.len()).collect().item()
    metadata |= {
        "train_rows": train_rows,
        "holdout_rows": rows - train_rows,
        "first_prediction": str(first),
        "holdout_cutoff": str(cutoff),
        "last_prediction": str(last),
        "training_span": _human(span) if span > timedelta(0) else "none",
    }
    problems = []
    if span <= holdout:
        whole = last - first
        problems.append(
            f"model.holdout ({model.holdout}) is as long as or longer than the training part "
            f"({_human(span) if span > timedelta(0) else 'nothing'} of the {_human(whole)} the predictions span): "
            f"shorten model.holdout to less than half of {_human(whole)}, or materialize more days of labels"
        )
    if model.task == "regression":
        distinct = train.select(target.drop_nulls().n_unique()).collect().item()
        metadata |= {"distinct_targets": distinct, "min_distinct_targets": model.min_distinct_targets}
        if distinct < model.min_distinct_targets:
            problems.append(
                f"{distinct} distinct values of {label.column!r} in the {train_rows} training rows, fewer than "
                f"model.min_distinct_targets ({model.min_distinct_targets}): with so few values, is model.task "
                "multiclass? Otherwise materialize more days of labels, shorten model.holdout, or lower "
                "model.min_distinct_targets"
            )
    else:
        counts = class_counts(training, train, label.column, model.task)
        metadata |= {"class_rows": [{"class": c, "training_rows": n} for c, n in counts.items()]}
        metadata["min_class_rows"] = model.min_class_rows
        few = {c: n for c, n in counts.items() if n < model.min_class_rows}
        if few:
            listed = ", ".join(f"{c!r} has {n}" for c, n in few.items())
            problems.append(
                f"too few training examples of a class of {label.column!r}: {listed}, fewer than "
                f"model.min_class_rows ({model.min_class_rows}): materialize more days of labels, shorten "
                "model.holdout, or lower model.min_class_rows"
            )
    if problems:
        return Verdict(False, "; ".join(problems), metadata)
    return Verdict(True, f"{train_rows} training rows over {_human(span)}, holdout {model.holdout}", metadata)


def class_counts(training: pl.LazyFrame, train: pl.LazyFrame, column: str, task: str) -> dict[str, int]:
    """Training examples per class, by class name: binary's 0 and 1 (whatever the label's type), multiclass's
    every class of the whole set (one seen only in the holdout has 0)."""
    dtype = training.collect_schema()[column]
    value = pl.col(column)
    if task == "binary" and (dtype.is_numeric() or dtype == pl.Boolean):
        value = value.cast(pl.Int64, strict=False)
    name = value.cast(pl.String).alias("class")
    if task == "binary":
        classes = ["0", "1"]
    else:
        classes = sorted(training.select(name.drop_nulls().unique()).collect().to_series().to_list())
    found = dict(train.select(name).drop_nulls().group_by("class").len().collect().iter_rows())
    return {c: found.get(c, 0) for c in [*classes, *sorted(set(found) - set(classes))]}


def _human(delta: timedelta) -> str:
    """A duration for people: '9d 4h', '3h 20m', '45s'."""
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return " ".join(parts[:2]) or f"{seconds}s"
