"""Tests of the feature functions: aggregations against a naive per-row reference, and custom function views."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from mlops_assets.core.features.views import (
    FEATURE_TIMESTAMP,
    KNOWN_AT,
    FeatureFunctionError,
    aggregate_features,
    compute_features,
    feature_partitions,
    resolve_duplicates,
)
from mlops_assets.spec import FeatureViewSpec, PipelineSpec, parse_duration

T0 = dt.datetime(2026, 1, 1)
# Events on a 30-minute grid over 9 days: ties, and window edges hit exactly at 1h, 1d and 7d.
GRID_STEPS = 9 * 48
STEP = dt.timedelta(minutes=30)

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "bank": pl.String(),
    "card": pl.Int64(),
    "customer_id": pl.String(),
    "ts": pl.Datetime("us"),
    "amount": pl.Float64(),
    "merchant_category": pl.String(),
    "channel": pl.String(),
    "ingested_at": pl.Datetime("us"),
}

ALL_FUNCTIONS = ["count", "sum", "mean", "min", "max", "std", "n_unique", "last"]
VIEW = FeatureViewSpec.model_validate(
    {
        "source": "transactions",
        "ttl": "7d",
        "aggregations": [
            {"column": "amount", "functions": ALL_FUNCTIONS, "windows": ["1h", "1d", "7d"]},
            {"column": "merchant_category", "functions": ["n_unique", "last"], "windows": ["1d"]},
        ],
    }
)


# --- Helpers ---------------------------------------------------------------------------------------------


def pipeline(feature_views: dict[str, Any], keys: list[str] | None = None) -> PipelineSpec:
    """A minimal valid pipeline over the EVENT_SCHEMA columns, built like the example YAML."""
    keys = keys or ["customer_id"]
    columns = {
        name: {"dtype": "datetime" if "Datetime" in str(dtype) else "string"} for name, dtype in EVENT_SCHEMA.items()
    }
    columns.update(amount={"dtype": "float"}, card={"dtype": "int"})
    label_columns = {k: columns[k] for k in keys} | {
        "transaction_ts": {"dtype": "datetime"},
        "confirmed_at": {"dtype": "datetime"},
        "is_fraud": {"dtype": "int"},
    }
    spec = PipelineSpec.model_validate(
        {
            "name": "test",
            "code_packages": ["tests"],  # the feature functions of these tests live here
            "start_date": "2026-01-01",
            "entity": {"name": "customer", "keys": keys},
            "sources": {
                "transactions": {
                    "path": "tx/{date}.parquet",
                    "event_timestamp": "ts",
                    "created_timestamp": "ingested_at",
                    "columns": columns,
                },
                "labels": {
                    "path": "labels/{date}.parquet",
                    "event_timestamp": "confirmed_at",
                    "columns": label_columns,
                },
            },
            "feature_views": feature_views,
            "label": {
                "source": "labels",
                "column": "is_fraud",
                "timestamp": "confirmed_at",
                "prediction_timestamp": "transaction_ts",
            },
        }
    )
    assert spec.cross_reference_problems() == []
    return spec


def _null(value: Any) -> Any:
    """pandas' NaN/NaT for 'no value' -> None, the way polars shows a null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT else value


def _aggregate(window: pd.DataFrame, function: str, column: str | None) -> Any:
    if function == "count":
        return len(window)
    values = window[column]
    present = values.dropna()
    match function:
        case "sum":
            return float(present.sum())  # 0 for no values
        case "mean" | "min" | "max":
            return _null(getattr(present, function)()) if len(present) else None
        case "std":
            return float(present.std(ddof=1)) if len(present) >= 2 else None
        case "n_unique":
            return int(present.nunique())
        case "last":
            return _null(values.iloc[-1])
    raise AssertionError(function)


