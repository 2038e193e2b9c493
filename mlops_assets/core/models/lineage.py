"""What a candidate is registered with, so that its prediction can be reproduced: the data versions and hashes it was
trained on, the code, seed and packages, its parameters and metrics, and why it was trained."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
from deltalake.exceptions import DeltaError

from mlops_assets.core.lake import Location, content_hash
from mlops_assets.core.models.modeling import TrainedCandidate, frozen_holdout
from mlops_assets.core.models.provenance import git_commit, package_versions
from mlops_assets.core.models.registry import metric_key
from mlops_assets.core.monitoring.retraining import TAG_PREFIX
from mlops_assets.spec import PipelineSpec

# Run tags with this prefix say why a retraining was requested (reason, windows, checks, details): kept, unprefixed.
RETRAIN_TAG_PREFIX = f"{TAG_PREFIX}retrain"


@dataclass(frozen=True)
class CandidateRecord:
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: dict[str, Any]
    required: set[str]  # request features a prediction cannot do without


def candidate_record(
    spec: PipelineSpec,
    trained: TrainedCandidate,
    training: pl.DataFrame,
    training_version: int | None,
    inputs: Mapping[str, Any],
    run_id: str,
    run_tags: Mapping[str, str],
    as_of: str = "now",
) -> CandidateRecord:
    """The record of a trained candidate: `training` is the training set at Delta version `training_version`,
    `inputs` the Delta versions of the tables it was built from (as known at `as_of`: the training set's config),
    `run_tags` those of the run that trained it."""
    assert spec.model is not None
    model, evaluation = spec.model, trained.evaluation
    tags = {
        "dagster_run_id": run_id,
        "pipeline": spec.name,
        "spec_hash": spec.fingerprint(),
        "git_commit": git_commit(),
        "training_set_hash": content_hash(training),
        "training_set_delta_version": str(training_version),
        "input_delta_versions": json.dumps(dict(inputs), sort_keys=True),
        "training_as_of": as_of,
        "training_from": str(training.get_column(spec.label.prediction_timestamp).min()),
        "holdout_cutoff": trained.cutoff.isoformat(),
        "seed": str(model.seed),
        **{k.removeprefix(TAG_PREFIX): v for k, v in run_tags.items() if k.startswith(RETRAIN_TAG_PREFIX)},
    }
    slice_metrics = {
        f"slice.{metric_key(name)}.{metric}": value
        for name, values in evaluation.slices.items()
        for metric, value in values.items()
        if value is not None and metric != "rows"
    }
    class_metrics = {
        f"class.{metric_key(name)}.recall": values["recall"]
        for name, values in evaluation.per_class.items()
        if values["recall"] == values["recall"]  # a class absent from the holdout has no recall (NaN)
    }
    params = {
        "estimator": model.estimator,
        **{f"param.{k}": v for k, v in model.params.items()},
        "preprocessing": model.preprocessing.model_dump(),
        "features": trained.columns.all,
        "holdout": model.holdout,
        "task": model.task,
        **({"threshold": model.threshold} if model.task == "binary" else {}),
        "seed": model.seed,
    }
    metrics = {
        **evaluation.metrics,
        **slice_metrics,
        **class_metrics,
        "train_rows": trained.train_rows,
        "holdout_rows": evaluation.rows,
    }
    artifacts = {
        "slices.json": evaluation.slices,
        **({"per_class.json": evaluation.per_class} if evaluation.per_class else {}),
        "feature_importance.json": trained.importance,
        "packages.json": package_versions(),
        # As declared (defaults left out): it loads back into the same spec, whose fingerprint is the spec_hash tag.
        "spec.json": spec.model_dump(mode="json", exclude_unset=True),
    }
    required = {name for name, column in spec.request_features.items() if not column.nullable}
    return CandidateRecord(params, metrics, tags, artifacts, required)


class LineageError(ValueError):
    """What a version was registered with can no longer be read (a vacuumed Delta version, a table gone)."""


def trained_on(spec: PipelineSpec, table: Location, tags: Mapping[str, str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training set, frozen holdout) of a registered version: the training set table at `table` read at the Delta
    version the version's tags record, and the rows after its holdout cutoff, which it was evaluated on and never
    trained on."""
    try:
        version, cutoff = int(tags["training_set_delta_version"]), datetime.fromisoformat(tags["holdout_cutoff"])
    except (KeyError, ValueError) as exc:
        problem = f"tag {exc} is missing" if isinstance(exc, KeyError) else f"tags are unreadable ({exc})"
        raise LineageError(
            f"the version's {problem}: training_set_delta_version and holdout_cutoff say what it was trained on"
        ) from None
    try:
        training = pl.read_delta(str(table), version=version)
    except (DeltaError, OSError) as exc:
        raise LineageError(f"the training set {table} at Delta version {version} cannot be read ({exc})") from None
    return training, frozen_holdout(spec, training, cutoff)
