"""Where the application works: a specs folder, a data folder and the project-local Dagster instance, with the
services each is reached through. The CLI and the demo build one and pass it to the application's functions."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_assets.core.models.registry_view import RegistryReader, direct_reader
from mlops_assets.core.pages import Pages
from mlops_assets.settings import (
    DAGSTER_POSTGRES_ENV,
    LAKE_URI_ENV,
    dagster_postgres_problem,
    dagster_yaml,
    link_seconds,
    mlflow_settings,
    reports_uri,
)
from mlops_assets.spec import PipelineSpec, load_specs

if TYPE_CHECKING:
    import dagster as dg

    from mlops_assets.core.lake import Location
    from mlops_assets.core.models.registry import ModelRegistry

DAGSTER_HOME_DIR = ".dagster_home"


class AppError(Exception):
    """An expected failure, said in a sentence a person can act on (a bad argument, a refused promotion)."""


class UnknownPipeline(AppError):
    """A pipeline the specs do not declare (or, where a model is needed, one without a model): a caller's mistake."""


@dataclass(frozen=True)
class Workspace:
    specs_dir: str | None
    data_dir: str = "data"
    debug: bool = False  # Dagster's warnings and errors (with tracebacks) on the console, instead of silence
    lake_uri: str | None = None  # s3://bucket/prefix holding the lake; None: MLOPS_LAKE_URI, else the data folder

    @property
    def root(self) -> Path:
        """The local data folder: what this machine keeps (SQLite stores, BentoML's home, A/B records; reports and
        the prediction log unless the lake is in object storage)."""
        return Path(self.data_dir).resolve()

    @property
    def lake_setting(self) -> str | None:
        """The lake's object-storage URI this workspace was given (--lake-uri, else MLOPS_LAKE_URI); None: local."""
        return self.lake_uri or os.environ.get(LAKE_URI_ENV)

    @cached_property
    def lake(self) -> Location:
        """Where the landing files and Delta tables are: the data folder, or an object store's prefix, which must
        answer (an AppError naming it otherwise)."""
        from mlops_assets.core.lake import location, unreachable

        try:
            where = location(self.lake_setting or self.data_dir)
        except ValueError as exc:
            raise AppError(str(exc)) from None
        if (problem := unreachable(where)) is not None:
            raise AppError(problem)
        return where

    @cached_property
    def specs(self) -> dict[str, PipelineSpec]:
        return {spec.name: spec for spec in load_specs(self.specs_dir)}

    def spec(self, pipeline: str, with_model: bool = True) -> PipelineSpec:
        """The pipeline's spec; an AppError names the declared ones when it is unknown (or, `with_model`, has none)."""
        if pipeline not in self.specs:
            raise UnknownPipeline(f"unknown pipeline {pipeline!r}; the specs declare {sorted(self.specs)}")
        spec = self.specs[pipeline]
        if with_model and spec.model is None:
            raise UnknownPipeline(f"pipeline {pipeline!r} declares no model")
        return spec

    @cached_property
    def definitions(self) -> dg.Definitions:
        from mlops_assets.definitions import build_definitions

        return build_definitions(self.specs_dir, self.data_dir, lake_uri=self.lake_uri)

    @cached_property
    def instance(self) -> dg.DagsterInstance:
        return project_instance()

    @cached_property
    def registry(self) -> ModelRegistry:
        from mlops_assets.core.models.registry import open_registry

        return open_registry(self.data_dir)

    @cached_property
    def pages(self) -> Pages:
        """Where drift reports and model cards are: MLOPS_REPORTS_URI, else beside a lake in object storage, else the
        data folder."""
        return Pages(self.root, reports_uri(self.lake_setting), link_seconds())

    @cached_property
    def registry_reader(self) -> RegistryReader:
        """What looking at the registry needs (aliases, live versions), without MLflow where the store allows."""
        return registry_reader(mlflow_settings(self.data_dir)[0])

    def run(
        self,
        job: str,
        partition: date | None = None,
        days: tuple[date, date] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Any:
        """Execute a job in this process on the project's instance, its console log quiet (the caller summarizes
        it); a failure is in the result, never raised."""
        tags = dict(tags or {})
        if days is not None:
            tags = {
                **tags,
                "dagster/asset_partition_range_start": days[0].isoformat(),
                "dagster/asset_partition_range_end": days[1].isoformat(),
            }
        level = "WARNING" if self.debug else "CRITICAL"
        return self.definitions.resolve_job_def(job).execute_in_process(
            instance=self.instance,
            partition_key=partition.isoformat() if partition else None,
            tags=tags or None,
            run_config={"loggers": {"console": {"config": {"log_level": level}}}},
            raise_on_error=False,
        )


def project_instance() -> dg.DagsterInstance:
    """The project-local Dagster instance (DAGSTER_HOME, default ./.dagster_home) that `mlops ui` opens too; its
    settings are written on first use (SQLite, no telemetry: the machine may have no network)."""
    import dagster as dg

    from mlops_assets.defs.common.event_log import BATCH_SIZE, BATCH_SIZE_ENV

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(DAGSTER_HOME_DIR).resolve())))
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        settings.write_text(dagster_yaml("sqlite"))
    problem = dagster_postgres_problem(settings.read_text(), os.environ.get(DAGSTER_POSTGRES_ENV))
    if problem:
        raise AppError(f"{settings}: {problem}")
    # Dagster hands the events of an output (a range of days: one per day) over in batches of this size, which the
    # storages write at once; `mlops ui` starts the webserver and daemon from this process, so their runs do too.
    os.environ.setdefault(BATCH_SIZE_ENV, BATCH_SIZE)
    return dg.DagsterInstance.get()


def write_instance_settings(storage: str, force: bool = False) -> Path:
    """Write $DAGSTER_HOME/dagster.yaml (default ./.dagster_home) for `sqlite` or `postgres` storage."""
    home = Path(os.environ.get("DAGSTER_HOME", DAGSTER_HOME_DIR)).resolve()
    settings = home / "dagster.yaml"
    if settings.exists() and not force:
        raise AppError(f"{settings} exists; --force replaces it")
    home.mkdir(parents=True, exist_ok=True)
    settings.write_text(dagster_yaml(storage))
    return settings


def registry_reader(tracking_uri: str) -> RegistryReader:
    """What `mlops status` and `report` read the registry with: the embedded store directly where that reads what
    MLflow's client would (core/models/registry_view.py), MLflow's client otherwise."""
    if (direct := direct_reader(tracking_uri)) is not None:
        return direct
    from mlops_assets.core.models.registry import ModelRegistry

    return ModelRegistry(tracking_uri)