def naive_features(events: pl.DataFrame, view: FeatureViewSpec, keys: list[str], created: str | None) -> pl.DataFrame:
    """The contract, one row at a time: for each (entity, t), every window (t - w, t] filtered from scratch."""
    frame = events.to_pandas().sort_values([*keys, "ts"], kind="stable")
    durations = {parse_duration(w) for agg in view.aggregations for w in agg.windows}
    longest = max(durations)
    rows = []
    for _, entity in frame.groupby(keys, sort=False):
        for t in (pd.Timestamp(x).to_pydatetime() for x in entity["ts"].unique()):
            row: dict[str, Any] = {k: entity[k].iloc[0] for k in keys} | {FEATURE_TIMESTAMP: t}
            if created:
                row[KNOWN_AT] = entity[(entity["ts"] > t - longest) & (entity["ts"] <= t)][created].max()
            windows = {w: entity[(entity["ts"] > t - w) & (entity["ts"] <= t)] for w in durations}
            for agg in view.aggregations:
                names = iter(agg.feature_names())
                for function in agg.functions:
                    for window in [longest] if function == "last" else map(parse_duration, agg.windows):
                        row[next(names)] = _aggregate(windows[window], function, agg.column)
            rows.append(row)
    return pl.DataFrame(rows, schema_overrides={k: EVENT_SCHEMA[k] for k in keys}, infer_schema_length=None)


def assert_same_features(actual: pl.DataFrame, expected: pl.DataFrame, keys: list[str]) -> None:
    assert actual.columns == expected.columns
    order = [*keys, FEATURE_TIMESTAMP]
    assert not actual.select(order).is_duplicated().any(), "one row per entity and time"
    assert_frame_equal(
        actual.sort(order),
        expected.sort(order),
        check_dtypes=False,
        check_exact=False,
        rel_tol=1e-9,
        abs_tol=1e-6,
    )


# --- Random events ---------------------------------------------------------------------------------------

ENTITIES = [("a", 1), ("a", 2), ("b", 1), ("c", 7)]


@st.composite
def event_frames(draw: st.DrawFn, max_rows: int = 40) -> pl.DataFrame:
    n = draw(st.integers(min_value=1, max_value=max_rows))
    # A few distinct steps per frame, so that events pile up at equal times and inside each other's windows.
    steps = draw(st.lists(st.integers(0, GRID_STEPS - 1), min_size=1, max_size=12, unique=True))
    amount = st.one_of(st.none(), st.integers(-400, 4000).map(lambda cents: cents / 4))
    rows = []
    for _ in range(n):
        bank, card = draw(st.sampled_from(ENTITIES))
        ts = T0 + STEP * draw(st.sampled_from(steps))
        delay = dt.timedelta(minutes=draw(st.sampled_from([0, 1, 45, 24 * 60, 10 * 24 * 60])))
        rows.append(
            {
                "bank": bank,
                "card": card,
                "customer_id": f"{bank}{card}",
                "ts": ts,
                "amount": draw(amount),
                "merchant_category": draw(st.sampled_from([None, "grocery", "fuel", "travel"])),
                "channel": draw(st.sampled_from([None, "online", "pos", "atm"])),
                "ingested_at": ts + delay,
            }
        )
    return pl.DataFrame(rows, schema=EVENT_SCHEMA)


# --- Aggregations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("keys", [["customer_id"], ["bank", "card"]], ids=["one_key", "two_keys"])
@settings(max_examples=60, deadline=None)
@given(events=event_frames())
def test_aggregations_match_a_naive_per_row_computation(keys: list[str], events: pl.DataFrame) -> None:
    actual = aggregate_features(events.lazy(), VIEW, keys, "ts", "ingested_at").collect()
    assert_same_features(actual, naive_features(events, VIEW, keys, "ingested_at"), keys)


@settings(max_examples=25, deadline=None)
@given(events=event_frames())
def test_aggregations_without_a_created_column_have_no_known_at(events: pl.DataFrame) -> None:
    keys = ["bank", "card"]
    actual = aggregate_features(events.lazy(), VIEW, keys, "ts", None).collect()
    assert KNOWN_AT not in actual.columns
    assert_same_features(actual, naive_features(events, VIEW, keys, None), keys)


