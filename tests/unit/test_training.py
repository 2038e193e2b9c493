"""Tests of point-in-time training sets: a brute-force reference, no leakage from the future, as-of builds."""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections import defaultdict
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import mlops_assets.core.training.training_set as training_module
from mlops_assets.core.features.views import FEATURE_TIMESTAMP, KNOWN_AT, compute_features
from mlops_assets.core.lake import PARTITION_COLUMN
from mlops_assets.core.training.training_set import (
    JOIN_AT,
    JoinStats,
    ViewInput,
    point_in_time_join,
    training_set,
)
from mlops_assets.demo.generator import FraudGeneratorConfig, labels_for_day, transactions_for_day
from mlops_assets.spec import PipelineSpec, load_specs, parse_duration

T0 = dt.datetime(2026, 1, 10)
STEP = dt.timedelta(minutes=30)
TICK = dt.timedelta(microseconds=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


# --- Point-in-time join against a brute-force reference ------------------------------------------------------

KEYS = ["bank", "card"]
# "z" never has feature rows: an entity without history.
LABEL_ENTITIES = [("a", 1), ("a", 2), ("b", 1), ("z", 9)]
VIEW_ENTITIES = LABEL_ENTITIES[:3]
# Times on a 30-minute grid, some a microsecond off it: TTLs of 2h and 6h are then hit exactly, just missed
# and just exceeded, and label and feature times tie.
JITTER = st.sampled_from([dt.timedelta(0), dt.timedelta(0), TICK, -TICK])
TTLS = {"fast": 2 * HOUR, "slow": 6 * HOUR}
FEATURES = {"fast": ["f_amount", "f_count"], "slow": ["s_channel"]}


@st.composite
def moments(draw: st.DrawFn, steps: int = 24) -> dt.datetime:
    return T0 + STEP * draw(st.integers(0, steps)) + draw(JITTER)


@st.composite
def pit_inputs(draw: st.DrawFn) -> tuple[pl.DataFrame, dict[str, pl.DataFrame], dt.datetime | None]:
    """Labels, the rows of two views (one with known_at) and an as-of time (None for no as-of)."""
    labels = [
        {
            "label_id": i,
            "bank": entity[0],
            "card": entity[1],
            "predicted_at": (p := draw(moments())),
            "labeled_at": p + draw(st.sampled_from([TICK, STEP, 3 * HOUR, DAY])),
            "target": draw(st.integers(0, 1)),
        }
        for i, entity in enumerate(draw(st.lists(st.sampled_from(LABEL_ENTITIES), max_size=12)))
    ]
    label_frame = pl.DataFrame(
        labels,
        schema={
            "label_id": pl.Int64,
            "bank": pl.String,
            "card": pl.Int64,
            "predicted_at": pl.Datetime("us"),
            "labeled_at": pl.Datetime("us"),
            "target": pl.Int64,
        },
    )
    fast = [
        {
            "bank": entity[0],
            "card": entity[1],
            FEATURE_TIMESTAMP: (ts := draw(moments())),
            KNOWN_AT: ts + draw(st.sampled_from([dt.timedelta(0), HOUR, 10 * HOUR])),
            "f_amount": draw(st.one_of(st.none(), st.floats(0, 100, allow_nan=False))),
            "f_count": draw(st.integers(1, 5)),
        }
        for entity in draw(st.lists(st.sampled_from(VIEW_ENTITIES), max_size=12))
    ]
    slow = [
        {
            "bank": entity[0],
            "card": entity[1],
            FEATURE_TIMESTAMP: draw(moments()),
            "s_channel": draw(st.sampled_from([None, "online", "pos"])),
        }
        for entity in draw(st.lists(st.sampled_from(VIEW_ENTITIES), max_size=12))
    ]
    stamp = pl.Datetime("us")
    views = {
        "fast": pl.DataFrame(
            fast,
            schema={
                "bank": pl.String,
                "card": pl.Int64,
                FEATURE_TIMESTAMP: stamp,
                KNOWN_AT: stamp,
                "f_amount": pl.Float64,
                "f_count": pl.Int64,
            },
        ),
        "slow": pl.DataFrame(
            slow, schema={"bank": pl.String, "card": pl.Int64, FEATURE_TIMESTAMP: stamp, "s_channel": pl.String}
        ),
    }
    # An as-of time anywhere, or exactly when a label or a feature row became known.
    arrivals = [*label_frame["labeled_at"], *views["fast"][KNOWN_AT], *views["slow"][FEATURE_TIMESTAMP]]
    as_of = draw(st.one_of(st.none(), moments(steps=30), *([st.sampled_from(arrivals)] if arrivals else [])))
    # A feature view has one row per entity and time.
    views = {name: f.unique([*KEYS, FEATURE_TIMESTAMP], keep="first") for name, f in views.items()}
    return label_frame, views, as_of


def brute_force_join(
    labels: pl.DataFrame,
    views: dict[str, pl.DataFrame],
    inclusive: bool,
    as_of: dt.datetime | None,
    previous_day: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
    """The contract, label by label: scan every feature row of the entity (`previous_day`: only rows of the days
    before the prediction's day, stale by the prediction's own time)."""
    out, missing, stale = [], dict.fromkeys(views, 0), dict.fromkeys(views, 0)
    for label in labels.iter_rows(named=True):
        if as_of is not None and label["labeled_at"] > as_of:
            continue
        p = label["predicted_at"]
        cut = dt.datetime.combine(p.date(), dt.time()) if previous_day else p
        row = dict(label)
        for name, frame in views.items():
            usable = [
                r
                for r in frame.iter_rows(named=True)
                if (r["bank"], r["card"]) == (label["bank"], label["card"])
                and (r[FEATURE_TIMESTAMP] <= cut if inclusive and not previous_day else r[FEATURE_TIMESTAMP] < cut)
                and (as_of is None or r.get(KNOWN_AT, r[FEATURE_TIMESTAMP]) <= as_of)
            ]
            latest = max(usable, key=lambda r: r[FEATURE_TIMESTAMP], default=None)
            if latest is None:
                missing[name] += 1
            elif p - latest[FEATURE_TIMESTAMP] > TTLS[name]:
                stale[name] += 1
            fresh = latest is not None and p - latest[FEATURE_TIMESTAMP] <= TTLS[name]
            row |= {f: latest[f] if fresh else None for f in FEATURES[name]}
        out.append(row)
    return out, missing, stale


def assert_matches_brute_force(
    labels: pl.DataFrame, frames: dict[str, pl.DataFrame], as_of: dt.datetime | None, inclusive: bool
) -> None:
    views = {name: ViewInput(frame.lazy(), TTLS[name]) for name, frame in frames.items()}
    actual, stats = point_in_time_join(
        labels.lazy(),
        views,
        keys=KEYS,
        prediction_timestamp="predicted_at",
        label_timestamp="labeled_at",
        inclusive=inclusive,
        as_of=as_of,
    )
    rows, missing, stale = brute_force_join(labels, frames, inclusive, as_of)
    expected = pl.DataFrame(rows, schema=actual.schema)
    assert actual.columns == [*labels.columns, *FEATURES["fast"], *FEATURES["slow"]]
    assert_frame_equal(actual.sort("label_id"), expected.sort("label_id"))
    # Ordered by (prediction time, keys), labels alike in their input order.
    known = labels if as_of is None else labels.filter(pl.col("labeled_at") <= as_of)
    assert_frame_equal(actual.select(labels.columns), known.sort("predicted_at", *KEYS, maintain_order=True))
    assert (stats.rows, stats.missing, stats.stale) == (len(rows), missing, stale)
    for feature in [*FEATURES["fast"], *FEATURES["slow"]]:
        assert stats.nulls.get(feature, 0) == expected[feature].null_count()


@settings(max_examples=150, deadline=None)
@given(inputs=pit_inputs(), inclusive=st.booleans())
def test_point_in_time_join_matches_a_brute_force_reference(
    inputs: tuple[pl.DataFrame, dict[str, pl.DataFrame], dt.datetime | None], inclusive: bool
) -> None:
    assert_matches_brute_force(*inputs, inclusive)


@settings(max_examples=100, deadline=None)
@given(inputs=pit_inputs(), inclusive=st.booleans())
def test_entities_whose_keys_hash_alike_are_still_joined_by_their_keys(
    inputs: tuple[pl.DataFrame, dict[str, pl.DataFrame], dt.datetime | None], inclusive: bool
) -> None:
    """The join groups entities by a hash of their keys; where two hash alike, a row of the other is found first,
    and the join searches again by the keys themselves. Here every entity hashes alike."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_module, "entity_hash", lambda keys: pl.lit(0, pl.UInt64))
        assert_matches_brute_force(*inputs, inclusive)


def join_one_view(labels: pl.LazyFrame, rows: pl.LazyFrame, **options: Any) -> tuple[pl.DataFrame, JoinStats]:
    """The labels joined to one view's rows, of view "fast" (TTL 2h)."""
    return point_in_time_join(
        labels,
        {"fast": ViewInput(rows, TTLS["fast"])},
        keys=KEYS,
        prediction_timestamp="predicted_at",
        label_timestamp="labeled_at",
        **options,
    )


def test_a_row_of_an_entity_hashed_alike_is_never_used() -> None:
    """Entity b's row is the latest of the hash the two share: entity a's label still gets a's own row."""
    labels = pl.LazyFrame(
        {"bank": ["a"], "card": [1], "predicted_at": [T0], "labeled_at": [T0 + DAY]},
        schema_overrides={"predicted_at": pl.Datetime("us"), "labeled_at": pl.Datetime("us")},
    )
    rows = pl.LazyFrame(
        {"bank": ["a", "b"], "card": [1, 1], FEATURE_TIMESTAMP: [T0 - HOUR, T0 - STEP], "f_count": [1, 2]},
        schema_overrides={FEATURE_TIMESTAMP: pl.Datetime("us")},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_module, "entity_hash", lambda keys: pl.lit(0, pl.UInt64))
        frame, stats = join_one_view(labels, rows)
    assert frame["f_count"].to_list() == [1]
    assert (stats.missing, stats.stale) == ({"fast": 0}, {"fast": 0})


def test_null_keys_and_times_join_nothing() -> None:
    """As polars' join_asof: a label with a null key or time gets no row, and a row with one is never used."""
    labels = pl.LazyFrame(
        {
            "label_id": [1, 2, 3],
            "bank": ["a", None, "a"],
            "card": [1, 1, 1],
            "predicted_at": [T0, T0, None],
            "labeled_at": [T0 + DAY] * 3,
        },
        schema_overrides={"predicted_at": pl.Datetime("us"), "labeled_at": pl.Datetime("us")},
    )
    rows = pl.LazyFrame(
        {
            "bank": ["a", None, "a"],
            "card": [1, 1, 1],
            FEATURE_TIMESTAMP: [T0 - HOUR, T0 - HOUR, None],
            "f_count": [1, 2, 3],
        },
        schema_overrides={FEATURE_TIMESTAMP: pl.Datetime("us")},
    )
    frame, stats = join_one_view(labels, rows)
    # Ordered by (prediction time, keys), nulls first.
    assert frame.select("label_id", "f_count").rows() == [(3, None), (2, None), (1, 1)]
    assert stats.missing == {"fast": 2}


@settings(max_examples=100, deadline=None)
@given(inputs=pit_inputs())
def test_joined_at_the_start_of_the_predictions_day_the_rows_are_those_a_daily_synced_store_holds(
    inputs: tuple[pl.DataFrame, dict[str, pl.DataFrame], dt.datetime | None],
) -> None:
    """feature_cutoff previous_day: the join's key is the start of the prediction's day, strictly before, and a row
    is stale by the prediction's own time, as the online store (synced after each day) and its TTL check serve it."""
    labels, frames, as_of = inputs
    views = {name: ViewInput(frame.lazy(), TTLS[name]) for name, frame in frames.items()}
    day_start = labels.with_columns(pl.col("predicted_at").dt.truncate("1d").alias(JOIN_AT))
    actual, stats = point_in_time_join(
        day_start.lazy(),
        views,
        keys=KEYS,
        prediction_timestamp="predicted_at",
        label_timestamp="labeled_at",
        inclusive=False,
        as_of=as_of,
        join_at=JOIN_AT,
    )
    rows, missing, stale = brute_force_join(labels, frames, False, as_of, previous_day=True)
    assert_frame_equal(actual.sort("label_id"), pl.DataFrame(rows, schema=actual.schema).sort("label_id"))
    assert (stats.rows, stats.missing, stats.stale) == (len(rows), missing, stale)


@pytest.mark.parametrize(
    ("feature_at", "inclusive", "outcome"),
    [
        (T0, True, "used"),
        (T0, False, "missing"),
        (T0 - TICK, False, "used"),
        (T0 - TTLS["fast"], True, "used"),
        (T0 - TTLS["fast"] - TICK, True, "stale"),
        (T0 + TICK, True, "missing"),
    ],
    ids=["tie_inclusive", "tie_exclusive", "just_before", "exactly_ttl", "just_past_ttl", "future"],
)
def test_point_in_time_join_edges(feature_at: dt.datetime, inclusive: bool, outcome: str) -> None:
    labels = pl.LazyFrame(
        {"bank": ["a"], "card": [1], "predicted_at": [T0], "labeled_at": [T0 + DAY]},
        schema_overrides={"predicted_at": pl.Datetime("us"), "labeled_at": pl.Datetime("us")},
    )
    feature = pl.LazyFrame(
        {"bank": ["a"], "card": [1], FEATURE_TIMESTAMP: [feature_at], "f_count": [3]},
        schema_overrides={FEATURE_TIMESTAMP: pl.Datetime("us")},
    )
    frame, stats = join_one_view(labels, feature, inclusive=inclusive)
    assert frame["f_count"].to_list() == ([3] if outcome == "used" else [None])
    assert stats == JoinStats(
        rows=1,
        missing={"fast": int(outcome == "missing")},
        stale={"fast": int(outcome == "stale")},
        nulls={"f_count": int(outcome != "used")},
        duplicates={"fast": 0},
    )


@pytest.mark.parametrize(
    ("as_of", "f_count"),
    [
        (T0 + 2 * HOUR, [3]),
        (T0 + 2 * HOUR - TICK, [1]),
        (T0 + HOUR, [1]),
        (T0 + HOUR - TICK, []),
    ],
    ids=["row_known_exactly_then", "row_known_just_after", "label_known_exactly_then", "label_known_just_after"],
)
def test_point_in_time_join_as_of_edges(as_of: dt.datetime, f_count: list[int]) -> None:
    """A label or feature row known exactly at `as_of` is used; one known a microsecond later is not."""
    labels = pl.LazyFrame(
        {"bank": ["a"], "card": [1], "predicted_at": [T0], "labeled_at": [T0 + HOUR]},
        schema_overrides={"predicted_at": pl.Datetime("us"), "labeled_at": pl.Datetime("us")},
    )
    feature = pl.LazyFrame(
        {
            "bank": ["a", "a"],
            "card": [1, 1],
            FEATURE_TIMESTAMP: [T0 - 90 * dt.timedelta(minutes=1), T0 - HOUR],
            KNOWN_AT: [T0 - 90 * dt.timedelta(minutes=1), T0 + 2 * HOUR],
            "f_count": [1, 3],
        },
        schema_overrides={FEATURE_TIMESTAMP: pl.Datetime("us"), KNOWN_AT: pl.Datetime("us")},
    )
    frame, _ = join_one_view(labels, feature, as_of=as_of)
    assert frame["f_count"].to_list() == f_count


# --- A small fraud-like pipeline -----------------------------------------------------------------------------

TX_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String(),
    "ts": pl.Datetime("us"),
    "amount": pl.Float64(),
    "channel": pl.String(),
    "ingested_at": pl.Datetime("us"),
}
LABEL_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String(),
    "transaction_ts": pl.Datetime("us"),
    "amount": pl.Float64(),
    "is_fraud": pl.Int64(),
    "confirmed_at": pl.Datetime("us"),
}


