"""Metadata written for people: schemas, markdown tables, Delta table facts."""

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


def table_metadata(path: Path, frame: pl.DataFrame) -> dict[str, Any]:
    """What every Delta-backed asset records: rows, version, content hash, schema and location."""
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": column_schema(frame.schema),
        "dagster/uri": path.as_uri(),
        "delta_version": table_version(path),
        "content_hash": content_hash(frame),
    }
