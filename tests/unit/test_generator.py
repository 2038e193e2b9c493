"""Tests of the synthetic transaction and label generator: determinism, schema, labels, scenarios."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from pydantic import ValidationError

from mlops_assets.demo import generator
from mlops_assets.demo.generator import (
    AmountShift,
    ConceptDrift,
    FraudGeneratorConfig,
    NewCategory,
    NullRise,
    labels_for_day,
    transactions_for_day,
    write_day,
)

DAY = dt.date(2026, 1, 5)
SMALL = FraudGeneratorConfig(seed=11, customers=300, transactions_per_day=400)
MEDIUM = FraudGeneratorConfig(seed=3, customers=2_000, transactions_per_day=4_000)
CATEGORIES = {
    "grocery",
    "fuel",
    "restaurants",
    "electronics",
    "travel",
    "online_retail",
    "entertainment",
    "health",
}


def days(start: dt.date, count: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(count)]


def with_fraud(config: FraudGeneratorConfig, span: list[dt.date]) -> pl.DataFrame:
    """Transactions with their fraud flag, to test the fraud profile directly."""
    return pl.concat([generator._transactions_with_fraud(config, day) for day in span])


def forget_cache() -> None:
    generator._cached_day.cache_clear()


@pytest.fixture(autouse=True)
def _no_shared_cache() -> Iterator[None]:
    # Each test must generate from scratch, or a cached frame could hide order dependence.
    forget_cache()
    yield
    forget_cache()


# --- Determinism -------------------------------------------------------------------------------------------


def test_same_config_and_day_give_identical_frames() -> None:
    first = transactions_for_day(MEDIUM, DAY)
    forget_cache()
    assert_frame_equal(first, transactions_for_day(MEDIUM.model_copy(), DAY))
    first_labels = labels_for_day(SMALL, DAY)
    forget_cache()
    assert_frame_equal(first_labels, labels_for_day(SMALL, DAY))


def test_a_day_does_not_depend_on_which_days_were_generated_before() -> None:
    day_a, day_b = DAY, DAY + dt.timedelta(days=40)
    alone = transactions_for_day(SMALL, day_a)
    labels_alone = labels_for_day(SMALL, day_a)
    forget_cache()
    transactions_for_day(SMALL, day_b)
    labels_for_day(SMALL, day_b)
    assert_frame_equal(alone, transactions_for_day(SMALL, day_a))
    assert_frame_equal(labels_alone, labels_for_day(SMALL, day_a))


def test_cached_and_uncached_generation_agree() -> None:
    for day in days(DAY, 3):
        cached = transactions_for_day(SMALL, day)
        assert_frame_equal(cached, generator._build_day(SMALL, day).drop("is_fraud"))


def test_seed_changes_the_data() -> None:
    other = SMALL.model_copy(update={"seed": SMALL.seed + 1})
    assert not transactions_for_day(SMALL, DAY).equals(transactions_for_day(other, DAY))


def test_scenario_list_defaults_are_not_shared() -> None:
    assert FraudGeneratorConfig().scenarios == []
    assert FraudGeneratorConfig().scenarios is not FraudGeneratorConfig().scenarios


# --- Schema and values -------------------------------------------------------------------------------------


def test_transactions_schema() -> None:
    frame = transactions_for_day(SMALL, DAY)
    assert frame.schema == pl.Schema(
        {
            "transaction_id": pl.String,
            "customer_id": pl.String,
            "merchant_category": pl.String,
            "amount": pl.Float64,
            "channel": pl.String,
            "country": pl.String,
            "ts": pl.Datetime("us"),
            "ingested_at": pl.Datetime("us"),
        }
    )
    assert frame.schema == pl.Schema(generator.TRANSACTIONS_SCHEMA)


def test_labels_schema() -> None:
    frame = labels_for_day(SMALL, DAY)
    assert frame.height > 0
    assert frame.schema == pl.Schema(
        {
            "transaction_id": pl.String,
            "customer_id": pl.String,
            "transaction_ts": pl.Datetime("us"),
            "amount": pl.Float64,
            "merchant_category": pl.String,
            "channel": pl.String,
            "country": pl.String,
            "is_fraud": pl.Int8,
            "confirmed_at": pl.Datetime("us"),
        }
    )
    assert frame.schema == pl.Schema(generator.LABELS_SCHEMA)
    assert set(frame["is_fraud"].unique()) <= {0, 1}


def test_transaction_values_are_plausible() -> None:
    frame = pl.concat([transactions_for_day(MEDIUM, day) for day in days(DAY, 3)])
    assert frame.null_count().sum_horizontal().item() == 0
    assert frame["transaction_id"].str.contains(r"^t\d{8}-\d{7}$").all()
    assert frame["customer_id"].str.contains(r"^c\d{6}$").all()
    customers = frame["customer_id"].str.slice(1).cast(pl.Int64)
    assert customers.min() >= 0 and customers.max() < MEDIUM.customers
    assert (frame["amount"] > 0).all()
    assert ((frame["amount"] * 100).round(6) == (frame["amount"] * 100).round(0)).all()
    assert set(frame["merchant_category"].unique()) == CATEGORIES
    assert set(frame["channel"].unique()) == {"online", "pos", "atm"}
    countries = frame["country"]
    assert countries.str.contains(r"^[A-Z]{2}$").all()
    # Most payments happen in the customer's home country, which is each customer's most common one.
    home = frame.group_by("customer_id").agg(pl.col("country").mode().first().alias("home"))
    at_home = frame.join(home, on="customer_id").select((pl.col("country") == pl.col("home")).mean())
    assert at_home.item() > 0.9


def test_timestamps_fall_within_the_day_and_ingestion_is_late_but_never_early() -> None:
    span = days(DAY, 3)
    for day in span:
        frame = transactions_for_day(MEDIUM, day)
        assert (frame["ts"].dt.date() == day).all()
        assert not frame["ts"].is_sorted()
    frame = pl.concat([transactions_for_day(MEDIUM, day) for day in span])
    delay = (frame["ingested_at"] - frame["ts"]).dt.total_seconds(fractional=True)
    assert (delay >= 0).all()
    assert delay.median() < 120
    late_share = (delay > 3_600).mean()
    assert 0.005 < late_share < 0.05


def test_transaction_ids_are_unique_across_days() -> None:
    ids = pl.concat([transactions_for_day(SMALL, day)["transaction_id"] for day in days(DAY, 20)])
    assert ids.n_unique() == ids.len()


def test_daily_count_varies_around_the_mean_with_a_weekly_pattern() -> None:
    config = SMALL.model_copy(update={"transactions_per_day": 2_000})
    counts = {day: transactions_for_day(config, day).height for day in days(DAY, 28)}
    mean = sum(counts.values()) / len(counts)
    assert abs(mean / config.transactions_per_day - 1) < 0.06
    assert len(set(counts.values())) > 20
    by_weekday = {w: sum(c for d, c in counts.items() if d.weekday() == w) for w in range(7)}
    assert by_weekday[5] > by_weekday[6]  # Saturday shopping beats Sunday


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    customers=st.integers(1, 50),
    per_day=st.integers(0, 300),
    offset=st.integers(-20_000, 20_000),
)
def test_transactions_invariants_hold_for_any_small_config(
    seed: int, customers: int, per_day: int, offset: int
) -> None:
    config = FraudGeneratorConfig(seed=seed, customers=customers, transactions_per_day=per_day)
    day = DAY + dt.timedelta(days=offset)
    frame = transactions_for_day(config, day)
    assert_frame_equal(frame, generator._build_day(config, day).drop("is_fraud"))
    assert frame["transaction_id"].n_unique() == frame.height
    assert (frame["ts"].dt.date() == day).all()
    assert (frame["ingested_at"] >= frame["ts"]).all()
    assert (frame["amount"] > 0).all()


# --- Fraud -------------------------------------------------------------------------------------------------


def test_fraud_rate_is_plausible() -> None:
    frame = with_fraud(FraudGeneratorConfig(), days(DAY, 14))
    assert 0.01 <= frame["is_fraud"].mean() <= 0.03


def test_fraud_is_learnable_from_request_fields() -> None:
    frame = with_fraud(MEDIUM, days(DAY, 14))
    stats = frame.group_by("is_fraud").agg(
        (pl.col("channel") == "online").mean().alias("online"),
        pl.col("merchant_category").is_in(["electronics", "travel", "online_retail"]).mean().alias("risky"),
        pl.col("amount").median().alias("median_amount"),
    )
    fraud = stats.filter(pl.col("is_fraud")).row(0, named=True)
    legit = stats.filter(~pl.col("is_fraud")).row(0, named=True)
    assert fraud["online"] > 0.7 > 0.5 > legit["online"]
    assert fraud["risky"] > 0.8 > 0.5 > legit["risky"]
    assert fraud["median_amount"] > 3 * legit["median_amount"]


def test_fraud_comes_in_per_customer_bursts() -> None:
    """Windowed features (count in the last hours per customer) must be able to see the fraud."""
    frame = with_fraud(MEDIUM, days(DAY, 7)).filter(pl.col("is_fraud"))
    bursts = frame.group_by("customer_id", pl.col("ts").dt.date()).agg(
        pl.len().alias("count"), (pl.col("ts").max() - pl.col("ts").min()).alias("span")
    )
    assert bursts["count"].mean() >= 3
    # One burst lasts at most two hours; a customer-day holds at most two bursts.
    single = bursts.filter(pl.col("count") >= 2)
    assert (single["span"] <= dt.timedelta(hours=2)).mean() > 0.6
    # A compromised card stays compromised for a few days, but only a small share of customers are hit.
    hit = frame["customer_id"].n_unique()
    assert 0 < hit < 0.1 * MEDIUM.customers
    assert frame.group_by("customer_id").agg(pl.col("ts").dt.date().n_unique())["ts"].max() > 1


def test_row_order_and_ids_do_not_reveal_fraud() -> None:
    frame = generator._build_day(MEDIUM, DAY).with_row_index("position")
    fraud_position = frame.filter(pl.col("is_fraud"))["position"].median() / frame.height
    assert 0.3 < fraud_position < 0.7


# --- Labels ------------------------------------------------------------------------------------------------


def test_every_transaction_is_labeled_exactly_once_within_the_delay_window() -> None:
    tx_days = days(DAY, 8)
    label_days = days(DAY, 8 + generator.LABEL_LOOKBACK_DAYS)
    truth = with_fraud(SMALL, tx_days)
    labels = []
    for day in label_days:
        frame = labels_for_day(SMALL, day)
        assert (frame["confirmed_at"].dt.date() == day).all()
        labels.append(frame)
    labeled = pl.concat(labels).filter(pl.col("transaction_id").is_in(truth["transaction_id"].implode()))

    assert labeled.height == truth.height
    assert labeled["transaction_id"].n_unique() == truth.height
    assert (labeled["confirmed_at"] > labeled["transaction_ts"]).all()

    joined = labeled.join(truth, on="transaction_id", validate="1:1")
    assert (joined["is_fraud"].cast(pl.Boolean) == joined["is_fraud_right"]).all()
    for column in ("customer_id", "amount", "merchant_category", "channel", "country"):
        assert (joined[column] == joined[f"{column}_right"]).all(), column
    assert (joined["transaction_ts"] == joined["ts"]).all()

    delay = joined.select(
        "is_fraud", delay=(pl.col("confirmed_at") - pl.col("transaction_ts")).dt.total_seconds() / 86_400
    )
    fraud, legit = delay.filter(pl.col("is_fraud") == 1), delay.filter(pl.col("is_fraud") == 0)
    assert fraud.height > 0
    assert fraud["delay"].min() >= 1 and fraud["delay"].max() <= 10
    assert legit["delay"].min() >= 3 and legit["delay"].max() <= 14


def test_labels_only_come_from_the_lookback_window() -> None:
    frame = labels_for_day(SMALL, DAY)
    tx_day = frame["transaction_ts"].dt.date()
    assert tx_day.min() >= DAY - dt.timedelta(days=generator.LABEL_LOOKBACK_DAYS)
    assert tx_day.max() < DAY
    assert frame["confirmed_at"].is_sorted()


# --- Scenarios ---------------------------------------------------------------------------------------------

START = DAY + dt.timedelta(days=3)


def with_scenario(scenario: generator.Scenario, base: FraudGeneratorConfig = MEDIUM) -> FraudGeneratorConfig:
    return base.model_copy(update={"scenarios": [scenario]})


@pytest.mark.parametrize(
    "scenario",
    [
        AmountShift(start=START),
        NewCategory(start=START),
        NullRise(start=START),
        ConceptDrift(start=START),
    ],
    ids=lambda s: s.kind,
)
def test_scenarios_change_nothing_before_their_start(scenario: generator.Scenario) -> None:
    config = with_scenario(scenario)
    for day in days(START - dt.timedelta(days=3), 3):
        assert_frame_equal(generator._build_day(config, day), generator._build_day(MEDIUM, day))
    assert not generator._build_day(config, START).equals(generator._build_day(MEDIUM, START))


def test_amount_shift_multiplies_amounts_from_its_start() -> None:
    config = with_scenario(AmountShift(start=START, factor=2.0))
    before = transactions_for_day(config, START - dt.timedelta(days=1))["amount"].median()
    after = transactions_for_day(config, START)["amount"].median()
    assert 1.8 < after / before < 2.2
    shifted = transactions_for_day(config, START)["amount"]
    base = transactions_for_day(MEDIUM, START)["amount"]
    assert ((shifted - 2 * base).abs() <= 0.011).all()


def test_new_category_appears_only_from_its_start() -> None:
    config = with_scenario(NewCategory(start=START, category="crypto_exchange", share=0.1))
    before = pl.concat([transactions_for_day(config, day) for day in days(DAY, 3)])
    assert "crypto_exchange" not in before["merchant_category"]
    for day in days(START, 3):
        share = (transactions_for_day(config, day)["merchant_category"] == "crypto_exchange").mean()
        assert 0.08 < share < 0.12


def test_null_rise_makes_the_column_arrive_null() -> None:
    config = with_scenario(NullRise(start=START, column="channel", rate=0.3))
    assert transactions_for_day(config, START - dt.timedelta(days=1))["channel"].null_count() == 0
    after = transactions_for_day(config, START)
    assert 0.27 < after["channel"].null_count() / after.height < 0.33
    assert after.drop("channel").null_count().sum_horizontal().item() == 0


def test_labels_carry_the_request_fields_as_they_were_including_nulls() -> None:
    config = with_scenario(NullRise(start=START, column="country", rate=0.5), base=SMALL)
    labels = labels_for_day(config, START + dt.timedelta(days=5))
    tx_day = labels["transaction_ts"].dt.date()
    assert labels.filter(tx_day < START)["country"].null_count() == 0
    assert labels.filter(tx_day >= START)["country"].null_count() > 0


def test_concept_drift_changes_the_fraud_profile() -> None:
    config = with_scenario(ConceptDrift(start=DAY + dt.timedelta(days=10)))
    before = with_fraud(config, days(DAY, 10))
    after = with_fraud(config, days(DAY + dt.timedelta(days=10), 10))

    def profile(frame: pl.DataFrame) -> dict[str, float]:
        fraud = frame.filter(pl.col("is_fraud"))
        legit_median = frame.filter(~pl.col("is_fraud"))["amount"].median()
        return {
            "pos": (fraud["channel"] == "pos").mean(),
            "relative_amount": fraud["amount"].median() / legit_median,
            "rate": frame["is_fraud"].mean(),
        }

    old, new = profile(before), profile(after)
    assert old["pos"] < 0.3 and new["pos"] > 0.7
    assert old["relative_amount"] > 3 and new["relative_amount"] < 1
    assert 0.01 <= new["rate"] <= 0.04


def test_several_scenarios_combine() -> None:
    config = MEDIUM.model_copy(
        update={
            "scenarios": [
                AmountShift(start=START, factor=2.0),
                NullRise(start=START, column="country", rate=0.1),
                NullRise(start=START, column="merchant_category", rate=0.1),
                NewCategory(start=START, share=0.2),
            ]
        }
    )
    frame = transactions_for_day(config, START)
    assert frame["country"].null_count() > 0
    assert frame["merchant_category"].null_count() > 0
    assert (frame["merchant_category"] == "crypto_exchange").sum() > 0


# --- Config validation -------------------------------------------------------------------------------------


def test_config_parses_scenarios_from_plain_data() -> None:
    config = FraudGeneratorConfig.model_validate(
        {
            "seed": 1,
            "scenarios": [
                {"kind": "amount_shift", "start": "2026-02-01", "factor": 1.2},
                {"kind": "new_category", "start": "2026-02-01"},
                {"kind": "null_rise", "start": "2026-02-01", "column": "channel"},
                {"kind": "concept_drift", "start": "2026-02-01"},
            ],
        }
    )
    assert [type(s) for s in config.scenarios] == [AmountShift, NewCategory, NullRise, ConceptDrift]
    assert config.scenarios[0].start == dt.date(2026, 2, 1)
    assert FraudGeneratorConfig.model_validate_json(config.model_dump_json()) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"windw": 3}, "Extra inputs are not permitted"),
        ({"customers": 0}, "greater than or equal to 1"),
        ({"transactions_per_day": -1}, "greater than or equal to 0"),
        ({"seed": -1}, "greater than or equal to 0"),
        (
            {"scenarios": [{"kind": "null_rise", "start": "2026-01-01", "rate": 1.5}]},
            "less than or equal to 1",
        ),
        ({"scenarios": [{"kind": "new_category", "start": "2026-01-01", "share": -0.1}]}, "greater than"),
        ({"scenarios": [{"kind": "amount_shift", "start": "2026-01-01", "factor": 0}]}, "greater than 0"),
        ({"scenarios": [{"kind": "null_rise", "start": "2026-01-01", "column": "amount"}]}, "column"),
        ({"scenarios": [{"kind": "concept_drift", "start": "2026-01-01", "windw": 1}]}, "Extra inputs"),
        ({"scenarios": [{"kind": "concept_drift"}]}, "start"),
        (
            {"scenarios": [{"kind": "meteor", "start": "2026-01-01"}]},
            "does not match any of the expected tags",
        ),
    ],
)
def test_invalid_configs_are_rejected_with_a_clear_error(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        FraudGeneratorConfig.model_validate(data)


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        SMALL.seed = 1  # type: ignore[misc]


def test_a_datetime_is_not_accepted_as_a_day() -> None:
    with pytest.raises(TypeError, match=r"datetime\.date"):
        transactions_for_day(SMALL, dt.datetime(2026, 1, 5, 12))


# --- Writing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", sorted(generator.TABLES))
def test_write_day_writes_a_readable_parquet_file(tmp_path: Path, table: str) -> None:
    path = tmp_path / "lake" / table / f"{DAY}.parquet"
    rows = write_day(SMALL, table, DAY, path)
    written = pl.read_parquet(path)
    assert rows == written.height > 0
    assert_frame_equal(written, generator.TABLES[table](SMALL, DAY))
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_write_day_replaces_atomically_and_cleans_up_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "transactions.parquet"
    write_day(SMALL, "transactions", DAY, path)
    before = path.read_bytes()

    def broken_write(self: pl.DataFrame, file: object, **kwargs: object) -> None:
        Path(str(file)).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_day(SMALL, "transactions", DAY + dt.timedelta(days=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_write_day_rejects_unknown_tables(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels, transactions"):
        write_day(SMALL, "predictions", DAY, tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()
