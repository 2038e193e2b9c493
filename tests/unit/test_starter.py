"""`mlops new`: the guesses a starter spec is made of, its daily files, and the errors for files it cannot use."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.spec import load_spec
from mlops_assets.starter import StarterError, guess_spec, read_events, write_days

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
        "feature_cutoff": "before",
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
        (orders().drop("returned"), "no column is binary"),
        (orders().drop("User"), "no column looks like an entity key"),
    ],
)
def test_a_file_that_cannot_make_a_spec_says_what_is_missing(frame: pl.DataFrame, message: str) -> None:
    with pytest.raises(StarterError, match=message):
        guess_spec("shop", frame, Path("events.parquet"))


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