def pipeline(feature_cutoff: str) -> PipelineSpec:
    """A fraud-like spec built in code: one aggregation view and the example's custom function view."""
    return PipelineSpec.model_validate(
        {
            "name": "mini",
            "start_date": "2026-01-11",
            "entity": {"name": "customer", "keys": ["customer_id"]},
            "sources": {
                "transactions": {
                    "path": "tx/{date}.parquet",
                    "event_timestamp": "ts",
                    "created_timestamp": "ingested_at",
                    "columns": {
                        "customer_id": {"dtype": "string"},
                        "ts": {"dtype": "datetime"},
                        "amount": {"dtype": "float"},
                        "channel": {"dtype": "string"},
                        "ingested_at": {"dtype": "datetime"},
                    },
                },
                "labels": {
                    "path": "labels/{date}.parquet",
                    "event_timestamp": "confirmed_at",
                    "columns": {
                        "customer_id": {"dtype": "string"},
                        "transaction_ts": {"dtype": "datetime"},
                        "amount": {"dtype": "float"},
                        "is_fraud": {"dtype": "int"},
                        "confirmed_at": {"dtype": "datetime"},
                    },
                },
            },
            "feature_views": {
                "spend": {
                    "source": "transactions",
                    "ttl": "1d",
                    "aggregations": [
                        {"functions": ["count"], "windows": ["1h", "1d"]},
                        {
                            "column": "amount",
                            "functions": ["sum", "mean", "min", "max", "std", "n_unique", "last"],
                            "windows": ["1h", "1d"],
                        },
                    ],
                },
                "mix": {
                    "source": "transactions",
                    "ttl": "7d",
                    "function": "mlops_assets.examples.custom_features:channel_mix",
                    "lookback": "7d",
                },
            },
            "request_features": {"amount": {"dtype": "float"}},
            "label": {
                "source": "labels",
                "column": "is_fraud",
                "timestamp": "confirmed_at",
                "prediction_timestamp": "transaction_ts",
                "feature_cutoff": feature_cutoff,
            },
        }
    )


