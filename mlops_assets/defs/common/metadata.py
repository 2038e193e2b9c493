"""Metadata written for people: schemas, markdown tables, Delta table facts."""

from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from mlops_assets.core.lake import TableDigest, table_version


def column_schema(frame_schema: pl.Schema, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(dtype), description=descriptions.get(name)) for name, dtype in frame_schema.items()
        ]
    )


def table_metadata(path: Path, frame: pl.DataFrame | TableDigest) -> dict[str, Any]:
    """What every Delta-backed asset records: rows, version, content hash, schema and location."""
    digest = frame if isinstance(frame, TableDigest) else TableDigest.of(frame)
    return {
        "dagster/row_count": digest.rows,
        "dagster/column_schema": column_schema(digest.schema),
        "dagster/uri": path.as_uri(),
        "delta_version": table_version(path),
        "content_hash": digest.hexdigest(),
    }


def links(urls: dict[str, str]) -> dict[str, dg.MetadataValue]:
    """URLs as metadata the UI shows as links: MLflow pages, the model card, the drift report."""
    return {name: dg.MetadataValue.url(url) for name, url in urls.items()}
