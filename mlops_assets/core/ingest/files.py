"""Reading a source's daily files: typed, checked against the spec, split into accepted and quarantined rows."""

from __future__ import annotations

import glob
import itertools
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from mlops_assets.core.ingest.paths import SourceDataError, day_location, file_rows
from mlops_assets.core.ingest.validation import POLARS_DTYPES, Split, build_schema, split_valid
from mlops_assets.core.lake import PARTITION_COLUMN, Location, io_path, matching
from mlops_assets.spec import TEXT_BOOLEANS, PipelineSpec, SourceSpec

SOURCE_FILE_COLUMN = "source_file"
SOURCE_ROW_COLUMN = "source_row"


# Text that ends in a UTC offset (`Z`, `+02`, `+0200`, `+02:00`) after a time: read as an instant, stored in UTC.
_OFFSET = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
_OFFSET_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"


@dataclass(frozen=True)
class DayIngest:
    """Days of a source: their rows split, and the time zones their timestamps were converted to UTC from."""

    split: Split
    time_zones: dict[str, list[str]]


def ensure_generated(spec: PipelineSpec, source_name: str, data_dir: Location, day: date) -> Location | None:
    """Write a generator source's file for `day` unless it exists; the generator is deterministic per day."""
    source = spec.sources[source_name]
    if source.generator is None:
        return None
    path = day_location(source, data_dir, day)
    if glob.has_magic(str(path)):
        raise SourceDataError(f"sources.{source_name}.path: a generator source needs a plain file path, not a glob")
    if not path.exists():
        gen_name, _, table = source.generator.partition(".")
        generator = spec.generators[gen_name]
        if isinstance(path, Path):
            generator.load()(generator.params, table, day, path)
        else:  # a generator writes a local file: the object is uploaded whole once it is written
            with tempfile.TemporaryDirectory() as folder:
                local = Path(folder) / path.name
                generator.load()(generator.params, table, day, local)
                path.write_bytes(local.read_bytes())
    return path


def _read_file(path: Location, source: SourceSpec, source_name: str, name: str, day: date) -> pl.DataFrame:
    try:
        # CSV is read as text: types are applied per column below so a bad value rejects its row only.
        csv = source.file_format == "csv"
        frame = pl.read_csv(io_path(path), infer_schema=False) if csv else pl.read_parquet(io_path(path))
    except Exception as exc:  # polars raises several error types for unreadable files; all mean the same here
        raise SourceDataError(f"{path}: cannot read as {source.file_format} ({exc})") from exc
    missing = [c for c in source.columns if c not in frame.columns]
    if missing:
        raise SourceDataError(
            f"{path}: missing column(s) {missing} declared in sources.{source_name}.columns "
            f"(the file has {frame.columns})"
        )
    return frame.select(list(source.columns)).with_columns(
        pl.lit(name).alias(SOURCE_FILE_COLUMN),
        pl.int_range(pl.len(), dtype=pl.Int64).alias(SOURCE_ROW_COLUMN),
        pl.lit(day.isoformat()).alias(PARTITION_COLUMN),
    )


def _typed(column: str, dtype: pl.DataType, current: pl.DataType) -> pl.Expr:
    col = pl.col(column)
    if current == dtype:
        return col
    if isinstance(dtype, pl.Datetime):
        if current == pl.String:
            return _parse_datetime(col).cast(dtype)
        if isinstance(current, pl.Datetime) and current.time_zone is not None:
            return col.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(dtype)
    if dtype == pl.Date and current == pl.String:
        return col.str.to_date(strict=False)
    if dtype == pl.Boolean and current == pl.String:
        # Text booleans as people write them; anything else is unparsable, so its row is quarantined with the reason.
        return col.str.strip_chars().str.to_lowercase().replace_strict(TEXT_BOOLEANS, default=None, return_dtype=dtype)
    if dtype == pl.Boolean and current.is_numeric():
        return pl.when((col == 0) | (col == 1)).then(col.cast(dtype))  # 0/1 only: a 2 is no boolean, not true
    return col.cast(dtype, strict=False)


def _parse_datetime(text: pl.Expr) -> pl.Expr:
    """Timestamps as text: with a UTC offset, the instant in naive UTC; without one, as written (taken as UTC).

    The two kinds are parsed apart, so that a file mixing them never has its format guessed from the other kind.
    """
    iso = text.str.replace(r"[Zz]$", "+00:00").str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T")
    offset = text.str.contains(_OFFSET)
    aware = pl.when(offset).then(iso).str.to_datetime(_OFFSET_FORMAT, time_unit="us", time_zone="UTC", strict=False)
    naive = pl.when(~offset).then(text).str.to_datetime(time_unit="us", strict=False)
    return pl.coalesce(aware.dt.replace_time_zone(None), naive)