SPECS = {cutoff: pipeline(cutoff) for cutoff in ("at", "before", "previous_day")}


def build(
    spec: PipelineSpec, events: pl.DataFrame, labels: pl.DataFrame, as_of: dt.datetime | None = None
) -> tuple[pl.DataFrame, JoinStats]:
    """Every feature view and the training set, from scratch and in memory."""
    features = {name: compute_features(spec, name, events.lazy()) for name in spec.feature_views}
    return training_set(spec, labels.lazy(), features, as_of=as_of)


# Two days from 6 hours before the spec's start, on a 30-minute grid: events tie with each other and with labels,
# and windows of 1h and 1d reach across them.
LEAK_STEPS = 2 * 48
LEAK_T0 = dt.datetime(2026, 1, 10, 18)


@st.composite
def histories(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame, list[dt.datetime]]:
    """Events, labels and times t to forget everything after."""
    # A few popular times, so that events tie, among times anywhere, so that windows cover a varying number.
    popular = draw(st.lists(st.integers(0, LEAK_STEPS), min_size=1, max_size=4, unique=True))
    moment = st.one_of(st.sampled_from(popular), st.integers(0, LEAK_STEPS)).map(lambda k: LEAK_T0 + STEP * k)
    events = [
        {
            "customer_id": draw(st.sampled_from(["c1", "c2", "c3"])),
            "ts": (ts := draw(moment)),
            "amount": draw(st.integers(1, 400).map(lambda cents: cents / 4)),
            "channel": draw(st.sampled_from([None, "online", "pos"])),
            "ingested_at": ts + draw(st.sampled_from([dt.timedelta(0), HOUR, 2 * DAY])),
        }
        for _ in range(draw(st.integers(3, 40)))
    ]
    # Most predictions are made at the time of an event, as when the transaction itself is scored.
    scored = st.sampled_from(events).map(lambda e: (e["customer_id"], e["ts"]))
    anything = st.tuples(st.sampled_from(["c1", "c2", "c3", "c4"]), moment)
    labels = [
        {
            "customer_id": (predicted := draw(st.one_of(scored, anything)))[0],
            "transaction_ts": predicted[1],
            "amount": 1.0,
            "is_fraud": draw(st.integers(0, 1)),
            "confirmed_at": predicted[1] + STEP * draw(st.sampled_from([1, 2, 6, 24, 48])),
        }
        for _ in range(draw(st.integers(1, 15)))
    ]
    # A t just when a label arrives forgets the most while keeping that label's row.
    arrivals = st.sampled_from([label["confirmed_at"] for label in labels])
    any_t = st.integers(0, LEAK_STEPS + 48).map(lambda k: LEAK_T0 + STEP * k)
    ts = draw(st.lists(st.one_of(arrivals, any_t), min_size=1, max_size=3, unique=True))
    return pl.DataFrame(events, schema=TX_SCHEMA), pl.DataFrame(labels, schema=LABEL_SCHEMA), ts


