"""BentoML bundles: the live models imported from the MLflow registry by alias, the spec and the feature code.

A bento holds everything the service needs to answer as it did when it was built, wherever it runs: the champion,
the challenger and the version the champion replaced (so a rollback needs no download), the pipeline's specs and
this package's source (the one feature code, for serving as for training). The build runs in a subprocess with
its own BENTOML_HOME, so the calling process (a Dagster run) keeps no BentoML state.

With an object-store location (s3://bucket/prefix), the build also exports the bento there as one archive,
`<location>/<pipeline>/<bento name>-<version>.bento`, which a serving host imports (`pull_bento`) without sharing a
disk with the builder. The endpoint and credentials are AWS's standard environment variables (read by s3fs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlops_assets
from mlops_assets.core.models.aliases import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION_TAG
from mlops_assets.core.models.registry import ModelRegistry, input_example

SERVICE = "mlops_assets.serving.service:PredictionService"
PREVIOUS = "previous_champion"
# What the bento's service imports; pinned to the versions this bento was built and tested with.
RUNTIME_PACKAGES = (
    "bentoml",
    "mlflow",
    "scikit-learn",
    "skops",
    "polars",
    "pandas",
    "numpy",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "redis",
    "deltalake",
    "pandera",
)


def bento_name(pipeline: str) -> str:
    return f"mlops_{pipeline}"


def model_tag(pipeline: str, version: str) -> str:
    return f"mlops_{pipeline}_model:v{version}"


class BundleError(RuntimeError):
    """A bento that cannot be built (no champion, a build that failed), exported or pulled; the message says what
    to do."""


# The build subprocess's exit status when the bento was built but could not be exported (its one line says why).
EXPORT_FAILED = 3


@dataclass(frozen=True)
class BuiltBento:
    tag: str
    versions: dict[str, str]
    size_bytes: int
    path: str
    reused: bool
    source_hash: str
    exported: str | None = None  # the archive's URI, when exported to object storage


def live_versions(registry: ModelRegistry, pipeline: str) -> dict[str, str]:
    """champion, challenger and the champion's predecessor, as the registry says now."""
    aliases = registry.aliases(pipeline)
    if CHAMPION not in aliases:
        raise BundleError(f"model {pipeline!r} has no champion yet: train and promote one before building a bento")
    versions = {CHAMPION: aliases[CHAMPION]}
    if CHALLENGER in aliases:
        versions[CHALLENGER] = aliases[CHALLENGER]
    previous = registry.version(pipeline, aliases[CHAMPION]).tags.get(PREVIOUS_CHAMPION_TAG)
    if previous:
        versions[PREVIOUS] = previous
    return versions