@settings(max_examples=25, deadline=None)
@given(events=event_frames(), shuffle_seed=st.integers(0, 2**32 - 1))
def test_aggregations_do_not_depend_on_the_row_order_except_for_ties_in_last(
    events: pl.DataFrame, shuffle_seed: int
) -> None:
    """Reordering the input changes nothing but which of several tied events is `last`."""
    view = FeatureViewSpec.model_validate(
        {
            "source": "s",
            "ttl": "7d",
            "aggregations": [{"column": "amount", "functions": ALL_FUNCTIONS[:-1], "windows": ["1h", "1d"]}],
        }
    )
    keys = ["customer_id"]
    shuffled = events.sample(fraction=1.0, shuffle=True, seed=shuffle_seed)
    assert_same_features(
        aggregate_features(shuffled.lazy(), view, keys, "ts", "ingested_at").collect(),
        aggregate_features(events.lazy(), view, keys, "ts", "ingested_at").collect(),
        keys,
    )


def test_known_at_is_the_latest_ingestion_in_the_longest_window() -> None:
    """A late event keeps every row whose longest window contains it unknown until it arrives."""
    at = [T0, T0 + dt.timedelta(hours=1), T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=8)]
    ingested = [at[0] + dt.timedelta(days=3), at[1], at[2] + dt.timedelta(minutes=5), at[3]]
    events = pl.DataFrame(
        {"customer_id": ["c"] * 4, "ts": at, "amount": [1.0, 2.0, 3.0, 4.0], "ingested_at": ingested},
        schema_overrides={"ts": pl.Datetime("us"), "ingested_at": pl.Datetime("us")},
    )
    view = FeatureViewSpec.model_validate(
        {
            "source": "s",
            "ttl": "7d",
            "aggregations": [{"column": "amount", "functions": ["sum"], "windows": ["1h", "7d"]}],
        }
    )
    out = aggregate_features(events.lazy(), view, ["customer_id"], "ts", "ingested_at").collect()
    assert out.columns == ["customer_id", FEATURE_TIMESTAMP, KNOWN_AT, "amount_sum_1h", "amount_sum_7d"]
    # The first event (ingested 3 days late) is in the 7d window of the rows at 0h, 1h and 1d, not at 8d.
    assert out[KNOWN_AT].to_list() == [ingested[0], ingested[0], ingested[0], ingested[3]]
    assert out["amount_sum_7d"].to_list() == [1.0, 3.0, 6.0, 4.0]
    assert out["amount_sum_1h"].to_list() == [1.0, 2.0, 3.0, 4.0]


def test_events_tied_at_one_time_give_one_row_that_counts_them_all() -> None:
    events = pl.DataFrame(
        {
            "customer_id": ["c", "c", "c", "d"],
            "ts": [T0, T0, T0, T0],
            "amount": [5.0, None, 7.0, 1.0],
            "ingested_at": [T0, T0 + dt.timedelta(hours=2), T0, T0],
        },
        schema_overrides={"ts": pl.Datetime("us"), "ingested_at": pl.Datetime("us")},
    )
    view = FeatureViewSpec.model_validate(
        {
            "source": "s",
            "ttl": "7d",
            "aggregations": [{"column": "amount", "functions": ALL_FUNCTIONS, "windows": ["1h"]}],
        }
    )
    out = aggregate_features(events.lazy(), view, ["customer_id"], "ts", "ingested_at").collect().sort("customer_id")
    c = out.row(0, named=True)
    assert out.height == 2
    assert (c["count_1h"], c["amount_sum_1h"], c["amount_mean_1h"], c["amount_n_unique_1h"]) == (3, 12.0, 6.0, 2)
    assert c["amount_last"] == 7.0  # the last of the tied events in input order
    assert c[KNOWN_AT] == T0 + dt.timedelta(hours=2)


