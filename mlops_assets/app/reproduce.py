"""`mlops reproduce`: rebuild a registered version's training set from the Delta versions it recorded, retrain it with
its recorded spec and seed in a scratch registry, and compare the two models on the version's frozen holdout.

Nothing of the project is written: the scratch training set and registry live in a temporary folder, removed after.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from deltalake.exceptions import DeltaError
from pydantic import ValidationError

from mlops_assets.app.workspace import AppError, Workspace
from mlops_assets.core.lake import Location, content_hash, overwrite_table, scan_table
from mlops_assets.core.models.lineage import LineageError, trained_on
from mlops_assets.core.models.modeling import (
    predict,
    to_pandas,
    train_candidate,
)
from mlops_assets.core.models.provenance import git_commit, package_versions
from mlops_assets.core.models.registry import ModelRegistry, RegistryError
from mlops_assets.core.models.reproduction import Reproduction, changes, largest_difference
from mlops_assets.core.training.training_set import training_set_chunks
from mlops_assets.defs.keys import feature_key, raw_key, table_of, training_set_key
from mlops_assets.spec import PipelineSpec

# What a version must have recorded to be reproduced (the model asset records them all: core/models/lineage.py).
LINEAGE_TAGS = ("training_set_delta_version", "input_delta_versions", "training_set_hash", "holdout_cutoff")


def recorded_spec(registry: ModelRegistry, pipeline: str, run_id: str) -> PipelineSpec:
    """The spec the version was trained with (its run's spec.json, as declared), not today's file."""
    try:
        return PipelineSpec.model_validate(registry.json_artifact(run_id, "spec.json"))
    except ValidationError as exc:
        raise AppError(
            f"the spec {pipeline!r} was trained with (spec.json of run {run_id}) no longer loads: {exc.errors()[0]}"
        ) from None


def pinned(root: Location, key: dg.AssetKey, versions: dict[str, Any]) -> pl.LazyFrame:
    """The table of `key` as the version read it (Delta time travel to the recorded version); a version that was
    vacuumed, or a table that is gone, is an AppError naming both."""
    name = key.to_user_string()
    if name not in versions:
        raise AppError(f"the version recorded no Delta version of {name} (recorded: {sorted(versions)})")
    path = table_of(root, key)
    try:
        frame = pl.scan_delta(str(path), version=int(versions[name]))
        frame.collect_schema()
    except (DeltaError, OSError) as exc:
        raise AppError(f"{name}: Delta version {versions[name]} of {path} cannot be read ({exc})") from None
    return frame


def reproduce(workspace: Workspace, pipeline: str, version: str) -> Reproduction:
    registry = workspace.registry
    try:
        registered = registry.version(pipeline, version)
    except RegistryError as exc:
        raise AppError(str(exc)) from None
    tags = registered.tags
    missing = [tag for tag in LINEAGE_TAGS if tag not in tags]
    if missing:
        raise AppError(f"version {version} of {pipeline!r} was registered without its lineage (tags {missing})")
    spec = recorded_spec(registry, pipeline, registered.run_id)
    if spec.model is None:
        raise AppError(f"the spec version {version} of {pipeline!r} was trained with declares no model")
    task, root = spec.model.task, workspace.lake
    versions = json.loads(tags["input_delta_versions"])
    labels = pinned(root, raw_key(spec, spec.label.source), versions)
    features = {view: pinned(root, feature_key(spec, view), versions) for view in spec.feature_views}
    as_of = tags.get("training_as_of", "now")

    with tempfile.TemporaryDirectory(prefix="mlops-reproduce-") as scratch:
        folder = Path(scratch)
        chunks = training_set_chunks(
            spec, labels, features, as_of=None if as_of == "now" else datetime.fromisoformat(as_of)
        )
        overwrite_table(folder / "training_set", (frame for frame, _ in chunks))
        rebuilt = scan_table(folder / "training_set").collect()
        trained = train_candidate(spec, rebuilt)
        # Registered and loaded back as the model asset does: the skops round trip is part of what is compared.
        scratch_registry = ModelRegistry(f"sqlite:///{folder / 'mlflow.db'}", folder / "mlartifacts")
        columns = trained.columns
        logged = scratch_registry.log_candidate(
            pipeline,
            trained.pipeline,
            to_pandas(rebuilt.head(5), columns),
            params={},
            metrics=trained.evaluation.metrics,
            tags={},
            artifacts={},
            required=set(),
            task=task,
        )
        retrained = scratch_registry.load_sklearn(pipeline, logged.version)

    try:
        _, holdout = trained_on(spec, table_of(root, training_set_key(spec)), tags)
    except LineageError as exc:
        raise AppError(f"{training_set_key(spec).to_user_string()}: {exc}") from None
    inputs = to_pandas(holdout, columns)
    difference = largest_difference(
        predict(registry.load_sklearn(pipeline, version), inputs, task), predict(retrained, inputs, task)
    )
    today = workspace.specs.get(pipeline)
    now = {"git commit": git_commit(), "spec (today's file)": today.fingerprint() if today else "absent"}
    recorded = {"git commit": tags.get("git_commit", "not recorded"), "spec (today's file)": tags.get("spec_hash", "")}
    # The recorded declaration read with today's defaults: another fingerprint means a default changed since.
    recorded["spec as trained"], now["spec as trained"] = tags.get("spec_hash", ""), spec.fingerprint()
    if trained.cutoff.isoformat() != tags["holdout_cutoff"]:
        recorded["holdout cutoff"], now["holdout cutoff"] = tags["holdout_cutoff"], trained.cutoff.isoformat()
    packages = registry.json_artifact(registered.run_id, "packages.json")
    return Reproduction(
        pipeline,
        version,
        rebuilt.height,
        content_hash(rebuilt) == tags["training_set_hash"],
        holdout.height,
        difference,
        {**changes(recorded, now), **changes(packages, package_versions(), "package ")},
    )
