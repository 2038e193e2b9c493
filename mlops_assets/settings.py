"""The embedded defaults (files in the data folder) and the URLs that replace them, in one place for the Dagster
resources, the CLI and the prediction service. No heavy imports: the service loads this without Dagster."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

# The environment variables that replace an embedded default with a service; nothing else changes between the two.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
ONLINE_STORE_ENV = "MLOPS_ONLINE_STORE_URL"
DAGSTER_POSTGRES_ENV = "MLOPS_DAGSTER_POSTGRES_URL"
# The lake (landing files, Delta tables) in object storage: s3://bucket/prefix, credentials from AWS_* variables.
LAKE_URI_ENV = "MLOPS_LAKE_URI"
# Object storage's credentials, read by delta-rs, polars, s3fs and boto3 from the environment alone: never shown.
SECRET_ENVS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# Where a browser opens MLflow, when that is not the tracking URI itself (a proxy, or `mlops mlflow` elsewhere).
MLFLOW_UI_ENV = "MLOPS_MLFLOW_UI_URL"
MLFLOW_UI_PORT = 5000  # `mlops mlflow` serves the embedded store's UI here
# Object storage (s3://bucket/prefix) in place of the data folder, for what people and other hosts read. The
# credentials and the endpoint are AWS's standard variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL), read by each client itself: never a setting of ours.
ARTIFACT_URI_ENV = "MLOPS_ARTIFACT_URI"  # where new MLflow experiments keep their artifacts
BENTO_URI_ENV = "MLOPS_BENTO_URI"  # where each built bento is exported, for serving hosts to pull
REPORTS_URI_ENV = "MLOPS_REPORTS_URI"  # where drift reports and model cards are written
# How long a presigned link to a report or card opens it. SigV4 signs for at most 7 days, the default.
LINK_SECONDS_ENV = "MLOPS_REPORT_LINK_SECONDS"
MAX_LINK_SECONDS = 7 * 24 * 3600
OBJECT_STORE_SCHEMES = ("s3",)


class SettingError(ValueError):
    """A setting from the environment that cannot be used; the message names the variable and what it expects."""


def object_store_uri(variable: str) -> str | None:
    """The s3://bucket/prefix the variable sets (without a trailing slash), or None when it is unset or empty."""
    value = os.environ.get(variable, "").strip().rstrip("/")
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in OBJECT_STORE_SCHEMES or not parts.netloc or parts.query or "@" in parts.netloc:
        raise SettingError(f"{variable} must be an object-store location such as s3://bucket/prefix, not {value!r}")
    return value


def reports_uri(lake_uri: str | None) -> str | None:
    """Where drift reports and model cards go: MLOPS_REPORTS_URI, else the lake's own prefix when the lake is in
    object storage (the same layout as the data folder's), else None (the data folder)."""
    explicit = object_store_uri(REPORTS_URI_ENV)
    if explicit:
        return explicit
    lake = (lake_uri or "").strip().rstrip("/")
    return lake if urlsplit(lake).scheme in OBJECT_STORE_SCHEMES else None


def link_seconds() -> int:
    """How long presigned links last: MLOPS_REPORT_LINK_SECONDS, 7 days (SigV4's longest) by default."""
    value = os.environ.get(LINK_SECONDS_ENV, "").strip()
    if not value:
        return MAX_LINK_SECONDS
    if not value.isdigit() or not 1 <= int(value) <= MAX_LINK_SECONDS:
        raise SettingError(f"{LINK_SECONDS_ENV} must be a number of seconds, 1 to {MAX_LINK_SECONDS}, not {value!r}")
    return int(value)


def mlflow_settings(data_dir: str, tracking_uri: str | None = None) -> tuple[str, str]:
    """(tracking URI, artifact root): SQLite and artifacts in the data folder unless a tracking URI is given (or
    set in MLFLOW_TRACKING_URI).

    New experiments keep their artifacts under MLOPS_ARTIFACT_URI when it is set (s3://...); otherwise a local
    store (SQLite, files) keeps them in the data folder, and a tracking server decides for itself ('').
    """
    root = Path(data_dir).resolve()
    uri = tracking_uri or os.environ.get(TRACKING_URI_ENV) or f"sqlite:///{root / 'mlflow.db'}"
    if artifacts := object_store_uri(ARTIFACT_URI_ENV):
        return uri, artifacts
    return uri, "" if is_tracking_server(uri) else str(root / "mlartifacts")


def embedded_registry_missing(data_dir: str) -> bool:
    """No tracking server is set and the data folder holds no embedded store: a host serving a bento pulled from
    object storage, which has no registry to follow (the bento carries its models)."""
    uri = mlflow_settings(data_dir)[0]
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///").partition("?")[0]).exists()


