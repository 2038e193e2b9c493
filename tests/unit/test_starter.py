"""`mlops new`: the guesses a starter spec is made of, its daily files, and the errors for files it cannot use."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from mlops_assets.app.starter import (
    Starter,
    StarterError,
    guess_spec,
    label_candidate,
    read_events,
    render,
    write_days,
)
from mlops_assets.cli import main
from mlops_assets.core.models.modeling import targets
from mlops_assets.spec import load_spec, parse_duration

START = dt.datetime(2026, 3, 1)


def orders(rows: int = 600, days: int = 10, seed: int = 3) -> pl.DataFrame:
    """Orders of 40 users over `days` days; an order is returned (known 1 to 5 days later) mostly when it is big."""
    rng = np.random.default_rng(seed)
    ts = [START + dt.timedelta(minutes=int(m)) for m in np.sort(rng.integers(0, days * 1440, rows))]
    amount = np.round(rng.lognormal(3, 1, rows), 2)
    returned = (amount > np.quantile(amount, 0.7)) ^ (rng.random(rows) < 0.05)
    return pl.DataFrame(
        {
            "Order ID": [f"o{i}" for i in range(rows)],
            "User": [f"u{u:03d}" for u in rng.integers(0, 40, rows)],
            "amount": amount,
            "channel": rng.choice(["web", "app"], rows),
            "ts": ts,
            "returned": returned.astype(np.int64),
            "returned_at": [t + dt.timedelta(days=int(d)) for t, d in zip(ts, rng.integers(1, 6, rows), strict=True)],
        }
    )


def loans(customers: int = 30, days: int = 400, seed: int = 5) -> pl.DataFrame:
    """Car loans of `customers` customers, each taking one every 10 to 26 days (about 18 apart)."""
    rng = np.random.default_rng(seed)
    rows = []
    for customer in range(customers):
        day = float(rng.uniform(0, 20))
        while day < days:
            rows.append((f"c{customer:02d}", START + dt.timedelta(days=day), float(rng.lognormal(9, 0.5))))
            day += float(rng.uniform(10, 26))
    frame = pl.DataFrame(rows, schema=["customer_id", "taken_at", "amount"], orient="row").sort("taken_at")
    return frame.with_columns(repaid=(pl.col("amount") < 9000).cast(pl.Int64))


def used_columns(starter: Starter) -> set[str]:
    """The columns the starter spec uses: times, label, key, request id, request features and aggregated ones."""
    spec = starter.spec
    label = spec["label"]
    aggregated = {a.get("column") for view in spec["feature_views"].values() for a in view["aggregations"]}
    return {
        spec["sources"]["events"]["event_timestamp"],
        label["timestamp"],
        label["column"],
        *spec["entity"]["keys"],
        *([label["request_id"]] if "request_id" in label else []),
        *spec["request_features"],
        *(aggregated - {None}),
    }


def assert_every_column_accounted_for(starter: Starter, columns: list[str]) -> None:
    """Each column is used or left out with a reason, never both, never neither; the label and its time are no
    input, and no column named like another model's output is used."""
    spec, used = starter.spec, used_columns(starter)
    assert used | set(starter.left_out) == set(columns) and not used & set(starter.left_out)
    assert all(reason for reason in starter.left_out.values())
    label = spec["label"]
    aggregated = {a.get("column") for view in spec["feature_views"].values() for a in view["aggregations"]}
    for known_with_the_label in (label["column"], label["timestamp"]):
        assert known_with_the_label not in spec["request_features"] and known_with_the_label not in aggregated
    for column in columns:
        if any(word in column.split("_") for word in ("pred", "proba", "prediction", "probability", "score")):
            assert column not in used and "another model's output" in starter.left_out[column]