def canonical(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in an order that depends only on their values."""
    return frame.sort(frame.columns, nulls_last=True)


@settings(max_examples=120, deadline=None)
@given(history=histories(), cutoff=st.sampled_from(["at", "before"]))
def test_no_leakage_forgetting_the_future_changes_no_training_row_of_the_past(
    history: tuple[pl.DataFrame, pl.DataFrame, list[dt.datetime]], cutoff: str
) -> None:
    """A training row labeled by t is the same whether or not anything after t ever happened."""
    events, labels, forget_after = history
    spec = SPECS[cutoff]
    full, _ = build(spec, events, labels)
    for t in forget_after:
        past, past_stats = build(spec, events.filter(pl.col("ts") <= t), labels.filter(pl.col("confirmed_at") <= t))
        known_by_t = full.filter(pl.col("confirmed_at") <= t)
        assert past_stats.rows == past.height == known_by_t.height
        assert_frame_equal(canonical(past), canonical(known_by_t))


# --- As-of builds ------------------------------------------------------------------------------------------


def test_a_backfill_does_not_reach_a_training_set_built_before_it_arrived() -> None:
    """An event of day 1 that lands on day 3 is used by an as-of build of day 3, not by one of day 2."""
    day1 = dt.datetime(2026, 1, 11)
    events = pl.DataFrame(
        [
            {"customer_id": "c", "ts": day1 + 10 * HOUR, "amount": 10.0, "channel": "pos"},
            # The backfill: it happened at 11:00 on day 1 but was ingested on day 3 at noon.
            {"customer_id": "c", "ts": day1 + 11 * HOUR, "amount": 1000.0, "channel": "online"},
            {"customer_id": "c", "ts": day1 + 12 * HOUR, "amount": 20.0, "channel": "pos"},
        ],
        schema=TX_SCHEMA,
    ).with_columns(ingested_at=pl.col("ts") + dt.timedelta(minutes=1))
    events = events.with_columns(
        ingested_at=pl.when(pl.col("amount") == 1000).then(day1 + 2 * DAY + 12 * HOUR).otherwise("ingested_at")
    )
    labels = pl.DataFrame(
        [
            {
                "customer_id": "c",
                "transaction_ts": day1 + 13 * HOUR,
                "amount": 5.0,
                "is_fraud": 0,
                "confirmed_at": day1 + 18 * HOUR,
            }
        ],
        schema=LABEL_SCHEMA,
    )
    spec = SPECS["before"]

    before, stats = build(spec, events, labels, as_of=day1 + DAY + 20 * HOUR)
    assert stats.rows == 1
    row = before.row(0, named=True)
    # Rows whose windows hold the backfill are not known yet: the latest row known is that of 10:00.
    assert (row["amount_max_1d"], row["amount_sum_1d"], row["count_1d"], row["online_share_7d"]) == (10.0, 10.0, 1, 0.0)
    assert 1000.0 not in before.select(pl.selectors.numeric()).unpivot()["value"].to_list()

    after, _ = build(spec, events, labels, as_of=day1 + 2 * DAY + 12 * HOUR)
    row = after.row(0, named=True)
    assert (row["amount_max_1d"], row["amount_sum_1d"], row["count_1d"]) == (1000.0, 1030.0, 3)
    assert row["online_share_7d"] == pytest.approx(1 / 3)
    assert_frame_equal(after, build(spec, events, labels)[0])


def test_an_as_of_build_leaves_out_labels_not_yet_known() -> None:
    day1 = dt.datetime(2026, 1, 11)
    events = pl.DataFrame(
        [{"customer_id": "c", "ts": day1, "amount": 1.0, "channel": "pos", "ingested_at": day1}], schema=TX_SCHEMA
    )
    labels = pl.DataFrame(
        [
            {
                "customer_id": "c",
                "transaction_ts": day1 + HOUR,
                "amount": 1.0,
                "is_fraud": 0,
                "confirmed_at": day1 + 2 * HOUR,
            },
            {
                "customer_id": "c",
                "transaction_ts": day1 + HOUR,
                "amount": 2.0,
                "is_fraud": 1,
                "confirmed_at": day1 + 3 * HOUR,
            },
        ],
        schema=LABEL_SCHEMA,
    )
    frame, stats = build(SPECS["at"], events, labels, as_of=day1 + 2 * HOUR)
    assert stats.rows == 1
    assert frame["is_fraud"].to_list() == [0]


# --- The built-in example, end to end at tiny size ------------------------------------------------------------


def test_the_fraud_example_builds_a_point_in_time_correct_training_set() -> None:
    (spec,) = [s for s in load_specs() if s.name == "fraud"]
    assert spec.label.feature_cutoff == "before"
    config = FraudGeneratorConfig(customers=50, transactions_per_day=300)
    start = spec.start_date
    events = pl.concat([transactions_for_day(config, start + dt.timedelta(days=d)) for d in range(-7, 4)])
    labels = pl.concat([labels_for_day(config, start + dt.timedelta(days=d)) for d in range(5)])
    features = {name: compute_features(spec, name, events.lazy()).collect() for name in spec.feature_views}
    # Carry each view's feature time through the join as one more "feature", to see which row was used.
    traced = {name: f.with_columns(pl.col(FEATURE_TIMESTAMP).alias(f"{name}_used_ts")) for name, f in features.items()}
    frame, stats = training_set(spec, labels.lazy(), {name: f.lazy() for name, f in traced.items()})

    p, start_at = spec.label.prediction_timestamp, dt.datetime.combine(start, dt.time())
    before_start = labels.filter(pl.col(p) < start_at).height
    assert stats.before_start == before_start > 0
    assert frame.height == stats.rows == labels.height - before_start > 0
    assert (frame[p] >= start_at).all()
    assert (frame[spec.label.timestamp] > frame[p]).all()

    keys = spec.entity.keys
    label_columns = [*keys, p, spec.label.timestamp, *spec.request_features, spec.label.column]
    features_of = {name: view.feature_names() or ["online_share_7d"] for name, view in spec.feature_views.items()}
    assert frame.columns == label_columns + [
        c for name, names in features_of.items() for c in [*names, f"{name}_used_ts"]
    ]

    # feature_cutoff 'before': the row used is the latest strictly before the prediction (the scored transaction
    # is itself an event at that time), within the view's TTL, or none at all.
    for name, view in spec.feature_views.items():
        ttl, column = parse_duration(view.ttl), f"{name}_used_ts"
        present = frame.filter(pl.col(column).is_not_null())
        assert (present[column] < present[p]).all()
        assert (present[p] - present[column] <= ttl).all()
        history: dict[str, list[dt.datetime]] = defaultdict(list)
        for customer, ts in features[name].select(*keys, FEATURE_TIMESTAMP).sort(FEATURE_TIMESTAMP).iter_rows():
            history[customer].append(ts)
        for customer, predicted_at, used_at in frame.select(*keys, p, column).iter_rows():
            times = history[customer]
            index = bisect.bisect_left(times, predicted_at) - 1
            latest = times[index] if index >= 0 else None
            assert used_at == (latest if latest is not None and predicted_at - latest <= ttl else None)
        assert stats.missing[name] + stats.stale[name] == frame[column].null_count()
    # A count is never null in a row that was used, so its nulls are exactly the missing and stale rows.
    assert stats.nulls["count_1h"] == stats.missing["customer_velocity"] + stats.stale["customer_velocity"]

    plain, plain_stats = training_set(spec, labels.lazy(), {name: f.lazy() for name, f in features.items()})
    assert plain.columns == label_columns + [c for names in features_of.values() for c in names]
    assert_frame_equal(plain, frame.drop(f"{name}_used_ts" for name in spec.feature_views))
    assert plain_stats.rows == stats.rows


# --- Chunked builds ----------------------------------------------------------------------------------------


def one_step(spec: PipelineSpec, labels: pl.DataFrame, features: dict[str, pl.LazyFrame]) -> tuple[pl.DataFrame, Any]:
    """The training set as one point-in-time join of every label: what a chunked build must equal."""
    label = spec.label
    start = dt.datetime.combine(spec.start_date, dt.time())
    columns = [*spec.entity.keys, label.prediction_timestamp, label.timestamp, *spec.request_features, label.column]
    daily = label.feature_cutoff == "previous_day"
    selected = labels.lazy().filter(pl.col(label.prediction_timestamp) >= start).select(list(dict.fromkeys(columns)))
    return point_in_time_join(
        selected.with_columns(pl.col(label.prediction_timestamp).dt.truncate("1d").alias(JOIN_AT)),
        {name: ViewInput(features[name], parse_duration(view.ttl)) for name, view in spec.feature_views.items()},
        keys=spec.entity.keys,
        prediction_timestamp=label.prediction_timestamp,
        label_timestamp=label.timestamp,
        inclusive=label.feature_cutoff == "at",
        join_at=JOIN_AT if daily else None,
    )


@settings(max_examples=120, deadline=None)
@given(
    history=histories(), cutoff=st.sampled_from(["at", "before", "previous_day"]), chunk_days=st.sampled_from([1, 2])
)
def test_a_training_set_built_a_few_label_days_at_a_time_equals_the_one_step_join(
    history: tuple[pl.DataFrame, pl.DataFrame, list[dt.datetime]], cutoff: str, chunk_days: int
) -> None:
    """Chunks by label day, from plain frames or from daily partitions, give the rows and counts of one join."""
    events, labels, _ = history
    spec = SPECS[cutoff]
    features = {name: compute_features(spec, name, events.lazy()).collect() for name in spec.feature_views}
    expected, expected_stats = one_step(spec, labels, {name: f.lazy() for name, f in features.items()})
    day = pl.col("confirmed_at").dt.date().cast(pl.String).alias(PARTITION_COLUMN)
    partitioned = {
        name: f.with_columns(pl.col(FEATURE_TIMESTAMP).dt.date().cast(pl.String).alias(PARTITION_COLUMN))
        for name, f in features.items()
    }
    for label_frame, views in ((labels, features), (labels.with_columns(day), partitioned)):
        frame, stats = training_set(
            spec, label_frame.lazy(), {n: f.lazy() for n, f in views.items()}, chunk_days=chunk_days
        )
        assert_frame_equal(canonical(frame), canonical(expected))
        assert (stats.rows, stats.missing, stats.stale, stats.nulls) == (
            expected_stats.rows,
            expected_stats.missing,
            expected_stats.stale,
            expected_stats.nulls,
        )


def test_a_feature_row_past_its_ttl_stays_stale_when_its_chunk_is_long_gone() -> None:
    """The one row of an entity, 40 label days before its next label: carried along, counted stale, not missing;
    and the same when the labels begin only then (the history before the first chunk folded a few days at a time)."""
    spec = SPECS["at"]
    first = dt.datetime(2026, 1, 11, 9)
    events = pl.DataFrame(
        [{"customer_id": "c", "ts": first, "amount": 5.0, "channel": "pos", "ingested_at": first}], schema=TX_SCHEMA
    )
    labels = pl.DataFrame(
        [
            {"customer_id": "c", "transaction_ts": first + d * DAY, "amount": 1.0, "is_fraud": 0}
            | {"confirmed_at": first + d * DAY + HOUR}
            for d in (0, 40)
        ],
        schema=LABEL_SCHEMA,
    )
    features = {name: compute_features(spec, name, events.lazy()).collect() for name in spec.feature_views}
    day = pl.col(FEATURE_TIMESTAMP).dt.date().cast(pl.String).alias(PARTITION_COLUMN)
    partitioned = {name: f.with_columns(day).lazy() for name, f in features.items()}
    frame, stats = training_set(spec, labels.lazy(), {n: f.lazy() for n, f in features.items()}, chunk_days=1)
    assert frame["amount_sum_1h"].to_list() == [5.0, None]
    assert stats.stale == {name: 1 for name in spec.feature_views} and stats.missing == dict.fromkeys(
        spec.feature_views, 0
    )
    late, late_stats = training_set(spec, labels.tail(1).lazy(), partitioned, chunk_days=3)
    assert late["amount_sum_1h"].to_list() == [None]
    assert late_stats.stale == {name: 1 for name in spec.feature_views}


# --- Views that cannot be joined, duplicates, time zones -------------------------------------------------------

DAY1 = dt.datetime(2026, 1, 11)


def small_history() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two customers' events over two days and a label each day."""
    events = pl.DataFrame(
        [
            {"customer_id": c, "ts": DAY1 + h * HOUR, "amount": float(h), "channel": "pos", "ingested_at": DAY1}
            for c in ("c1", "c2")
            for h in (1, 5, 26, 30)
        ],
        schema=TX_SCHEMA,
    )
    labels = pl.DataFrame(
        [
            {"customer_id": c, "transaction_ts": DAY1 + h * HOUR, "amount": 1.0, "is_fraud": i % 2}
            | {"confirmed_at": DAY1 + (h + 2) * HOUR}
            for i, (c, h) in enumerate([("c1", 6), ("c2", 6), ("c1", 31), ("c2", 31)])
        ],
        schema=LABEL_SCHEMA,
    )
    return events, labels


def views_of(spec: PipelineSpec, events: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {name: compute_features(spec, name, events.lazy()).collect() for name in spec.feature_views}


def test_a_feature_already_a_column_of_the_join_is_refused_naming_the_view_and_the_column() -> None:
    """Never a `<name>_right` column, never a label nulled by a TTL: a feature named like a column is an error."""
    labels = pl.LazyFrame(
        {"bank": ["a"], "card": [1], "predicted_at": [T0], "labeled_at": [T0 + DAY], "target": [1]},
        schema_overrides={"predicted_at": pl.Datetime("us"), "labeled_at": pl.Datetime("us")},
    )
    row = {"bank": ["a"], "card": [1], FEATURE_TIMESTAMP: [T0 - HOUR]}
    stamp = {FEATURE_TIMESTAMP: pl.Datetime("us")}
    join = {"keys": KEYS, "prediction_timestamp": "predicted_at", "label_timestamp": "labeled_at"}
    leaky = ViewInput(pl.LazyFrame(row | {"target": [0]}, schema_overrides=stamp), TTLS["fast"])
    with pytest.raises(ValueError, match=r"feature view 'fast': feature 'target' is already a column of the labels"):
        point_in_time_join(labels, {"fast": leaky}, **join)
    first = ViewInput(pl.LazyFrame(row | {"f_count": [1]}, schema_overrides=stamp), TTLS["fast"])
    again = ViewInput(pl.LazyFrame(row | {"f_count": [2]}, schema_overrides=stamp), TTLS["slow"])
    with pytest.raises(ValueError, match=r"'slow': feature 'f_count' is already a feature of view 'fast'"):
        point_in_time_join(labels, {"fast": first, "slow": again}, **join)


def test_a_custom_view_whose_table_has_a_clashing_feature_fails_with_the_specs_located_message() -> None:
    spec = SPECS["at"]
    events, labels = small_history()
    views = views_of(spec, events)
    views["mix"] = views["mix"].with_columns(pl.col("online_share_7d").alias("amount"))  # a request feature's name
    (problem,) = spec.feature_clash_problems("mix", ["amount"])
    assert problem == "feature_views.mix: feature 'amount' has the name of a request feature; rename the feature"
    with pytest.raises(ValueError, match=re.escape(problem)):
        training_set(spec, labels.lazy(), {n: f.lazy() for n, f in views.items()})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            pl.col("customer_id").str.slice(1).cast(pl.Int64),
            "feature view 'spend': entity key 'customer_id' is Int64 in the view but String in the labels "
            "(source 'labels')",
        ),
        (
            pl.col(FEATURE_TIMESTAMP).cast(pl.Datetime("ns")),
            "feature view 'spend': 'feature_timestamp' is Datetime(time_unit='ns', time_zone=None) but "
            "'transaction_ts' of the labels (source 'labels') is Datetime(time_unit='us', time_zone=None)",
        ),
    ],
    ids=["key_type", "time_unit"],
)
def test_views_that_cannot_join_are_named_with_both_columns_and_types(change: pl.Expr, message: str) -> None:
    spec = SPECS["at"]
    events, labels = small_history()
    views = views_of(spec, events)
    views["spend"] = views["spend"].with_columns(change)
    with pytest.raises(ValueError, match=re.escape(message)):
        training_set(spec, labels.lazy(), {n: f.lazy() for n, f in views.items()})