def is_tracking_server(tracking_uri: str) -> bool:
    """Whether MLflow is a server (which has its own UI and artifact store) rather than a local database."""
    return tracking_uri.startswith(("http://", "https://", "databricks"))


def mlflow_ui_url(tracking_uri: str) -> str:
    """The MLflow UI a browser opens: MLOPS_MLFLOW_UI_URL, else the tracking server itself (without credentials),
    else where `mlops mlflow` serves the embedded store."""
    if configured := os.environ.get(MLFLOW_UI_ENV):
        return configured.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        parts = urlsplit(tracking_uri)
        host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    return f"http://127.0.0.1:{MLFLOW_UI_PORT}"


def mlflow_links(ui: str, experiment_id: str, run_id: str, model: str, version: str) -> dict[str, str]:
    """Pages of the MLflow UI at `ui`: the run that trained a version, and the registered version."""
    return {
        "mlflow_run": f"{ui}/#/experiments/{experiment_id}/runs/{run_id}",
        "mlflow_model_version": f"{ui}/#/models/{quote(model)}/versions/{version}",
    }


def card_page(pipeline: str, version: str) -> str:
    """Where the model card of a registered version is written, under the data folder or MLOPS_REPORTS_URI."""
    return f"model_cards/{pipeline}/v{version}.md"


def drift_report_page(pipeline: str, day: str) -> str:
    """Where the HTML drift report of a served day is written, under the data folder or MLOPS_REPORTS_URI."""
    return f"reports/{pipeline}/drift/{day}.html"


def card_path(root: Path, pipeline: str, version: str) -> Path:
    return root / card_page(pipeline, version)


def drift_report_path(root: Path, pipeline: str, day: str) -> Path:
    return root / drift_report_page(pipeline, day)


def experiments_folder(root: Path, pipeline: str) -> Path:
    """Where a pipeline's A/B experiments are recorded (the running one and the ended ones), under the data folder."""
    return root / "experiments" / pipeline


def online_store_url(data_dir: str, url: str | None = None) -> str:
    """The online store: SQLite in the data folder unless a URL (redis://...) is given or set in the environment."""
    return url or os.environ.get(ONLINE_STORE_ENV) or f"sqlite:///{Path(data_dir).resolve() / 'online.db'}"


def dagster_yaml(storage: str) -> str:
    """The Dagster instance settings (`$DAGSTER_HOME/dagster.yaml`) for `sqlite` (the embedded default: files in
    DAGSTER_HOME) or `postgres` (dagster-postgres; the URL, with its password, stays in the environment and must
    name the psycopg2 driver: postgresql+psycopg2://user:password@host:5432/database)."""
    text = "# Written by `mlops init`.\ntelemetry:\n  enabled: false\n"
    if storage == "postgres":
        text += f"storage:\n  postgres:\n    postgres_url:\n      env: {DAGSTER_POSTGRES_ENV}\n"
    elif storage == "sqlite":
        # Dagster's SQLite event log, writing the events Dagster batches in one transaction (a range of days' events
        # are thousands: see defs/common/event_log.py).
        text += (
            "event_log_storage:\n  module: mlops_assets.defs.common.event_log\n  class: BatchedSqliteEventLogStorage\n"
        )
    else:
        raise ValueError(f"unknown storage {storage!r} (sqlite or postgres)")
    return text


def dagster_postgres_problem(settings: str, url: str | None) -> str | None:
    """What is wrong with the PostgreSQL URL a `postgres` dagster.yaml reads, if anything (password never shown)."""
    if DAGSTER_POSTGRES_ENV not in settings:
        return None
    if not url:
        return f"the Dagster instance keeps its storage on PostgreSQL: set {DAGSTER_POSTGRES_ENV}"
    scheme = url.partition("://")[0]
    if scheme != "postgresql+psycopg2":
        return (
            f"{DAGSTER_POSTGRES_ENV} must start with postgresql+psycopg2:// (dagster-postgres needs the psycopg2 "
            f"driver; SQLAlchemy would pick psycopg 3 for {scheme}://), e.g. postgresql+psycopg2://user:pw@host:5432/db"
        )
    return None


def redact(text: str, url: str) -> str:
    """`text` (the URL itself, an error message) as it may be shown: the password of `url`, if any, as ***."""
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


def redact_secrets(text: str) -> str:
    """`text` as it may be shown: the values of the credential variables (SECRET_ENVS) as ***."""
    for variable in SECRET_ENVS:
        if value := os.environ.get(variable):
            text = text.replace(value, "***")
    return text
