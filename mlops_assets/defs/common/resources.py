"""Resources shared by every pipeline's assets."""

import os
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from mlops_assets.core.lake import Location, location
from mlops_assets.core.pages import Pages
from mlops_assets.settings import (
    ARTIFACT_URI_ENV,
    BENTO_URI_ENV,
    LAKE_URI_ENV,
    ONLINE_STORE_ENV,
    REPORTS_URI_ENV,
    TRACKING_URI_ENV,
    link_seconds,
    mlflow_settings,
    object_store_uri,
    online_store_url,
    reports_uri,
)

if TYPE_CHECKING:
    from mlops_assets.core.features.online import OnlineStore
    from mlops_assets.core.models.registry import ModelRegistry


class LakeResource(dg.ConfigurableResource):
    """The offline store: landing files, Delta tables and the served prediction log's batches under the data folder
    (embedded), or under an object store's prefix when MLOPS_LAKE_URI=s3://bucket/prefix; what stays on the machine
    (the A/B test's record) under the data folder."""

    data_dir: str = Field(default="data", description="data folder; relative paths resolve against the cwd")
    lake_uri: str = Field(
        default="", description="s3://bucket/prefix holding the lake (landing files, Delta tables); empty: data_dir"
    )

    @property
    def root(self) -> Location:
        """Where the lake is: the landing files of sources and the Delta tables (`lake/`) below it."""
        return location(_value(self.lake_uri) or self.data_dir)

    @property
    def data_folder(self) -> Path:
        """The local data folder, for what this machine keeps whatever the lake's location."""
        return Path(self.data_dir).resolve()


def lake_resource(data_dir: str, lake_uri: str | None = None) -> LakeResource:
    """The lake in the data folder unless an object store's URI is given (or set in MLOPS_LAKE_URI)."""
    uri = lake_uri or os.environ.get(LAKE_URI_ENV, "")
    return LakeResource(data_dir=data_dir, lake_uri=_from_environment(uri, LAKE_URI_ENV) if uri else "")


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and registry: SQLite in the data folder by default, a server when MLFLOW_TRACKING_URI is set."""

    tracking_uri: str = Field(description="e.g. sqlite:///data/mlflow.db or http://127.0.0.1:5000")
    artifact_root: str = Field(
        default="",
        description="where new experiments keep artifacts (a folder, or s3://bucket/prefix from MLOPS_ARTIFACT_URI); "
        "empty: the tracking server decides",
    )

    def registry(self) -> "ModelRegistry":
        # Imported here: mlflow takes seconds to import, and loading the definitions must stay light.
        from mlops_assets.core.models.registry import ModelRegistry

        return ModelRegistry(_value(self.tracking_uri), _value(self.artifact_root).rstrip("/"))


def mlflow_resource(data_dir: str, tracking_uri: str | None = None) -> MlflowResource:
    """The embedded default (SQLite and artifacts in the data folder) unless a tracking URI is given; artifacts
    under MLOPS_ARTIFACT_URI when it is set."""
    uri, artifact_root = mlflow_settings(data_dir, tracking_uri)
    return MlflowResource(
        tracking_uri=_from_environment(uri, TRACKING_URI_ENV),
        artifact_root=_from_environment(artifact_root, ARTIFACT_URI_ENV),
    )


def _value(setting: str) -> str:
    """A setting's value, also on a resource used outside a run (the CLI), where an EnvVar is not resolved yet."""
    return setting.get_value() or "" if isinstance(setting, dg.EnvVar) else setting


def _from_environment(value: str, variable: str) -> str:
    """A value that came from the environment stays a reference to it (dg.EnvVar): the UI and the run config show the
    variable's name, never a password inside the URL."""
    return dg.EnvVar(variable) if os.environ.get(variable) == value else value


class BentoResource(dg.ConfigurableResource):
    """BentoML's home (model store and bentos): `bentoml` in the data folder by default; each bento built is also
    exported to object storage when MLOPS_BENTO_URI is set."""

    home: str = Field(description="the BENTOML_HOME folder the bento asset builds into and `mlops serve` serves from")
    export_uri: str = Field(
        default="", description="s3://bucket/prefix each built bento is exported under (MLOPS_BENTO_URI); empty: none"
    )

    @property
    def root(self) -> Path:
        return Path(self.home).resolve()

    @property
    def export_root(self) -> str | None:
        return _value(self.export_uri).rstrip("/") or None


def bento_resource(data_dir: str, home: str | None = None) -> BentoResource:
    export = object_store_uri(BENTO_URI_ENV)
    return BentoResource(
        home=home or str(Path(data_dir).resolve() / "bentoml"),
        export_uri=_from_environment(export, BENTO_URI_ENV) if export else "",
    )


class ReportsResource(dg.ConfigurableResource):
    """Where drift reports and model cards are written: the data folder by default, object storage (opened by
    presigned links) when MLOPS_REPORTS_URI is set."""

    data_dir: str = Field(default="data", description="data folder; relative paths resolve against the cwd")
    uri: str = Field(default="", description="s3://bucket/prefix (MLOPS_REPORTS_URI); empty: the data folder")

    def pages(self) -> Pages:
        return Pages(Path(self.data_dir).resolve(), _value(self.uri).rstrip("/") or None, link_seconds())


def reports_resource(data_dir: str, lake_uri: str | None = None) -> ReportsResource:
    """Pages under MLOPS_REPORTS_URI, else beside a lake in object storage (its bucket and prefix), else in the data
    folder."""
    uri = object_store_uri(REPORTS_URI_ENV)
    if uri:
        return ReportsResource(data_dir=data_dir, uri=_from_environment(uri, REPORTS_URI_ENV))
    lake = reports_uri(lake_uri or os.environ.get(LAKE_URI_ENV))
    return ReportsResource(data_dir=data_dir, uri=_from_environment(lake, LAKE_URI_ENV) if lake else "")


class OnlineStoreResource(dg.ConfigurableResource):
    """The online store: SQLite in the data folder by default, Redis when MLOPS_ONLINE_STORE_URL=redis://..."""

    url: str = Field(description="redis://host:port/db, or sqlite:///path/to/online.db")

    def store(self) -> "OnlineStore":
        from mlops_assets.core.features.online import open_store

        return open_store(_value(self.url))


def online_store_resource(data_dir: str, url: str | None = None) -> OnlineStoreResource:
    return OnlineStoreResource(url=_from_environment(online_store_url(data_dir, url), ONLINE_STORE_ENV))
