"""Personal data in what serving writes: the spec's PII request fields dropped or replaced by a keyed hash before a
prediction's record exists, and the prediction log's days past their retention deleted for good.

The hash is HMAC-SHA256 under a key read from the environment variable the spec names (`serving.pii.hash_key_env`)
when the service starts: equal values give equal hashes (a person's requests can still be counted together), the
value cannot be read back or confirmed without the key, and the key is written nowhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import deltalake

from mlops_assets.core.lake import PARTITION_COLUMN, Location, table_version
from mlops_assets.spec import PipelineSpec, parse_duration

HASH_PREFIX = "hmac-sha256:"
LOG_RETENTION = "delta.logRetentionDuration"


class PiiKeyMissing(ValueError):
    """The spec hashes a field, and the variable that should hold the key is unset or empty."""


@dataclass(frozen=True)
class PiiRule:
    """What becomes of each PII field of a request before it is written: dropped, or its keyed hash."""

    drop: frozenset[str] = frozenset()
    hashed: frozenset[str] = frozenset()
    key: bytes = field(default=b"", repr=False)  # never shown, logged or stored

    @classmethod
    def of(cls, spec: PipelineSpec, environ: Mapping[str, str]) -> PiiRule:
        """The spec's rule with its key from `environ`; a hashed field without a key is refused (PiiKeyMissing),
        so the service fails when it starts, not at its first request."""
        pii = spec.serving.pii
        if pii is None:
            return cls()
        drop = frozenset(n for n, action in pii.fields.items() if action == "drop")
        hashed = frozenset(n for n, action in pii.fields.items() if action == "hash")
        key = environ.get(pii.hash_key_env, "")
        if hashed and not key:
            raise PiiKeyMissing(
                f"{spec.name}: serving.pii.fields hashes {sorted(hashed)}, but the key's environment variable "
                f"{pii.hash_key_env} (serving.pii.hash_key_env) is not set: set it to a secret of your own (the same "
                "one on every worker and restart, so equal values keep equal hashes)"
            )
        return cls(drop, hashed, key.encode())

    def __bool__(self) -> bool:
        return bool(self.drop or self.hashed)

    def scrub(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        """`values` (a request, a feature vector) with the PII fields dropped or hashed; a null stays null. Without
        PII fields, `values` itself: every answer's record passes here."""
        if not self:
            return values
        return {
            name: self.pseudonym(value) if name in self.hashed and value is not None else value
            for name, value in values.items()
            if name not in self.drop
        }

    def pseudonym(self, value: Any) -> str:
        text = json.dumps(value, sort_keys=True, default=str)
        return HASH_PREFIX + hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Purged:
    """What one retention pass removed."""

    cutoff: date  # days before it were removed
    log_days: list[str]  # day folders of JSON-lines batches deleted
    table_days: list[str]  # Delta partitions deleted
    vacuumed_files: int  # data files physically removed by the vacuum


def retention_cutoff(retention: str, today: date) -> date:
    """The first day kept: `retention` of days back from `today` (today included)."""
    return today - timedelta(days=parse_duration(retention) // timedelta(days=1) - 1)


def purge_prediction_log(folder: Location, table: Location, cutoff: date) -> Purged:
    """Delete the log's day folders and the Delta table's partitions before `cutoff`, then vacuum so the deleted
    partitions' files are gone from disk (not merely unreferenced, as a Delta delete leaves them)."""
    log_days = []
    days: list[Location] = sorted(folder.iterdir(), key=lambda f: f.name) if folder.is_dir() else []
    for day_folder in days:
        day = _day(day_folder.name)
        if day_folder.is_dir() and day is not None and day < cutoff:
            if isinstance(day_folder, Path):
                shutil.rmtree(day_folder)
            else:  # a prefix in object storage: every object under it
                day_folder.fs.rm(day_folder.path, recursive=True)
            log_days.append(day_folder.name)
    table_days: list[str] = []
    vacuumed = 0
    if table_version(table) is not None:
        delta = deltalake.DeltaTable(str(table))
        old = f"{PARTITION_COLUMN} < '{cutoff.isoformat()}'"
        table_days = sorted(
            {str(p[PARTITION_COLUMN]) for p in delta.partitions() if str(p[PARTITION_COLUMN]) < cutoff.isoformat()}
        )
        if table_days:
            delta.delete(old)
        # Retention 0: every file no longer in the table goes now (older versions of the log are never read).
        # Not `full`: a file another writer has written but not yet committed must stay.
        removable = delta.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=True)
        vacuumed = sum((table / name).exists() for name in removable)  # a file vacuumed before stays listed
        delta.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
        if table_days:
            _forget_history(delta)
        # Object storage has no folders: a partition's prefix is gone with its last file.
        for partition in table.glob(f"{PARTITION_COLUMN}=*") if isinstance(table, Path) else []:
            if partition.name.partition("=")[2] < cutoff.isoformat() and not any(partition.iterdir()):
                partition.rmdir()
    return Purged(cutoff, log_days, table_days, vacuumed)


def _forget_history(delta: deltalake.DeltaTable) -> None:
    """Remove the commit files before a new checkpoint: each commit records its data files' smallest and largest
    values (statistics for skipping files), so the deleted days' values would otherwise stay in the table's log."""
    if delta.metadata().configuration.get(LOG_RETENTION) != "interval 0 days":
        delta.alter.set_table_properties({LOG_RETENTION: "interval 0 days"})
    delta.create_checkpoint()
    delta.cleanup_metadata()


def _day(name: str) -> date | None:
    try:
        return date.fromisoformat(name)
    except ValueError:
        return None