def test_last_of_many_tied_events_is_the_last_in_input_order() -> None:
    """Regression: an unstable sort picked an arbitrary one of 20+ events tied at one time."""
    n = 40
    events = pl.DataFrame(
        {
            "customer_id": ["c"] * (n - 1) + ["b"],
            "ts": [T0] * n,
            "amount": [float(i) for i in range(n)],
        },
        schema_overrides={"ts": pl.Datetime("us")},
    )
    view = FeatureViewSpec.model_validate(
        {"source": "s", "ttl": "7d", "aggregations": [{"column": "amount", "functions": ["last"], "windows": ["1h"]}]}
    )
    out = aggregate_features(events.lazy(), view, ["customer_id"], "ts", None).collect().sort("customer_id")
    assert out.rows() == [("b", T0, float(n - 1)), ("c", T0, float(n - 2))]


def test_compute_features_uses_the_view_and_source_of_the_spec() -> None:
    spec = pipeline({"spend": VIEW.model_dump(exclude_defaults=True)}, keys=["bank", "card"])
    events = pl.DataFrame(
        [{"bank": "a", "card": 1, "customer_id": "a1", "ts": T0, "amount": 2.0, "ingested_at": T0}], schema=EVENT_SCHEMA
    )
    out = compute_features(spec, "spend", events.lazy()).collect()
    assert out.columns == ["bank", "card", FEATURE_TIMESTAMP, KNOWN_AT, *VIEW.feature_names()]
    assert out.height == 1


# --- Custom function views -------------------------------------------------------------------------------


def drops_keys(events: pl.LazyFrame) -> pl.LazyFrame:
    """A broken feature function: it forgets the entity key."""
    return events.select(pl.col("ts").alias(FEATURE_TIMESTAMP), pl.col("amount").alias("amount_copy"))


def returns_a_data_frame(events: pl.LazyFrame) -> pl.DataFrame:
    return events.select("customer_id", pl.col("ts").alias(FEATURE_TIMESTAMP)).collect()


def custom_view(function: str) -> dict[str, Any]:
    return {"source": "transactions", "ttl": "7d", "function": function, "lookback": "7d"}


def test_the_example_channel_mix_function_runs_with_known_at() -> None:
    spec = pipeline({"mix": custom_view("mlops_assets.examples.custom_features:channel_mix")})
    day = dt.timedelta(days=1)
    events = pl.DataFrame(
        [
            {"customer_id": "c", "ts": T0, "channel": "online", "ingested_at": T0 + 2 * day},
            {"customer_id": "c", "ts": T0 + day, "channel": "pos", "ingested_at": T0 + day},
            {"customer_id": "c", "ts": T0 + 9 * day, "channel": None, "ingested_at": T0 + 9 * day},
            {"customer_id": "d", "ts": T0 + day, "channel": "online", "ingested_at": T0 + day},
        ],
        schema=EVENT_SCHEMA,
    )
    out = compute_features(spec, "mix", events.lazy()).collect()
    assert out.columns == ["customer_id", FEATURE_TIMESTAMP, KNOWN_AT, "online_share_7d"]
    assert out.rows() == [
        ("c", T0, T0 + 2 * day, 1.0),
        ("c", T0 + day, T0 + 2 * day, 0.5),
        ("c", T0 + 9 * day, T0 + 9 * day, 0.0),
        ("d", T0 + day, T0 + day, 1.0),
    ]


def test_a_function_that_drops_the_keys_is_rejected_naming_the_column() -> None:
    spec = pipeline({"broken": custom_view("tests.unit.test_features:drops_keys")})
    events = pl.DataFrame([{"customer_id": "c", "ts": T0, "amount": 1.0, "ingested_at": T0}], schema=EVENT_SCHEMA)
    with pytest.raises(FeatureFunctionError, match=r"returned no column\(s\) \['customer_id'\]"):
        compute_features(spec, "broken", events.lazy())


