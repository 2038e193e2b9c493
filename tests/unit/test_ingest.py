from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.core.ingest.files import ingest_day, read_day, source_files
from mlops_assets.core.ingest.paths import SourceDataError
from mlops_assets.core.ingest.validation import REASONS_COLUMN
from mlops_assets.spec import load_specs
from tests.helpers import ORDERS, write_day_files

DAY = date(2026, 3, 2)


@pytest.fixture
def orders(shop: tuple[Path, Path]):
    specs, data = shop
    (spec,) = load_specs(specs)
    return spec.sources["orders"], data


def test_bad_rows_are_quarantined_with_reasons_and_nothing_is_lost(orders) -> None:
    source, data = orders
    split = ingest_day(source, "orders", source_files(source, data, DAY), DAY, relative_to=data)
    assert split.accepted.height + split.rejected.height == 5
    assert split.accepted.get_column("amount").to_list() == [3.0, 2.0, 8.0]
    reasons = dict(zip(split.rejected["user_id"], split.rejected[REASONS_COLUMN], strict=True))
    assert "amount: cannot parse abc as float" in reasons["u2"]
    assert "amount: greater_than_or_equal_to(0" in reasons["u3"]
    assert "channel: isin" in reasons["u3"]
    # Rejected rows are kept as they were read (text), with the file and row they came from.
    assert split.rejected.filter(pl.col("user_id") == "u2")["amount"].item() == "abc"
    assert set(split.rejected["source_file"]) == {"landing/orders/2026-03-02.csv"}
    assert split.rejected["source_row"].to_list() == [1, 2]
    assert split.accepted.schema["ts"] == pl.Datetime("us")
    assert set(split.accepted["partition_date"]) == {"2026-03-02"}


def test_missing_column_names_file_and_column(orders, tmp_path: Path) -> None:
    source, data = orders
    write_day_files(data, "orders", {"2026-03-03": "user_id,amount,ts\nu1,1.0,2026-03-03T00:00:00\n"})
    with pytest.raises(SourceDataError, match=r"2026-03-03\.csv: missing column\(s\) \['channel'\]"):
        ingest_day(source, "orders", source_files(source, data, date(2026, 3, 3)), date(2026, 3, 3))


def test_events_of_another_day_are_quarantined(orders) -> None:
    source, data = orders
    write_day_files(data, "orders", {"2026-03-04": ORDERS["2026-03-01"]})
    split = ingest_day(source, "orders", source_files(source, data, date(2026, 3, 4)), date(2026, 3, 4))
    assert split.accepted.height == 0
    assert split.rejected.height == 3
    assert "ts: event day 2026-03-01 is not the partition day 2026-03-04" in split.rejected[REASONS_COLUMN][0]


def test_empty_day_gives_an_empty_partition_and_no_day_is_an_error(orders) -> None:
    source, data = orders
    write_day_files(data, "orders", {"2026-03-05": "user_id,amount,channel,ts\n"})
    split = ingest_day(source, "orders", source_files(source, data, date(2026, 3, 5)), date(2026, 3, 5))
    assert split.accepted.height == split.rejected.height == 0
    assert split.accepted.schema["amount"] == pl.Float64
    with pytest.raises(SourceDataError, match="no files for 2026-03-09"):
        ingest_day(source, "orders", source_files(source, data, date(2026, 3, 9)), date(2026, 3, 9))