def test_duplicate_feature_rows_are_resolved_whatever_their_order_and_counted_once() -> None:
    """Two rows of one customer and time: the one known last is used, in any input order, one-step or chunked."""
    spec = SPECS["at"]
    events, labels = small_history()
    views = views_of(spec, events)
    spend = views["spend"]
    # For each customer, a second row at 05:00 of day 1, known later (the one to use), and one at 06:00 of day 2
    # known at the same time as its twin, with a larger amount_sum_1h (the one to use).
    late = spend.filter(pl.col(FEATURE_TIMESTAMP) == DAY1 + 5 * HOUR).with_columns(
        pl.col(KNOWN_AT) + HOUR, pl.col("amount_sum_1h") - 100
    )
    twin = spend.filter(pl.col(FEATURE_TIMESTAMP) == DAY1 + 30 * HOUR).with_columns(pl.col("amount_sum_1h") + 100)
    doubled = pl.concat([spend, late, twin])
    day = pl.col(FEATURE_TIMESTAMP).dt.date().cast(pl.String).alias(PARTITION_COLUMN)
    results = []
    for seed in range(4):
        shuffled = doubled.sample(fraction=1.0, shuffle=True, seed=seed)
        for chunk_days, frame in ((10, shuffled), (1, shuffled.with_columns(day))):
            inputs = {**{n: f.lazy() for n, f in views.items()}, "spend": frame.lazy()}
            labelled = labels.with_columns(pl.col("confirmed_at").dt.date().cast(pl.String).alias(PARTITION_COLUMN))
            results.append(training_set(spec, labelled.lazy(), inputs, chunk_days=chunk_days))
    first, stats = results[0]
    assert first["amount_sum_1h"].to_list() == [5.0 - 100, 5.0 - 100, 30.0 + 100, 30.0 + 100]
    assert stats.duplicates == {"spend": 4, "mix": 0}
    for frame, other in results[1:]:
        assert_frame_equal(frame, first)
        assert other.duplicates == stats.duplicates


def test_time_zone_aware_labels_and_as_of_are_read_as_utc() -> None:
    spec = SPECS["at"]
    events, labels = small_history()
    features = {n: f.lazy() for n, f in views_of(spec, events).items()}
    naive, _ = training_set(spec, labels.lazy(), features, as_of=DAY1 + 10 * HOUR)
    in_paris = labels.with_columns(
        pl.col("transaction_ts", "confirmed_at").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Paris")
    )
    as_of = (DAY1 + 10 * HOUR).replace(tzinfo=dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    aware, _ = training_set(spec, in_paris.lazy(), features, as_of=as_of)
    assert naive.height == 2
    assert_frame_equal(aware, naive)