def _time_zones(frame: pl.DataFrame, source: SourceSpec) -> dict[str, list[str]]:
    """Per declared datetime column, the zones (Parquet) or UTC offsets (text) its values were converted from."""
    zones: dict[str, list[str]] = {}
    for column, spec in source.columns.items():
        current = frame.schema[column]
        if spec.dtype != "datetime":
            continue
        if isinstance(current, pl.Datetime) and current.time_zone is not None:
            zones[column] = [current.time_zone]
        elif current == pl.String:
            found = frame.select(
                pl.col(column).filter(pl.col(column).str.contains(_OFFSET)).str.extract(r"([Zz]|[+-][\d:]+)$")
            )
            offsets = sorted({"+00:00" if o in ("Z", "z") else o for o in found.to_series().unique().to_list()})
            if offsets:
                zones[column] = offsets
    return zones


def ingest_day(
    source: SourceSpec, source_name: str, files: list[Location], day: date, relative_to: Location | None = None
) -> Split:
    """Type, check and split one day of a source; accepted + rejected rows = the rows of the files (see `read_days`)."""
    return read_day(source, source_name, files, day, relative_to).split


def read_day(
    source: SourceSpec, source_name: str, files: list[Location], day: date, relative_to: Location | None = None
) -> DayIngest:
    """One day of a source (see `read_days`)."""
    return read_days(source, source_name, {day: files}, relative_to)


def read_days(
    source: SourceSpec,
    source_name: str,
    files: Mapping[date, Sequence[Location]],
    relative_to: Location | None = None,
) -> DayIngest:
    """Type, check and split days of a source, each day's files given; accepted + rejected rows = the files' rows.

    A range of days is typed and validated at once (per-day work would cost a fixed overhead per day). Each row
    keeps the file it came from (relative to `relative_to`, so hashes do not depend on where the data folder is),
    its row number in that file and its day in `partition_date`; an event whose time is on another day is
    rejected. Time-zone-aware timestamps (a Parquet zone, or text with a UTC offset) are stored as naive UTC, like
    every timestamp of the lake; the zones they came in are returned.
    """
    missing = [str(day) for day, paths in files.items() if not paths]
    if missing:
        raise SourceDataError(f"no files for {', '.join(missing)} (sources.{source_name}.path)")
    read = [_read_file(p, source, source_name, _name(p, relative_to), d) for d, paths in files.items() for p in paths]
    # Files of one schema (the usual case: one writer) are typed as one frame; runs keep the files' order.
    frames = [pl.concat(list(group)) for _, group in itertools.groupby(read, key=lambda f: f.schema)]
    meta = [SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN, PARTITION_COLUMN]
    raw = pl.concat([f.with_columns(pl.exclude(meta).cast(pl.String)) for f in frames])
    typed = pl.concat(
        [
            f.select(
                *[_typed(c, POLARS_DTYPES[s.dtype], f.schema[c]).alias(c) for c, s in source.columns.items()],
                *meta,
            )
            for f in frames
        ]
    )
    reasons = [
        pl.when(pl.col(c).is_null() & raw_col.is_not_null()).then(
            pl.format("{}: cannot parse {} as {}", pl.lit(c), raw_col, pl.lit(s.dtype))
        )
        for c, s in source.columns.items()
        for raw_col in [pl.lit(raw.get_column(c))]
    ]
    ts, day = pl.col(source.event_timestamp), pl.col(PARTITION_COLUMN)
    reasons.append(
        pl.when(ts.is_not_null() & (ts.dt.date().cast(pl.String) != day)).then(
            pl.format("{}: event day {} is not the partition day {}", pl.lit(source.event_timestamp), ts.dt.date(), day)
        )
    )
    prior = typed.select(pl.concat_str(reasons, separator="; ", ignore_nulls=True).replace("", None)).to_series()
    split = split_valid(typed, build_schema(f"sources.{source_name}", source.columns), prior_reasons=prior, kept=raw)
    return DayIngest(
        # Quarantined rows keep the column order of the tables already written: the reasons, then the partition.
        Split(split.accepted, split.rejected.select(pl.exclude(PARTITION_COLUMN), PARTITION_COLUMN)),
        merged_time_zones(_time_zones(frame, source) for frame in frames),
    )


def merged_time_zones(parts: Iterable[dict[str, list[str]]]) -> dict[str, list[str]]:
    """Per column, every zone or UTC offset its timestamps came in, over files or days."""
    zones: dict[str, set[str]] = {}
    for part in parts:
        for column, found in part.items():
            zones.setdefault(column, set()).update(found)
    return {column: sorted(found) for column, found in sorted(zones.items())}


def _name(path: Location, root: Location | None) -> str:
    if isinstance(path, Path) and isinstance(root, Path):
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    # In object storage, the name a local data folder gives: rows hash alike wherever the lake is.
    return str(path) if root is None else str(path).removeprefix(f"{root}/")


def source_files(source: SourceSpec, data_dir: Location, day: date) -> list[Location]:
    return matching(day_location(source, data_dir, day))


def day_rows(spec: PipelineSpec, data_dir: Location, day: date) -> int:
    """The rows of a day in every source's files, what a run of the day reads: a generator source's file is written
    first, as the run would; a day whose files have not arrived has none."""
    rows = 0
    for name, source in spec.sources.items():
        ensure_generated(spec, name, data_dir, day)
        rows += sum(file_rows(path, source) for path in source_files(source, data_dir, day))
    return rows
