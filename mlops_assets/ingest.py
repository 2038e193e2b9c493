"""Reading a source's daily files: typed, checked against the spec, split into accepted and quarantined rows."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from mlops_assets import generator
from mlops_assets.lake import PARTITION_COLUMN
from mlops_assets.spec import PipelineSpec, SourceSpec
from mlops_assets.validation import POLARS_DTYPES, Split, build_schema, split_valid

SOURCE_FILE_COLUMN = "source_file"
SOURCE_ROW_COLUMN = "source_row"


class SourceDataError(ValueError):
    """A source file that cannot be ingested at all (missing, unreadable, or missing declared columns)."""


@dataclass(frozen=True)
class DayIngest:
    day: str
    files: list[Path]
    split: Split


def day_pattern(source: SourceSpec, data_dir: Path, day: date) -> str:
    return str(data_dir / source.path.replace("{date}", day.isoformat()))


def ensure_generated(spec: PipelineSpec, source_name: str, data_dir: Path, day: date) -> Path | None:
    """Write a generator source's file for `day` unless it exists; the generator is deterministic per day."""
    source = spec.sources[source_name]
    if source.generator is None:
        return None
    pattern = day_pattern(source, data_dir, day)
    if glob.has_magic(pattern):
        raise SourceDataError(f"sources.{source_name}.path: a generator source needs a plain file path, not a glob")
    path = Path(pattern)
    if not path.exists():
        gen_name, _, table = source.generator.partition(".")
        generator.write_day(spec.generators[gen_name], table, day, path)
    return path


def _read_file(path: Path, source: SourceSpec, source_name: str, name: str) -> pl.DataFrame:
    try:
        # CSV is read as text: types are applied per column below so a bad value rejects its row only.
        csv = source.file_format == "csv"
        frame = pl.read_csv(path, infer_schema=False) if csv else pl.read_parquet(path)
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
    )


def _typed(column: str, dtype: pl.DataType, current: pl.DataType) -> pl.Expr:
    col = pl.col(column)
    if current == dtype:
        return col
    if isinstance(dtype, pl.Datetime):
        if current == pl.String:
            return col.str.to_datetime(time_unit="us", strict=False)
        if isinstance(current, pl.Datetime) and current.time_zone is not None:
            return col.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(dtype)
    if dtype == pl.Date and current == pl.String:
        return col.str.to_date(strict=False)
    return col.cast(dtype, strict=False)


def ingest_day(
    source: SourceSpec, source_name: str, files: list[Path], day: date, relative_to: Path | None = None
) -> Split:
    """Type, check and split one day of a source; accepted + rejected rows = the rows of the files.

    Each row keeps the file it came from (relative to `relative_to`, so hashes do not depend on where the data
    folder is) and its row number in that file.
    """
    frames = [_read_file(p, source, source_name, _name(p, relative_to)) for p in files]
    meta = [SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN]
    raw = pl.concat([f.with_columns(pl.exclude(meta).cast(pl.String)) for f in frames]) if frames else None
    if raw is None:
        raise SourceDataError(f"no files for {day} (sources.{source_name}.path)")
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
    ts = pl.col(source.event_timestamp)
    reasons.append(
        pl.when(ts.is_not_null() & (ts.dt.date() != day)).then(
            pl.format(
                "{}: event day {} is not the partition day {}",
                pl.lit(source.event_timestamp),
                ts.dt.date(),
                pl.lit(day.isoformat()),
            )
        )
    )
    prior = typed.select(pl.concat_str(reasons, separator="; ", ignore_nulls=True).replace("", None)).to_series()
    schema = build_schema(f"sources.{source_name}", source.columns)
    partition = pl.lit(day.isoformat()).alias(PARTITION_COLUMN)
    split = split_valid(typed, schema, prior_reasons=prior, kept=raw)
    return Split(split.accepted.with_columns(partition), split.rejected.with_columns(partition))


def _name(path: Path, root: Path | None) -> str:
    return str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)


def source_files(source: SourceSpec, data_dir: Path, day: date) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(day_pattern(source, data_dir, day)))