def test_the_guesses_name_the_key_the_times_the_label_and_the_types(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    orders().write_csv(path)
    frame = read_events(path)
    assert frame.columns[:2] == ["order_id", "user"]  # names made spec-safe
    starter = guess_spec("shop", frame, path)
    spec = starter.spec
    assert spec["entity"] == {"name": "user", "keys": ["user"]}
    assert spec["sources"]["events"]["event_timestamp"] == "ts" == starter.event_timestamp
    assert spec["label"] | {} == {
        "source": "events",
        "column": "returned",
        "timestamp": "returned_at",
        "prediction_timestamp": "ts",
        "feature_cutoff": "previous_day",
        "request_id": "order_id",
    }
    columns = spec["sources"]["events"]["columns"]
    assert columns["amount"] == {"dtype": "float", "nullable": False, "min": 0}
    assert columns["channel"]["isin"] == ["app", "web"] and "isin" not in columns["user"]
    assert set(spec["request_features"]) == {"amount", "channel"}
    assert spec["model"]["holdout"] == "2d" and spec["start_date"] == "2026-03-01"
    assert any(g.startswith("entity.keys: [user] (40 distinct values") for g in starter.guesses)


def test_a_time_that_repeats_per_entity_is_not_the_event_time() -> None:
    frame = orders()
    signed_up = {u: START - dt.timedelta(days=i) for i, u in enumerate(sorted(set(frame["User"])))}
    frame = frame.with_columns(pl.col("User").replace_strict(signed_up).alias("signed_up_at"))
    starter = guess_spec("shop", frame.rename({"User": "user"}), Path("orders.parquet"))
    assert starter.event_timestamp == "ts" and starter.spec["label"]["timestamp"] == "returned_at"


def test_the_daily_files_hold_every_event_once_and_timeless_ones_are_kept(tmp_path: Path) -> None:
    frame = orders(rows=100, days=3).with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("ts")).alias("ts")
    )
    days, timeless = write_days(frame, "ts", tmp_path / "events")
    assert timeless == 1 and pl.read_parquet(tmp_path / "events_without_a_time.parquet").height == 1
    assert list(days) == [dt.date(2026, 3, d) for d in (1, 2, 3)] and sum(days.values()) == 99
    for day, count in days.items():
        written = pl.read_parquet(tmp_path / "events" / f"{day}.parquet")
        assert written.height == count and (written["ts"].dt.date() == day).all()


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pl.DataFrame({"user_id": ["a", "a", "b"], "y": [0, 1, 0]}), "no column holds date-times"),
        (orders().select("Order ID", "User", "ts", "returned_at"), "no column can be the label"),
        (orders().with_columns(y_pred=pl.col("returned")).select("User", "ts", "y_pred"), "no column can be the"),
        (orders().drop("User", "channel"), "no column looks like an entity key"),
    ],
)
def test_a_file_that_cannot_make_a_spec_says_what_is_missing(frame: pl.DataFrame, message: str) -> None:
    with pytest.raises(StarterError, match=message):
        guess_spec("shop", frame, Path("events.parquet"))


def test_a_file_without_a_key_or_a_segment_is_told_the_two_ways_forward() -> None:
    """The columns a segment could be derived from, with their counts, or a pipeline of request features only, keyed
    by the id unique per event (`feature_views: {}` loads: tests/integration/test_materialize.py runs one)."""
    keyless = orders().drop("User", "channel").rename({"Order ID": "order_id"})
    keyless = keyless.with_columns(items=pl.int_range(pl.len()) % 4 + 1)
    with pytest.raises(StarterError) as refused:
        guess_spec("shop", keyless, Path("events.parquet"))
    message = str(refused.value)
    assert "no column looks like an entity key" in message
    assert "(1) a key: derive one from a column whose few values repeat, items (4 values, int)" in message
    assert "(2) a pipeline of request features only" in message
    assert "`entity: {name: event, keys: [order_id]}` (each event its own entity, order_id unique per event)" in message
    assert "`feature_views: {}`" in message
    with pytest.raises(StarterError, match="no column has at most 20 values to derive a segment from"):
        guess_spec("shop", keyless.drop("items"), Path("events.parquet"))