def test_a_function_that_returns_a_data_frame_is_rejected() -> None:
    spec = pipeline({"eager": custom_view("tests.unit.test_features:returns_a_data_frame")})
    events = pl.DataFrame([{"customer_id": "c", "ts": T0, "ingested_at": T0}], schema=EVENT_SCHEMA)
    with pytest.raises(FeatureFunctionError, match=r"returned DataFrame, expected polars\.LazyFrame"):
        compute_features(spec, "eager", events.lazy())


@pytest.mark.parametrize(
    "function",
    ["tests.unit.test_features:no_such_function", "mlops_assets.examples.no_such_module:channel_mix"],
    ids=["missing_function", "missing_module"],
)
def test_a_function_that_does_not_exist_is_a_feature_function_error(function: str) -> None:
    spec = pipeline({"ghost": custom_view(function)})
    events = pl.DataFrame(schema=EVENT_SCHEMA)
    with pytest.raises(FeatureFunctionError, match=re.escape(f"feature function: cannot load '{function}'")):
        compute_features(spec, "ghost", events.lazy())


# --- Custom function output: clashes, types, time zones, duplicates -------------------------------------------


def names_a_feature_like_the_label(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.select(
        "customer_id",
        pl.col("ts").alias(FEATURE_TIMESTAMP),
        pl.col("amount").alias("is_fraud"),
        pl.col("amount").alias("amount_sum_1h"),
        pl.col("amount").alias("fine"),
    )


def returns_known_at(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.select("customer_id", pl.col("ts").alias(FEATURE_TIMESTAMP), pl.col("ts").alias(KNOWN_AT))


def casts_the_key(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.select(pl.col("card").cast(pl.String), "bank", pl.col("ts").alias(FEATURE_TIMESTAMP), "amount")


def stamps_in_nanoseconds(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.select("customer_id", pl.col("ts").cast(pl.Datetime("ns")).alias(FEATURE_TIMESTAMP), "amount")


def stamps_in_tokyo(events: pl.LazyFrame) -> pl.LazyFrame:
    local = pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Tokyo")
    return events.select("customer_id", local.alias(FEATURE_TIMESTAMP), pl.col("ts").alias("seen_ts"))


def one_row_per_event(events: pl.LazyFrame) -> pl.LazyFrame:
    """A careless function: one row per event, so events tied at one time give several rows for that time."""
    return events.select("customer_id", pl.col("ts").alias(FEATURE_TIMESTAMP), "amount", "channel")


def test_a_function_feature_named_like_another_column_fails_with_the_located_message() -> None:
    spend = {"source": "transactions", "ttl": "1d", "aggregations": [{"column": "amount", "functions": ["sum"]}]}
    spend["aggregations"][0]["windows"] = ["1h"]
    spec = pipeline({"spend": spend, "leaky": custom_view("tests.unit.test_features:names_a_feature_like_the_label")})
    events = pl.DataFrame([{"customer_id": "c", "ts": T0, "amount": 1.0, "ingested_at": T0}], schema=EVENT_SCHEMA)
    with pytest.raises(FeatureFunctionError) as raised:
        compute_features(spec, "leaky", events.lazy())
    message = str(raised.value)
    assert message.startswith("tests.unit.test_features:names_a_feature_like_the_label (feature_views.leaky.function)")
    expected = spec.feature_clash_problems("leaky", ["is_fraud", "amount_sum_1h", "fine"])
    assert len(expected) == 2 and all(problem in message for problem in expected)
    assert "'is_fraud' has the name of the label (label.column)" in message
    assert "'amount_sum_1h' is also a feature of view 'spend'" in message and "'fine'" not in message


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("returns_known_at", "feature 'known_at' is a column the pipeline adds itself (when each row became known)"),
        ("casts_the_key", "entity key 'card' is String in the function's output but Int64 in source 'transactions'"),
        (
            "stamps_in_nanoseconds",
            "'feature_timestamp' is Datetime(time_unit='ns', time_zone=None) in the function's output but the events' "
            "'ts' is Datetime(time_unit='us', time_zone=None)",
        ),
    ],
    ids=["known_at", "key_type", "time_unit"],
)
def test_a_function_output_that_cannot_join_names_both_columns_and_types(function: str, message: str) -> None:
    keys = ["bank", "card"] if function == "casts_the_key" else None
    spec = pipeline({"odd": custom_view(f"tests.unit.test_features:{function}")}, keys=keys)
    events = pl.DataFrame(
        [{"bank": "a", "card": 1, "customer_id": "c", "ts": T0, "amount": 1.0, "ingested_at": T0}], schema=EVENT_SCHEMA
    )
    with pytest.raises(FeatureFunctionError, match=re.escape(message)):
        compute_features(spec, "odd", events.lazy())


def test_time_zone_aware_events_and_outputs_are_read_as_utc() -> None:
    """Events with a zone reach the function in naive UTC; a zoned feature_timestamp comes back in naive UTC."""
    spec = pipeline({"local": custom_view("tests.unit.test_features:stamps_in_tokyo")})
    paris = pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Paris")
    events = pl.DataFrame(
        [{"customer_id": "c", "ts": T0 + dt.timedelta(hours=h), "ingested_at": T0} for h in (1, 5)],
        schema=EVENT_SCHEMA,
    ).with_columns(paris, pl.col("ingested_at").dt.replace_time_zone("UTC"))
    out = compute_features(spec, "local", events.lazy()).collect()
    assert out.schema[FEATURE_TIMESTAMP] == pl.Datetime("us")
    assert out.select(FEATURE_TIMESTAMP, "seen_ts", KNOWN_AT).rows() == [
        (T0 + dt.timedelta(hours=h), T0 + dt.timedelta(hours=h), T0) for h in (1, 5)
    ]
    rows = feature_partitions(spec, "local", events.lazy(), ["2026-01-01"])
    assert rows.time_zones == {"ts": "Europe/Paris", "ingested_at": "UTC"}


@settings(max_examples=25, deadline=None)
@given(events=event_frames(), shuffle_seed=st.integers(0, 2**32 - 1))
def test_duplicate_rows_of_a_function_are_resolved_whatever_the_input_order(
    events: pl.DataFrame, shuffle_seed: int
) -> None:
    """Several rows for one customer and time: one is kept by its values, never by where it was; all are counted."""
    spec = pipeline({"careless": custom_view("tests.unit.test_features:one_row_per_event")})
    shuffled = events.sample(fraction=1.0, shuffle=True, seed=shuffle_seed)
    days = sorted({t.date().isoformat() for t in events["ts"]})
    expected = feature_partitions(spec, "careless", events.lazy(), days)
    actual = feature_partitions(spec, "careless", shuffled.lazy(), days)
    assert_frame_equal(actual.frame, expected.frame)
    assert not actual.frame.select("customer_id", FEATURE_TIMESTAMP).is_duplicated().any()
    assert actual.duplicates == expected.duplicates == events.height - actual.frame.height
    # The row kept is the largest by (amount, channel), nulls first.
    largest = events.sort("amount", "channel", nulls_last=False).unique(["customer_id", "ts"], keep="last")
    kept = actual.frame.select("customer_id", pl.col(FEATURE_TIMESTAMP).alias("ts"), "amount", "channel")
    assert_frame_equal(kept, largest.select(kept.columns), check_row_order=False)


def test_rows_known_at_different_times_keep_the_one_known_last() -> None:
    """With known_at, the row that arrived last wins even when its values are smaller."""
    frame = pl.LazyFrame(
        {
            "customer_id": ["c", "c", "c"],
            FEATURE_TIMESTAMP: [T0, T0, T0],
            KNOWN_AT: [T0 + dt.timedelta(hours=2), T0, T0 + dt.timedelta(hours=1)],
            "amount": [1.0, 9.0, 5.0],
        }
    )
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
        shuffled = frame.collect()[order].lazy()
        assert resolve_duplicates(shuffled, ["customer_id"]).collect()["amount"].to_list() == [1.0]
