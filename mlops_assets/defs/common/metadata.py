"""Metadata written for people: schemas, markdown tables, Delta table facts."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from mlops_assets.lake import content_hash, table_version


def column_schema(frame_schema: pl.Schema, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(dtype), description=descriptions.get(name)) for name, dtype in frame_schema.items()
        ]
    )


def markdown_table(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    if not rows:
        return "_(none)_"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines)


def table_metadata(path: Path, frame: pl.DataFrame) -> dict[str, Any]:
    """What every Delta-backed asset records: rows, version, content hash, schema and location."""
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": column_schema(frame.schema),
        "dagster/uri": path.as_uri(),
        "delta_version": table_version(path),
        "content_hash": content_hash(frame),
    }
