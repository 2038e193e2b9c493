"""Where a source's daily files are and how many rows they hold, without reading their values: what the CLI's
light commands (`mlops check`) and the runs' planning need, kept apart from ingestion's validation (pandera, pandas)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from mlops_assets.core.lake import Location, io_path, matching
from mlops_assets.spec import SourceSpec


class SourceDataError(ValueError):
    """A source file that cannot be ingested at all (missing, unreadable, or missing declared columns)."""


def day_location(source: SourceSpec, data_dir: Location, day: date | None) -> Location:
    """A day's path (or glob) of a source (every day's, for None): relative to the data folder, or to the lake's
    prefix in object storage (an absolute path stays a local one)."""
    relative = source.path.replace("{date}", day.isoformat() if day else "*")
    if isinstance(data_dir, Path):
        return data_dir / relative
    return Path(relative) if Path(relative).is_absolute() else data_dir / relative


def day_pattern(source: SourceSpec, data_dir: Location, day: date) -> str:
    return str(day_location(source, data_dir, day))


def every_day_files(source: SourceSpec, data_dir: Location) -> list[Location]:
    """The files of every day of a daily source (`{date}` in its path) there are, in day order."""
    return matching(day_location(source, data_dir, None))


def file_rows(path: Location, source: SourceSpec) -> int:
    """The rows of a source file, counted without reading its values (Parquet's footer; CSV's records)."""
    try:
        csv = source.file_format == "csv"
        scan = pl.scan_csv(io_path(path), infer_schema=False) if csv else pl.scan_parquet(io_path(path))
        return int(scan.select(pl.len()).collect().item())
    except Exception as exc:  # polars raises several error types for unreadable files; all mean the same here
        raise SourceDataError(f"{path}: cannot read as {source.file_format} ({exc})") from exc
