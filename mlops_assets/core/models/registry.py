"""The model registry on MLflow: candidates logged with their lineage, champion/challenger aliases, rollback.

Which version is live is the `champion` alias; each promotion tags the new champion with the version it replaced,
so a rollback walks back one step and a history of promotions can always be rebuilt from the registry.

Importing it loads MLflow's client only: the model flavours, scikit-learn and skops load where a model is logged or
loaded, so that `mlops status` and `report` answer without them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, Schema

from mlops_assets.core.models.aliases import (
    APPROVED_BY_TAG,
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION_TAG,
    PROMOTED_BY_TAG,
    ROLLED_BACK_BY_TAG,
)
from mlops_assets.core.models.history import (
    ChampionSince,
    champion_history,
    change_record,
    change_tag,
)
from mlops_assets.core.models.provenance import model_requirements
from mlops_assets.core.models.registry_view import LiveVersion
from mlops_assets.core.object_store import explain, s3_errors
from mlops_assets.settings import mlflow_links, mlflow_settings, mlflow_ui_url

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline


log = logging.getLogger(__name__)
_WARNED_ELSEWHERE: set[str] = set()


def metric_key(text: str) -> str:
    """`text` as part of an MLflow metric name (which allows letters, digits, _ - . / : and spaces only)."""
    return re.sub(r"[^\w\-./: ]", "_", text)


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to)."""