def stage_sources(specs_dir: Path, target: Path) -> str:
    """Copy the specs and this package's source into `target`; returns a hash of what was copied."""
    package = Path(mlops_assets.__file__).parent
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(package, target / "mlops_assets", ignore=ignore)
    shutil.copytree(specs_dir, target / "specs", ignore=ignore)
    digest = hashlib.sha256()
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(target)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build_bento(
    pipeline: str,
    specs_dir: Path,
    registry: ModelRegistry,
    bentoml_home: Path,
    timeout: float = 600,
    export_root: str | None = None,
) -> BuiltBento:
    """Import the live versions into BentoML's model store and build a bento, unless an identical one exists; then,
    given `export_root` (s3://bucket/prefix), export it there unless it is there already."""
    versions = live_versions(registry, pipeline)
    with tempfile.TemporaryDirectory(prefix="bento-") as folder:
        staging = Path(folder)
        source_hash = stage_sources(specs_dir, staging / "context")
        models = {}
        for version in sorted(set(versions.values()), key=int):
            models[version] = str(registry.download_model(pipeline, version, staging / "models" / version))
        request = {
            "pipeline": pipeline,
            "versions": versions,
            "models": models,
            "source_hash": source_hash,
            "export": f"{export_root.rstrip('/')}/{pipeline}" if export_root else None,
        }
        done = subprocess.run(
            [sys.executable, "-m", "mlops_assets.core.serving.bundle", json.dumps(request)],
            cwd=staging / "context",
            env={**os.environ, "BENTOML_HOME": str(bentoml_home), "BENTOML_DO_NOT_TRACK": "True"},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if done.returncode == EXPORT_FAILED:
        raise BundleError(done.stdout.strip().splitlines()[-1])
    if done.returncode != 0:
        raise BundleError(f"building the bento of {pipeline!r} failed:\n{done.stderr[-3000:]}")
    return BuiltBento(**json.loads(done.stdout.strip().splitlines()[-1]))


def bento_file(folder: str, tag: str) -> str:
    """Where a bento's archive is exported under `folder`: `<name>-<version>.bento`, as `bentoml export` names it."""
    name, _, version = tag.partition(":")
    return f"{folder}/{name}-{version}.bento"


def pull_bento(uri: str) -> str:
    """Import the bento archived at `uri` (s3://..., or a file) into this process's BentoML home (BENTOML_HOME, set
    by the caller), unless that bento is there already; its tag."""
    import bentoml

    from mlops_assets.core.object_store import explain, storage_errors

    failures: tuple[type[Exception], ...] = (*storage_errors(), ValueError, bentoml.exceptions.BentoMLException)
    try:
        bento = bentoml.Bento.import_from(uri)  # read, not yet in the store
    except failures as exc:
        raise BundleError(f"cannot import the bento {explain(uri, exc)}") from exc
    try:
        return str(bentoml.bentos.get(bento.tag).tag)
    except bentoml.exceptions.NotFound:
        return str(bento.save().tag)


def load_version(pipeline: str, version: str, registry: ModelRegistry | None) -> Any:
    """A version's inference pipeline: from the bento's model store when bundled, else from the MLflow registry."""
    import bentoml
    import mlflow.sklearn

    try:
        model = bentoml.models.get(model_tag(pipeline, version))
    except bentoml.exceptions.NotFound:
        if registry is None:
            raise
        return registry.load_sklearn(pipeline, version)
    return mlflow.sklearn.load_model(model.path)


def version_check_rows(pipeline: str, version: str, registry: ModelRegistry | None) -> list[dict[str, Any]]:
    """The rows a version was registered with (a sample of its holdout's inputs, its MLflow input example), as
    serving's rows (missing values None): its compiled scoring is checked on them when it loads."""
    import bentoml

    try:
        example = input_example(bentoml.models.get(model_tag(pipeline, version)).path)
    except bentoml.exceptions.NotFound:
        if registry is None:
            raise
        example = registry.input_example(pipeline, version)
    if example is None:
        return []
    records: list[dict[str, Any]] = example.astype(object).where(example.notna(), None).to_dict("records")
    return records


def bundled_aliases() -> dict[str, str]:
    """The aliases recorded in the bento being served (empty when serving from source)."""
    import bentoml

    args = bentoml.use_arguments()
    return {alias: str(getattr(args, alias)) for alias in (CHAMPION, CHALLENGER) if getattr(args, alias, None)}


def _build_here(request: dict[str, Any]) -> BuiltBento:
    """Runs in the build subprocess (BENTOML_HOME set, cwd = the staged context)."""
    import bentoml

    pipeline, versions = request["pipeline"], request["versions"]
    tags = []
    for version, folder in request["models"].items():
        tag = model_tag(pipeline, version)
        tags.append(tag)
        try:
            bentoml.models.get(tag)
        except bentoml.exceptions.NotFound:
            labels = {"pipeline": pipeline, "mlflow_version": version}
            with bentoml.models.create(tag, labels=labels, metadata={"source": f"models:/{pipeline}/{version}"}) as m:
                shutil.copytree(folder, m.path, dirs_exist_ok=True)
    labels = {"pipeline": pipeline, "source_hash": request["source_hash"], **{k: str(v) for k, v in versions.items()}}
    try:
        same = [b for b in bentoml.bentos.list(bento_name(pipeline)) if b.info.labels == labels]
    except bentoml.exceptions.NotFound:  # the pipeline's first bento
        same = []
    reused = bool(same)
    if same:  # the same models, specs and code: nothing to build
        built = max(same, key=lambda b: b.info.creation_time)
    else:
        built = bentoml.bentos.build(
            SERVICE,
            name=bento_name(pipeline),
            labels=labels,
            description=f"Prediction service of the {pipeline!r} pipeline (mlops-assets)",
            include=["mlops_assets/**", "specs/**"],
            python={"packages": [f"{p}=={installed_version(p)}" for p in RUNTIME_PACKAGES], "lock_packages": False},
            models=[*tags],  # a new list: bentoml types it as an (invariant) list of model specs, tags or dicts
            build_ctx=".",
            args={"pipeline": pipeline, "specs_dir": "specs", **versions},
        )
    path = Path(built.path)
    folders = [path, *(Path(bentoml.models.get(tag).path) for tag in tags)]
    size = sum(f.stat().st_size for folder in folders for f in folder.rglob("*") if f.is_file())
    exported = _export(str(built.tag), request["export"]) if request["export"] else None
    return BuiltBento(str(built.tag), versions, size, str(path), reused, request["source_hash"], exported)


class _ExportFailed(Exception):
    pass


def _export(tag: str, folder: str) -> str:
    """Runs in the build subprocess: the bento's archive at its place under `folder`, written unless it is there
    (whole or not at all: BentoML compresses it locally, then uploads it as one object)."""
    import bentoml
    import fsspec

    from mlops_assets.core.object_store import explain, storage_errors

    target = bento_file(folder, tag)
    failures: tuple[type[Exception], ...] = (*storage_errors(), bentoml.exceptions.BentoMLException)
    try:
        if not fsspec.url_to_fs(target)[0].exists(target):
            bentoml.export_bento(tag, target)
    except failures as exc:
        raise _ExportFailed(f"the bento {tag} was built but cannot be exported: {explain(target, exc)}") from exc
    return target


if __name__ == "__main__":
    try:
        print(json.dumps(asdict(_build_here(json.loads(sys.argv[1])))))
    except _ExportFailed as failed:
        print(str(failed))
        sys.exit(EXPORT_FAILED)
