"""Metadata written for people: schemas, markdown tables, Delta table facts."""

from typing import Any

import dagster as dg
import polars as pl

from mlops_assets.core.ingest.validation import Split
from mlops_assets.core.lake import PARTITION_COLUMN, Location, TableDigest, table_version
from mlops_assets.core.markdown import markdown_table
from mlops_assets.core.pages import Page

# A run over a range records one materialization per day, each with the run's metadata: per-day lists are kept
# short, or a backfill's metadata grows with the square of its days (and so does the time to store it).
LISTED = 31


def column_schema(frame_schema: pl.Schema, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(dtype), description=descriptions.get(name)) for name, dtype in frame_schema.items()
        ]
    )


def table_metadata(path: Location, frame: pl.DataFrame | TableDigest) -> dict[str, Any]:
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


def page_metadata(name: str, page: Page) -> dict[str, dg.MetadataValue]:
    """A page a person opens (drift report, model card) as metadata: `name` is the link the UI opens (a file URL, or
    a presigned one with `<name>_link_expires`); on object storage `<name>_uri` says where it is, and when no link
    can be made `<name>_link` says why."""
    found: dict[str, dg.MetadataValue] = {}
    if page.url is not None:
        found[name] = dg.MetadataValue.url(page.url)
    if page.remote:
        found[f"{name}_uri"] = dg.MetadataValue.path(page.location)
    if page.expires is not None:
        found[f"{name}_link_expires"] = dg.MetadataValue.text(page.expires.isoformat(timespec="seconds"))
    if page.no_link is not None:
        found[f"{name}_link"] = dg.MetadataValue.text(page.no_link)
    return found


def rows_per_day(split: Split, days: list[str]) -> dict[str, Any]:
    """Accepted and quarantined rows of each day: a table for up to a month of days, a summary of a longer range."""

    def counted(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return frame.group_by(PARTITION_COLUMN).len(name)

    counts = (
        pl.DataFrame({PARTITION_COLUMN: days})
        .join(counted(split.accepted, "rows"), on=PARTITION_COLUMN, how="left")
        .join(counted(split.rejected, "rejected"), on=PARTITION_COLUMN, how="left")
        .fill_null(0)
    )
    if len(days) <= LISTED:
        table = counts.rename({PARTITION_COLUMN: "day"}).to_dicts()
        return {"partitions": dg.MetadataValue.md(markdown_table(table))}
    rows = pl.col("rows")
    low, middle, high = counts.select(rows.min().alias("min"), rows.median().alias("median"), rows.max()).row(0)
    empty = counts.filter(pl.col("rows") == 0).get_column(PARTITION_COLUMN).to_list()
    quarantined = counts.filter(pl.col("rejected") > 0).get_column(PARTITION_COLUMN).to_list()
    return {
        "partitions": f"{days[0]} .. {days[-1]} ({len(days)} days)",
        "rows_per_day": f"min {low:,}, median {middle:,.0f}, max {high:,}",
        "days_without_rows": listed(empty),
        "days_with_quarantined_rows": listed(quarantined),
    }


def listed(items: list[str]) -> str:
    """Items as one line, the first `LISTED` of them and how many more."""
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return ", ".join(items[:LISTED]) + more if items else "none"


def file_list(names: list[str]) -> dg.MetadataValue:
    """File names as a markdown list, the first `LISTED` of them and how many more."""
    more = [f"- and {len(names) - LISTED} more, through `{names[-1]}`"] if len(names) > LISTED else []
    return dg.MetadataValue.md("\n".join([*(f"- `{n}`" for n in names[:LISTED]), *more]))
