"""The embedded defaults (files in the data folder) and the URLs that replace them, in one place for the Dagster
resources, the CLI and the prediction service. No heavy imports: the service loads this without Dagster."""

from __future__ import annotations

from pathlib import Path


def mlflow_settings(data_dir: str, tracking_uri: str | None = None) -> tuple[str, str]:
    """(tracking URI, artifact root): SQLite and artifacts in the data folder unless a tracking URI is given.

    A local store (SQLite, files) keeps artifacts in the data folder; a tracking server decides for itself ('').
    """
    root = Path(data_dir).resolve()
    uri = tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
    remote = uri.startswith(("http://", "https://", "databricks"))
    return uri, "" if remote else str(root / "mlartifacts")


def online_store_url(data_dir: str, url: str | None = None) -> str:
    """The online store: SQLite in the data folder unless a URL (redis://...) is given."""
    return url or f"sqlite:///{Path(data_dir).resolve() / 'online.db'}"