def test_parquet_with_wrong_physical_types_is_typed_per_value(orders, tmp_path: Path) -> None:
    source, _ = orders
    path = tmp_path / "day.parquet"
    pl.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "amount": ["1.5", "n/a"],  # text where a float was declared
            "channel": ["web", "app"],
            "ts": pl.Series([datetime(2026, 3, 6, 1), datetime(2026, 3, 6, 23)]).dt.replace_time_zone("Europe/Paris"),
        }
    ).write_parquet(path)
    split = ingest_day(source.model_copy(update={"format": "parquet"}), "orders", [path], date(2026, 3, 6))
    assert split.accepted["amount"].to_list() == [1.5]
    assert "amount: cannot parse n/a as float" in split.rejected[REASONS_COLUMN][0]
    # Time zones are converted to naive UTC: 01:00 in Paris is 00:00 UTC, the same day.
    assert split.accepted["ts"].to_list() == [datetime(2026, 3, 6, 0)]
    assert read_day(source.model_copy(update={"format": "parquet"}), "orders", [path], DAY).time_zones == {
        "ts": ["Europe/Paris"]
    }


def test_csv_timestamps_with_a_utc_offset_are_stored_in_utc_and_their_offsets_recorded(orders) -> None:
    """Text with an offset is an instant (stored in UTC); text without one is taken as UTC, in the same file."""
    source, data = orders
    rows = [
        "u1,1.0,web,2026-03-07T12:00:00+02:00",
        "u2,2.0,app,2026-03-07 10:00:00",
        "u3,3.0,web,2026-03-07T10:30:00Z",
        "u4,4.0,web,2026-03-07 11:00:00.250-0530",
        # 01:00 at +02:00 is 23:00 UTC the day before: not an event of this partition.
        "u5,5.0,web,2026-03-07T01:00:00+02:00",
    ]
    write_day_files(data, "orders", {"2026-03-07": "user_id,amount,channel,ts\n" + "\n".join(rows) + "\n"})
    read = read_day(source, "orders", source_files(source, data, date(2026, 3, 7)), date(2026, 3, 7))
    assert read.split.accepted.schema["ts"] == pl.Datetime("us")
    assert read.split.accepted["ts"].to_list() == [
        datetime(2026, 3, 7, 10),
        datetime(2026, 3, 7, 10),
        datetime(2026, 3, 7, 10, 30),
        datetime(2026, 3, 7, 16, 30, 0, 250_000),
    ]
    (reason,) = read.split.rejected[REASONS_COLUMN]
    assert "event day 2026-03-06 is not the partition day 2026-03-07" in reason
    assert read.time_zones == {"ts": ["+00:00", "+02:00", "-0530"]}


def test_unreadable_file_is_named(orders, tmp_path: Path) -> None:
    source, _ = orders
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(SourceDataError, match=r"broken\.parquet: cannot read as parquet"):
        ingest_day(source.model_copy(update={"format": "parquet"}), "orders", [path], date(2026, 3, 6))


@pytest.mark.parametrize("stored", ["csv", "parquet"])
def test_a_declared_bool_column_reads_yes_no_true_false_and_0_1_and_quarantines_anything_else(
    tmp_path: Path, stored: str
) -> None:
    """A binary label stored as text (yes/no, in any case) or as 0.0/1.0 floats ingests as a boolean."""
    from mlops_assets.spec import ColumnSpec, SourceSpec

    source = SourceSpec(
        path=f"landing/loans/{{date}}.{stored}",
        event_timestamp="ts",
        columns={"ts": ColumnSpec(dtype="datetime"), "repaid": ColumnSpec(dtype="bool")},
    )
    texts = ["Yes", "no", "TRUE", "f", "1", "0", " y ", "maybe", None]
    values = {"csv": texts, "parquet": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 2.0, None]}[stored]
    frame = pl.DataFrame({"ts": [datetime(2026, 3, 2, h) for h in range(len(texts))], "repaid": values})
    path = tmp_path / "landing" / "loans" / f"2026-03-02.{stored}"
    path.parent.mkdir(parents=True)
    frame.write_csv(path) if stored == "csv" else frame.write_parquet(path)
    split = ingest_day(source, "loans", [path], DAY)
    assert split.accepted["repaid"].to_list() == [True, False, True, False, True, False, True, None]
    (reason,) = split.rejected[REASONS_COLUMN]
    assert f"repaid: cannot parse {'maybe' if stored == 'csv' else '2.0'} as bool" in reason