def test_mlops_new_writes_a_valid_spec_with_its_guesses_marked_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "orders.parquet"
    orders().write_parquet(path)
    specs, data = tmp_path / "specs", tmp_path / "data"
    cli = ["--specs", str(specs), "--data-dir", str(data)]
    result = CliRunner().invoke(main, [*cli, "new", "shop", "--from", str(path)])
    assert result.exit_code == 0, result.output
    assert "materialize shop --start 2026-03-01 --days 10" in result.output
    text = (specs / "shop.yaml").read_text()
    assert text.startswith("# Starter spec written by `mlops new`") and "# GUESSES to check and edit:" in text
    assert yaml.safe_load(text)["name"] == "shop" and load_spec(specs / "shop.yaml").label.column == "returned"
    assert len(list((data / "landing/shop/events").glob("*.parquet"))) == 10
    assert CliRunner().invoke(main, [*cli, "check"]).exit_code == 0

    again = CliRunner().invoke(main, [*cli, "new", "shop", "--from", str(path)])
    assert again.exit_code == 1 and "--force replaces it" in again.output
    missing = CliRunner().invoke(main, [*cli, "new", "other", "--from", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 1 and "nope.csv: no such file" in missing.output


@pytest.mark.parametrize(
    ("column", "values", "task", "strength"),
    [
        ("y", [0, 1, 1], "binary", 2),
        ("isFraud", [True, False], "binary", 2),
        ("approved", ["Yes", "No"], "binary", 2),
        ("y_true", ["a", "b", "c"], "multiclass", 2),
        ("repaid_loan_on_prev_car", [True, False], "binary", 1),  # a word of it says label, its name does not
        ("is_customer", [True, False], "binary", 1),
        ("salary_range", ["low", "mid", "high"], "multiclass", 0),  # no `y` hidden in it
        ("yearly_y_total", [1.5, 2.0, 7.0], "regression", 0),
        ("y_pred", [0.0, 1.0], "binary", 0),  # `y` is a whole name, never a prefix
        ("door_count", [3.0, 5.0], None, 0),  # two numbers that are not 0/1: no label
    ],
)
def test_label_names_match_whole_words_and_values_decide_the_task(
    column: str, values: list[object], task: str | None, strength: int
) -> None:
    candidate = label_candidate(pl.Series(column, values))
    assert (candidate and (candidate.task, candidate.strength)) == (task and (task, strength))


def test_another_models_outputs_are_left_out_and_every_column_is_accounted_for() -> None:
    frame = orders().with_columns(
        y_pred=pl.col("returned"),
        return_proba=pl.col("amount") / 1000,
        flagged=pl.col("amount") > 50,
        notes=pl.format("note {}", pl.col("Order ID")),
        constant=pl.lit(1),
    )
    starter = guess_spec("shop", frame, Path("orders.parquet"))
    assert starter.spec["label"]["column"] == "returned"
    assert_every_column_accounted_for(starter, frame.columns)
    assert "flagged" in starter.spec["request_features"]  # a boolean is an input like any other
    assert set(starter.left_out) == {"y_pred", "return_proba", "notes", "constant"}
    assert starter.left_out["constant"] == "a single value: nothing to learn"
    assert "left out: y_pred (named like another model's output ('pred'): never a label or a feature)" in (
        starter.guesses
    )
    candidates = next(g for g in starter.guesses if g.startswith("other label candidates"))
    assert "; amount (numbers, 580 distinct values → regression)" in candidates and "y_pred" not in candidates


def test_text_times_and_booleans_in_parquet_are_read_as_in_csv_and_a_zone_becomes_utc(tmp_path: Path) -> None:
    frame = orders(rows=200, days=5)
    local = "%Y-%m-%dT%H:%M:%S+02:00"
    text = frame.with_columns(
        pl.col("ts").dt.strftime(local),
        pl.col("returned_at").dt.strftime(local),
        pl.col("returned").replace_strict({1: "yes", 0: "no"}, return_dtype=pl.String),
    )
    text.write_parquet(tmp_path / "orders.parquet")
    text.write_csv(tmp_path / "orders.csv")
    events = read_events(tmp_path / "orders.parquet")
    assert events.equals(read_events(tmp_path / "orders.csv"))
    assert events.schema["ts"] == pl.Datetime("us") and events["returned"].dtype == pl.Boolean
    assert events["ts"].to_list() == [t - dt.timedelta(hours=2) for t in frame["ts"]]
    assert events.notes["ts"] == "text date-times in zone +02:00: converted to UTC"
    starter = guess_spec("shop", events, tmp_path / "orders.parquet")
    assert starter.spec["label"].items() >= {"column": "returned", "timestamp": "returned_at"}.items()
    assert starter.spec["model"]["task"] == "binary" and "returned: text no/yes read as booleans" in "\n".join(
        starter.guesses
    )
    assert any("returned is declared bool: ingest reads the text true/false and yes/no" in g for g in starter.guesses)
    assert targets(events["returned"], "binary").tolist() == frame["returned"].to_list()  # the label trains
    # Given the text itself, the label is declared bool all the same: ingest reads its yes/no.
    yes_no = frame.with_columns(pl.col("returned").replace_strict({1: "yes", 0: "no"}, return_dtype=pl.String))
    declared = guess_spec("shop", yes_no, Path("o.parquet")).spec["sources"]["events"]["columns"]["returned"]
    assert declared["dtype"] == "bool" and "isin" not in declared


def test_the_ttl_covers_nine_gaps_in_ten_and_the_windows_follow_the_median_gap(tmp_path: Path) -> None:
    frame = loans()
    starter = guess_spec("loans", frame, Path("loans.parquet"))
    view = starter.spec["feature_views"]["customer_activity"]
    gaps = frame.sort("customer_id", "taken_at").select(pl.col("taken_at").diff().over("customer_id")).to_series()
    gaps = gaps.drop_nulls()
    assert (gaps <= parse_duration(view["ttl"])).mean() >= 0.9
    assert (gaps <= dt.timedelta(days=7)).mean() == 0  # the old 7-day TTL nulled every feature
    assert view["ttl"] == "30d" and view["aggregations"][0]["windows"] == ["30d", "90d"]
    # More than 400 days: the holdout is 30 days, not a fifth of them, and the header says why.
    assert starter.spec["model"]["holdout"] == "30d"
    assert any(g.startswith("model.holdout: 30d (the most recent 30 of the ") for g in starter.guesses)
    (tmp_path / "loans.yaml").write_text(render(starter, Path("loans.parquet")))
    assert load_spec(tmp_path / "loans.yaml").model.holdout == "30d"  # type: ignore[union-attr]


def test_a_file_without_a_repeating_id_gets_a_segment_key_with_the_reason(tmp_path: Path) -> None:
    frame = orders().drop("User")
    starter = guess_spec("shop", frame, Path("orders.parquet"))
    assert starter.spec["entity"]["keys"] == ["channel"] and "channel" not in starter.spec["request_features"]
    key = next(g for g in starter.guesses if g.startswith("entity.keys: [channel] (no column repeats like an"))
    assert "stands in as a segment" in key and "add its id and make it the key" in key
    assert_every_column_accounted_for(starter, frame.columns)
    (tmp_path / "shop.yaml").write_text(render(starter, Path("orders.parquet")))
    assert load_spec(tmp_path / "shop.yaml").entity.keys == ["channel"]
