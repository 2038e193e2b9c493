"""What the looking commands (`mlops status`, `report`) read from the registry: live aliases, each live version's
tags and creation time, and the holdout metrics of the run that trained it.

On the embedded store (an SQLite file this MLflow wrote, at the schema revision it writes) they are read with
sqlite3, read-only, in milliseconds: importing MLflow alone costs one to two seconds of CPU. Anywhere else (a
tracking server, another database, a store at another revision, MLflow workspaces) the same answers come from
MLflow's client (`ModelRegistry`): `app.workspace.registry_reader` chooses. tests/integration/test_registry.py
holds both readers equal on one registry.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

from mlops_assets.core.models.aliases import APPROVED_BY_TAG, CHAMPION, TRAINED_BY_TAG

# The schema revision MLflow 3.17.2 migrates a SQLite store to (its alembic head); a test holds it equal to the
# installed MLflow's, so an upgrade that changes the schema cannot go unnoticed.
MLFLOW_SCHEMA_REVISION = "dc11669786a5"
DELETED_STAGE = "Deleted_Internal"  # MLflow's mark for a deleted version, which its client never returns


@dataclass(frozen=True)
class LiveVersion:
    version: str
    created_ms: int  # the version's creation time, milliseconds since the epoch
    tags: dict[str, str]
    metrics: dict[str, float]  # the training run's latest value of each metric


class RegistryReader(Protocol):
    def aliases(self, name: str) -> dict[str, str]: ...

    def live_version(self, name: str, version: str) -> LiveVersion: ...


def direct_reader(tracking_uri: str) -> SqliteRegistryReader | None:
    """The direct reader where it reads what MLflow's client would; None where only MLflow's client can."""
    path = sqlite_path(tracking_uri)
    workspaces = os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in ("1", "true") or os.environ.get(
        "MLFLOW_WORKSPACE"
    )
    if path is None or workspaces:
        return None
    direct = SqliteRegistryReader(path)
    return direct if not path.exists() or direct.revision() == MLFLOW_SCHEMA_REVISION else None


class SqliteRegistryReader:
    """The embedded store read directly (see the module's docstring for when it is used)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []  # nothing registered yet (MLflow's client would create the file; a look never writes)
        with sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True) as db:
            return db.execute(query, args).fetchall()

    def revision(self) -> str | None:
        try:
            rows = self._rows("SELECT version_num FROM alembic_version")
        except sqlite3.DatabaseError:
            return None
        return str(rows[0][0]) if len(rows) == 1 else None

    def aliases(self, name: str) -> dict[str, str]:
        rows = self._rows(
            "SELECT alias, version FROM registered_model_aliases WHERE workspace = 'default' AND name = ?", name
        )
        return {alias: str(version) for alias, version in rows}

    def live_version(self, name: str, version: str) -> LiveVersion:
        where = "workspace = 'default' AND name = ? AND version = ?"
        found = self._rows(
            f"SELECT creation_time, run_id FROM model_versions WHERE {where} AND current_stage != ?",
            name,
            int(version),
            DELETED_STAGE,
        )
        if not found:
            raise LookupError(f"model {name!r} has no version {version!r}")
        created, run_id = found[0]
        tags = dict(self._rows(f"SELECT key, value FROM model_version_tags WHERE {where}", name, int(version)))
        metrics = self._rows("SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", run_id)
        return LiveVersion(
            version,
            int(created),
            {k: "" if v is None else str(v) for k, v in tags.items()},
            {key: math.nan if is_nan else float(value) for key, value, is_nan in metrics},
        )


def sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a `sqlite:///` tracking URI, None for any other store."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or "?" in tracking_uri:
        return None
    return Path(unquote(tracking_uri[len(prefix) :]))


def live_status(reader: RegistryReader, name: str, metrics: Sequence[str]) -> dict[str, dict[str, Any]]:
    """champion/challenger -> version, since when (a champion: since its promotion) and its holdout `metrics`."""
    report = {}
    for alias, version in sorted(reader.aliases(name).items()):
        live = reader.live_version(name, version)
        created = datetime.fromtimestamp(live.created_ms / 1000, UTC).isoformat(timespec="seconds")
        since = live.tags.get("promoted_at") if alias == CHAMPION else None
        recorded = {k: v for k, v in live.metrics.items() if "." not in k}  # per-slice metrics left out
        report[alias] = {
            "version": version,
            "since": since or created,
            "metrics": {m: recorded.get(m) for m in metrics},
            # Who trained and approved it, where recorded (promotion.approvers, separate_duties).
            **{tag: live.tags[tag] for tag in (TRAINED_BY_TAG, APPROVED_BY_TAG) if tag in live.tags},
        }
    return report
