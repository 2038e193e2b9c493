"""Row validation with pandera: split a frame into accepted rows and quarantined rows with their reasons."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

from mlops_assets.spec import ColumnSpec, ConstraintSpec

REASONS_COLUMN = "rejection_reasons"
POLARS_DTYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "datetime": pl.Datetime("us"),
    "date": pl.Date(),
}


@dataclass(frozen=True)
class Split:
    """Accepted and rejected rows of one input: `accepted.height + rejected.height` is the input's height."""

    accepted: pl.DataFrame
    rejected: pl.DataFrame

    @property
    def rejected_share(self) -> float:
        total = self.accepted.height + self.rejected.height
        return self.rejected.height / total if total else 0.0


def build_schema(name: str, columns: Mapping[str, ColumnSpec | ConstraintSpec]) -> pa.DataFrameSchema:
    """The pandera schema of declared columns: dtype (when declared), nullability, range and allowed values."""
    pandera_columns = {}
    for column, spec in columns.items():
        checks = []
        if spec.min is not None:
            checks.append(pa.Check.ge(spec.min))
        if spec.max is not None:
            checks.append(pa.Check.le(spec.max))
        if isinstance(spec, ColumnSpec) and spec.isin is not None:
            checks.append(pa.Check.isin(spec.isin))
        if isinstance(spec, ColumnSpec) and spec.max_length is not None:
            checks.append(pa.Check.str_length(max_value=spec.max_length))
        dtype = POLARS_DTYPES[spec.dtype] if isinstance(spec, ColumnSpec) else None
        pandera_columns[column] = pa.Column(dtype, checks=checks, nullable=spec.nullable)
    return pa.DataFrameSchema(pandera_columns, name=name, strict=False)


def split_valid(
    frame: pl.DataFrame,
    schema: pa.DataFrameSchema,
    prior_reasons: pl.Series | None = None,
    kept: pl.DataFrame | None = None,
) -> Split:
    """Validate every row; rows with any failure (or a prior reason) go to the rejected frame.

    `prior_reasons` holds reasons found before pandera ran (e.g. values that could not be parsed), one
    string or null per row. `kept` is what to keep of a rejected row (e.g. its raw text), row-aligned with
    `frame`; by default the row itself.
    """
    reasons = [prior_reasons] if prior_reasons is not None else []
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        table_level = cases.filter(pl.col("index").is_null())
        if table_level.height:
            details = "; ".join(f"{r['column']}: {r['check']}" for r in table_level.iter_rows(named=True))
            raise ValueError(f"{schema.name}: the table does not match its schema ({details})") from None
        per_row = (
            cases.with_columns(
                reason=pl.format("{}: {} (got {})", "column", "check", pl.col("failure_case").fill_null("null"))
            )
            .group_by("index")
            .agg(pl.col("reason").sort().str.join("; "))
        )
        reasons.append(
            pl.DataFrame({"index": pl.int_range(frame.height, dtype=pl.Int32, eager=True)})
            .join(per_row, on="index", how="left")
            .get_column("reason")
        )
    if not reasons:
        return Split(
            frame,
            _with_reasons((kept if kept is not None else frame).clear(), pl.Series([], dtype=pl.String)),
        )
    combined = pl.select(pl.concat_str(reasons, separator="; ", ignore_nulls=True).replace("", None)).to_series()
    bad = combined.is_not_null()
    source = kept if kept is not None else frame
    return Split(frame.filter(~bad), _with_reasons(source.filter(bad), combined.filter(bad)))


def _with_reasons(frame: pl.DataFrame, reasons: pl.Series) -> pl.DataFrame:
    return frame.with_columns(reasons.alias(REASONS_COLUMN))


def reason_counts(rejected: pl.DataFrame, n: int = 10) -> pl.DataFrame:
    """The most common kinds of failure (column and check, without the value) with their row counts."""
    return (
        rejected.select(pl.col(REASONS_COLUMN).str.split("; ").alias("reason"))
        .explode("reason")
        .with_columns(pl.col("reason").str.replace(r" \(got .*\)$", ""))
        .group_by("reason")
        .len("rows")
        .sort("rows", "reason", descending=[True, False])
        .head(n)
    )
