"""The offline store: Delta tables under the data folder, written atomically, replaced a partition at a time."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence
from pathlib import Path

import deltalake
import polars as pl

PARTITION_COLUMN = "partition_date"
# A replace that loses a race with another writer of the same partitions is re-committed: it replaces them whole.
COMMIT_ATTEMPTS = 8
_HASH_SEEDS = (0x6D6C6F70, 0x73617373)


class TableNotFoundError(FileNotFoundError):
    """A table that a step reads has never been written (its asset was not materialized)."""


def table_path(root: Path, pipeline: str, table: str) -> Path:
    """Where a pipeline's table lives: one name for the asset, the table and the folder."""
    return root / "lake" / pipeline / table


def table_version(path: Path) -> int | None:
    try:
        return deltalake.DeltaTable(str(path)).version()
    except deltalake.exceptions.TableNotFoundError:
        return None


def replace_partitions(path: Path, frame: pl.DataFrame, days: Sequence[str]) -> int:
    """Replace exactly the given daily partitions with `frame`, in one Delta commit; returns the new version.

    Re-running the same days gives the same table: rows of those days are removed and written in the same
    commit, so readers see the old partitions or the new ones, never a mix or a duplicate. Writers of other
    partitions commit side by side; a concurrent writer of the same partitions makes Delta refuse one commit, which
    is then retried (with jitter): the last commit wins whole.
    """
    outside = frame.filter(~pl.col(PARTITION_COLUMN).is_in(list(days))).height
    if outside:
        raise ValueError(f"{outside} rows of {path.name} fall outside the partitions being replaced")
    quoted = ", ".join(f"'{d}'" for d in days)
    data = frame.to_arrow()
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            deltalake.write_deltalake(
                str(path),
                data,
                mode="overwrite",
                predicate=f"{PARTITION_COLUMN} IN ({quoted})",
                partition_by=[PARTITION_COLUMN],
                # Additive evolution only (a new column, e.g. in the prediction log): older partitions read it as null.
                schema_mode="merge",
            )
            break
        except deltalake.exceptions.CommitFailedError:
            if attempt == COMMIT_ATTEMPTS:
                raise
            time.sleep(random.uniform(0.01, 0.05) * attempt)
    return deltalake.DeltaTable(str(path)).version()


def overwrite_table(path: Path, frame: pl.DataFrame) -> int:
    """Replace a whole (unpartitioned) table in one commit, schema included; returns the new version."""
    deltalake.write_deltalake(str(path), frame.to_arrow(), mode="overwrite", schema_mode="overwrite")
    return deltalake.DeltaTable(str(path)).version()


def scan_table(path: Path, days: Sequence[str] | None = None) -> pl.LazyFrame:
    """Lazily read a table, pruned to the given daily partitions when they are named."""
    if table_version(path) is None:
        raise TableNotFoundError(f"Delta table {path} does not exist yet: materialize its asset first")
    frame = pl.scan_delta(str(path))
    if days is not None:
        frame = frame.filter(pl.col(PARTITION_COLUMN).is_in(list(days)))
    return frame


def content_hash(frame: pl.DataFrame) -> str:
    """An order-independent hash of a frame's rows and column names (stable for one polars version)."""
    if frame.width == 0:
        return "0" * 64
    parts = [
        frame.hash_rows(seed=_HASH_SEEDS[0]).sum(),
        frame.hash_rows(seed=_HASH_SEEDS[1]).sum(),
        frame.height,
        hash_text(",".join(f"{n}:{t}" for n, t in frame.schema.items())),
    ]
    return "".join(f"{int(p) & 0xFFFFFFFFFFFFFFFF:016x}" for p in parts)


def hash_text(text: str) -> int:
    """A stable 64-bit hash of a string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
