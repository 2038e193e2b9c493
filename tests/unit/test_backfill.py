"""A range of days as one piece of work: read and validated at once, measured for splitting, summarized for people."""

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.app.runs import chunks
from mlops_assets.core.ingest.files import day_rows, read_day, read_days, source_files
from mlops_assets.core.ingest.validation import REASONS_COLUMN, Split
from mlops_assets.core.lake import PARTITION_COLUMN
from mlops_assets.defs.common.metadata import LISTED, rows_per_day
from mlops_assets.spec import load_specs
from tests.helpers import ORDERS, small_fraud_specs, write_day_files

START = date(2026, 3, 1)


def test_a_range_is_split_into_whole_days_of_at_most_the_limit_of_rows() -> None:
    assert chunks(START, [3, 3, 3], limit=10) == [(START, date(2026, 3, 3))]
    # A day that alone holds more than the limit is a run of its own; nothing is left out or repeated.
    assert chunks(START, [4, 4, 4, 20, 1], limit=8) == [
        (date(2026, 3, 1), date(2026, 3, 2)),
        (date(2026, 3, 3), date(2026, 3, 3)),
        (date(2026, 3, 4), date(2026, 3, 4)),
        (date(2026, 3, 5), date(2026, 3, 5)),
    ]
    assert chunks(START, [0, 0, 0], limit=1) == [(START, date(2026, 3, 3))]
    assert chunks(START, []) == []


@pytest.fixture
def orders(shop: tuple[Path, Path]):
    specs, data = shop
    (spec,) = load_specs(specs)
    return spec, data


def test_days_read_at_once_are_the_days_read_one_by_one(orders) -> None:
    spec, data = orders
    source = spec.sources["orders"]
    # A day whose file holds another day's events: they are quarantined for that day only.
    write_day_files(data, "orders", {"2026-03-04": ORDERS["2026-03-01"]})
    days = [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 4)]
    files = {day: source_files(source, data, day) for day in days}
    together = read_days(source, "orders", files, relative_to=data).split
    one_by_one = [read_day(source, "orders", files[day], day, relative_to=data).split for day in days]
    assert together.accepted.equals(pl.concat([s.accepted for s in one_by_one]))
    assert together.rejected.equals(pl.concat([s.rejected for s in one_by_one]))
    assert together.rejected.columns[-2:] == [REASONS_COLUMN, PARTITION_COLUMN]
    moved = together.rejected.filter(pl.col(PARTITION_COLUMN) == "2026-03-04")
    assert moved.height == 3
    assert all("event day 2026-03-01 is not the partition day 2026-03-04" in r for r in moved[REASONS_COLUMN])
    assert set(together.accepted[PARTITION_COLUMN]) == {"2026-03-01", "2026-03-02"}


def test_a_days_rows_are_counted_from_its_files_and_a_generator_writes_its_day_first(orders, tmp_path: Path) -> None:
    spec, data = orders
    assert day_rows(spec, data, date(2026, 3, 2)) == 5 + 2  # orders and returns of the day
    assert day_rows(spec, data, date(2026, 3, 9)) == 0  # no files yet
    (fraud, *_) = [s for s in load_specs(small_fraud_specs(tmp_path / "specs")) if s.name == "fraud"]
    generated = day_rows(fraud, tmp_path / "data", fraud.start_date)
    written = [p for s in fraud.sources.values() for p in source_files(s, tmp_path / "data", fraud.start_date)]
    assert written and generated == sum(pl.read_parquet(p).height for p in written)


def _split(days: list[str], rows: dict[str, int], rejected: dict[str, int]) -> Split:
    def frame(counts: dict[str, int]) -> pl.DataFrame:
        return pl.DataFrame(
            {PARTITION_COLUMN: [d for d, n in counts.items() for _ in range(n)]}, schema={PARTITION_COLUMN: pl.String}
        )

    return Split(frame(rows), frame(rejected))


def test_rows_per_day_are_a_table_for_a_month_and_a_summary_beyond() -> None:
    days = [f"2026-03-{d:02d}" for d in range(1, 4)]
    table = rows_per_day(_split(days, {"2026-03-01": 2, "2026-03-03": 1}, {"2026-03-03": 1}), days)
    assert table["partitions"].value.splitlines()[2:] == [
        "| 2026-03-01 | 2 | 0 |",
        "| 2026-03-02 | 0 | 0 |",
        "| 2026-03-03 | 1 | 1 |",
    ]
    # A backfill's metadata is copied to each of its days' materializations: it stays a few lines long.
    long = [str(date.fromordinal(START.toordinal() + i)) for i in range(LISTED + 40)]
    rows = {d: 3 for d in long[1:]}
    summary = rows_per_day(_split(long, rows, {long[5]: 2}), long)
    assert summary == {
        "partitions": f"{long[0]} .. {long[-1]} ({len(long)} days)",
        "rows_per_day": "min 0, median 3, max 3",
        "days_without_rows": long[0],
        "days_with_quarantined_rows": long[5],
    }