@dataclass(frozen=True)
class ChampionEvent:
    """One change of the live model: what a champion materialization records."""

    version: str
    previous: str | None
    reason: str
    triggered_by: str
    at: str
    approved_by: str | None = None  # the approver, when the spec's promotion.approvers applies

    def as_metadata(self) -> dict[str, str]:
        return {k: "" if v is None else str(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class LoggedCandidate:
    version: str
    run_id: str
    model_uri: str


def open_registry(data_dir: str | Path, tracking_uri: str | None = None) -> ModelRegistry:
    """The registry of a data folder: the embedded SQLite store and artifacts in it, or the tracking server given (or
    set in MLFLOW_TRACKING_URI). The one way the resources, the CLI, the demo and the service reach it."""
    return ModelRegistry(*mlflow_settings(str(data_dir), tracking_uri))


class ModelRegistry:
    """MLflow tracking and registry at one URI (SQLite file by default, a tracking server when configured)."""

    def __init__(self, tracking_uri: str, artifact_root: Path | str | None = None) -> None:
        """`artifact_root`: where new experiments keep their artifacts (a folder, or an s3://bucket/prefix); empty
        or None: the tracking server decides."""
        self.tracking_uri = tracking_uri
        root = str(artifact_root or "")
        # An object store's URI as it is; a folder as a file URI.
        self.artifact_root = root if "://" in root else Path(root).resolve().as_uri() if root else None
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @contextlib.contextmanager
    def _fluent(self) -> Iterator[None]:
        """MLflow's fluent API on this registry. mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI (and the
        registry URI) into the environment, where it would choose the registry of everything else in the process
        (settings read it): both variables are put back afterwards."""
        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def experiment_id(self, name: str) -> str:
        """The experiment of model `name`, created under the artifact root the first time. MLflow keeps an
        experiment's artifact location for good: one created before the root changed stays where it is (said once
        per process, with what to do)."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = f"{self.artifact_root}/{name}" if self.artifact_root else None
            return self.client.create_experiment(name, artifact_location=location)
        elsewhere = self.artifact_root and not experiment.artifact_location.startswith(self.artifact_root)
        if elsewhere and name not in _WARNED_ELSEWHERE:
            _WARNED_ELSEWHERE.add(name)
            log.warning(
                "MLflow experiment %r keeps its artifacts at %s, not under %s: MLflow never moves an experiment; "
                "to start a new one there, rename this one (MlflowClient().rename_experiment)",
                name,
                experiment.artifact_location,
                self.artifact_root,
            )
        return experiment.experiment_id

    def log_candidate(
        self,
        name: str,
        pipeline: Pipeline,
        example: pd.DataFrame,
        *,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        artifacts: dict[str, Any],
        required: set[str],
        task: str = "binary",
    ) -> LoggedCandidate:
        """Log the fitted inference pipeline with its evidence and register it as a new version of `name`.

        Its pyfunc answers as serving does: probabilities (classifiers; binary, the positive class's in the
        signature) or predicted values (regression).
        """
        import skops.io  # with scikit-learn, seconds to import: only where a model is logged

        with self._fluent():
            if task == "regression":
                outputs = pipeline.predict(example)
            else:
                outputs = pipeline.predict_proba(example)
                outputs = outputs[:, 1] if task == "binary" else outputs
            inferred = infer_signature(example, outputs)
            # Required-ness comes from the spec, not from whether the few example rows happened to have nulls.
            inputs = Schema([ColSpec(c.type, c.name, required=c.name in required) for c in inferred.inputs.inputs])
            signature = ModelSignature(inputs=inputs, outputs=inferred.outputs)
            # skops refuses types it does not know; these are the types of the pipeline we just built from the spec.
            trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
            experiment = self.experiment_id(name)
            try:
                with mlflow.start_run(experiment_id=experiment, tags=tags) as run:
                    mlflow.log_params({k: _param(v) for k, v in params.items()})
                    mlflow.log_metrics(metrics)
                    with tempfile.TemporaryDirectory() as folder:
                        for file_name, content in artifacts.items():
                            path = Path(folder) / file_name
                            text = content if isinstance(content, str) else json.dumps(content, indent=2, default=str)
                            path.write_text(text)
                            mlflow.log_artifact(str(path))
                    info = mlflow.sklearn.log_model(
                        pipeline,
                        name="model",
                        signature=signature,
                        # The rows serving checks its compiled scoring of this version on, each time it loads it.
                        input_example=example,
                        pyfunc_predict_fn="predict" if task == "regression" else "predict_proba",
                        skops_trusted_types=trusted,
                        pip_requirements=model_requirements([*trusted, *(type(step).__module__ for step in pipeline)]),
                    )
            except s3_errors() as exc:  # artifacts written to object storage: the store named, and why it refused
                location = f"{self.artifact_root}/{name}" if self.artifact_root else "the experiment's artifact store"
                raise RegistryError(f"cannot write the artifacts of {name!r}: {explain(location, exc)}") from exc
            # Registered last, with its tags, in one call: a version exists whole (artifacts, metrics, tags) or not at
            # all, whenever the tracking server goes away.
            registered = mlflow.register_model(info.model_uri, name, await_registration_for=60, tags=tags)
            version = str(registered.version)
            return LoggedCandidate(version=version, run_id=run.info.run_id, model_uri=f"models:/{name}/{version}")

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version; empty when nothing is registered yet (SQL stores need get_registered_model for this)."""
        try:
            return {alias: str(v) for alias, v in self.client.get_registered_model(name).aliases.items()}
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise

    def version(self, name: str, version: str) -> Any:
        try:
            return self.client.get_model_version(name, version)
        except MlflowException as exc:
            raise RegistryError(f"model {name!r} has no version {version!r}") from exc

    def links(self, name: str, version: str, run_id: str | None = None) -> dict[str, str]:
        """MLflow UI pages of a version and the run that trained it (see `settings.mlflow_ui_url`); pass the run id
        when it is at hand, to spare a lookup."""
        run_id = run_id or self.version(name, version).run_id
        experiment = self.client.get_run(run_id).info.experiment_id
        return mlflow_links(mlflow_ui_url(self.tracking_uri), experiment, run_id, name, version)

    def load(self, name: str, version: str) -> Any:
        """The registered inference pipeline as a pyfunc model (its signature is enforced on predict)."""
        with self._fluent():
            return mlflow.pyfunc.load_model(f"models:/{name}/{version}")

    def load_sklearn(self, name: str, version: str) -> Pipeline:
        with self._fluent():
            return mlflow.sklearn.load_model(f"models:/{name}/{version}")

    def input_example(self, name: str, version: str) -> Any:
        """The rows a version was logged with as its input example (a frame; None when it has none)."""
        with self._fluent():
            return input_example(f"models:/{name}/{version}")

    def download_model(self, name: str, version: str, target: Path) -> Path:
        """The registered version's MLflow model folder, copied into `target`."""
        with self._fluent():
            target.mkdir(parents=True, exist_ok=True)
            uri = f"models:/{name}/{version}"
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))

    def version_metrics(self, name: str, version: str) -> dict[str, float]:
        """The overall holdout metrics the version was logged with (per-slice metrics left out)."""
        run = self.client.get_run(self.version(name, version).run_id)
        return {k: v for k, v in run.data.metrics.items() if "." not in k}

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """Every metric of a run, its latest value (per-slice, per-group, latency and the champion's included)."""
        return dict(self.client.get_run(run_id).data.metrics)

    def live_version(self, name: str, version: str) -> LiveVersion:
        """What `mlops status` shows of a live version (see registry_view)."""
        mv = self.version(name, version)
        metrics = self.client.get_run(mv.run_id).data.metrics if mv.run_id else {}
        return LiveVersion(str(version), int(mv.creation_timestamp), dict(mv.tags or {}), dict(metrics))

    def archive_stale(self, name: str, retention: timedelta, now: datetime | None = None) -> list[str]:
        """Archive versions never promoted and older than `retention`: tag them and drop their aliases.

        Nothing is deleted (runs, artifacts and lineage stay), and the champion, the version it replaced and the
        challenger are never touched.
        """
        now = now or datetime.now(UTC)
        aliases = self.aliases(name)
        protected = {aliases.get(CHAMPION), aliases.get(CHALLENGER)}
        if aliases.get(CHAMPION):
            protected.add(self.version(name, aliases[CHAMPION]).tags.get(PREVIOUS_CHAMPION_TAG))
        archived = []
        for mv in self.client.search_model_versions(f"name='{name}'"):
            created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)
            tags = mv.tags or {}
            if str(mv.version) in protected or "promoted_at" in tags or "archived_at" in tags:
                continue
            if now - created <= retention:
                continue
            for alias, version in aliases.items():
                if version == str(mv.version):
                    self.client.delete_registered_model_alias(name, alias)
            self.client.set_model_version_tag(name, str(mv.version), "archived_at", now.isoformat(timespec="seconds"))
            archived.append(str(mv.version))
        return sorted(archived, key=int)

    def json_artifact(self, run_id: str, path: str) -> Any:
        with tempfile.TemporaryDirectory() as folder:
            return json.loads(Path(self.client.download_artifacts(run_id, path, folder)).read_text())

    def verify_artifacts(self, name: str, version: str) -> None:
        """The version's model files are where the registry says: an alias never points at missing artifacts."""
        with self._fluent():
            try:
                files = {
                    Path(f.path).name for f in mlflow.artifacts.list_artifacts(artifact_uri=f"models:/{name}/{version}")
                }
            except (MlflowException, OSError) as exc:
                raise RegistryError(f"the artifacts of version {version} of {name!r} cannot be listed: {exc}") from exc
            if "MLmodel" not in files:
                raise RegistryError(f"version {version} of {name!r} has no model files (MLmodel missing): not live")

    def versions(self, name: str) -> set[str]:
        """Every registered version of the model."""
        return {str(v.version) for v in self.client.search_model_versions(f"name='{name}'")}

    def record_gate(
        self, name: str, version: str, champion_metrics: Mapping[str, float], passed: bool, reasons: Sequence[str]
    ) -> None:
        """What the promotion gate decided for `version`, on its run (with the champion's metrics beside its own) and
        on the version (its reasons)."""
        run_id = self.version(name, version).run_id
        for metric, value in champion_metrics.items():
            self.client.log_metric(run_id, f"champion.{metric}", value)
        self.client.set_tag(run_id, "promotion_gate", "passed" if passed else "failed")
        self.client.set_model_version_tag(name, version, "promotion_gate", "; ".join(reasons))

    def attach(self, name: str, version: str, file: Path) -> None:
        """A local file (the model card, written by `Pages.writing`) as an artifact of the run that trained
        `version`."""
        self.client.log_artifact(self.version(name, version).run_id, str(file))

    def register_again(self, name: str, version: str) -> str:
        """A new version of the model files of `version` (the same artifacts and run): the new version number.
        Under this registry's URI: MLflow resolves a logged model's source through its process-wide tracking URI."""
        source = self.version(name, version)
        with self._fluent():
            return str(self.client.create_model_version(name, source.source, source.run_id).version)

    def set_challenger(self, name: str, version: str) -> None:
        self.verify_artifacts(name, version)
        self.client.set_registered_model_alias(name, CHALLENGER, version)

    def promote(
        self, name: str, version: str, reason: str, triggered_by: str, approved_by: str | None = None
    ) -> ChampionEvent:
        """Make `version` the champion, remembering which version it replaces (and who promoted and approved it, on
        the version's tags)."""
        self.version(name, version)
        self.verify_artifacts(name, version)
        previous = self.aliases(name).get(CHAMPION)
        if previous == version:
            raise RegistryError(f"version {version} of {name!r} is already the champion")
        if previous is not None:
            self.client.set_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG, previous)
        self.client.set_registered_model_alias(name, CHAMPION, version)
        if self.aliases(name).get(CHALLENGER) == version:
            self.client.delete_registered_model_alias(name, CHALLENGER)
        event = ChampionEvent(version, previous, reason, triggered_by, _now(), approved_by)
        self.client.set_model_version_tag(name, version, PROMOTED_BY_TAG, triggered_by)
        if approved_by is not None:
            self.client.set_model_version_tag(name, version, APPROVED_BY_TAG, approved_by)
        self.client.set_model_version_tag(name, version, "promoted_at", event.at)
        self._record_change(name, event)
        return event

    def rollback(self, name: str, triggered_by: str, approved_by: str | None = None) -> ChampionEvent:
        """Move the champion back to the version it replaced (who did it tagged on the version rolled back)."""
        current = self.aliases(name).get(CHAMPION)
        if current is None:
            raise RegistryError(f"model {name!r} has no champion to roll back")
        previous = self.version(name, current).tags.get(PREVIOUS_CHAMPION_TAG)
        if not previous:
            raise RegistryError(f"champion version {current} of {name!r} replaced no earlier champion")
        self.verify_artifacts(name, previous)
        self.client.set_registered_model_alias(name, CHAMPION, previous)
        event = ChampionEvent(previous, current, f"rollback from version {current}", triggered_by, _now(), approved_by)
        self.client.set_model_version_tag(name, current, ROLLED_BACK_BY_TAG, triggered_by)
        self.client.set_model_version_tag(name, current, "rolled_back_at", event.at)
        self._record_change(name, event)
        return event

    def _record_change(self, name: str, event: ChampionEvent) -> None:
        """Append the change to the model's champion history (see core/models/history.py)."""
        record = change_record(event.version, event.previous, event.at)
        self.client.set_registered_model_tag(name, change_tag(time.time_ns(), event.version), record)

    def champion_history(self, name: str) -> list[ChampionSince]:
        """Every change of the champion, oldest first: the recorded changes and those the versions' tags tell."""
        try:
            model_tags = dict(self.client.get_registered_model(name).tags)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        versions = {str(mv.version): dict(mv.tags or {}) for mv in self.client.search_model_versions(f"name='{name}'")}
        return champion_history(model_tags, versions)


def _param(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def input_example(model: str) -> Any:
    """The input example of an MLflow model (a folder or a models:/ URI) as logged, or None."""
    from mlflow.models import Model

    return Model.load(model).load_input_example(model)
