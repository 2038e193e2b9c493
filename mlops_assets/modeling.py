"""Training and evaluation: the whole inference pipeline (preprocessing + estimator), a time-based split, metrics.

No MLflow and no Dagster here: these functions take frames and return models and numbers.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import average_precision_score, log_loss, precision_score, recall_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlops_assets.spec import ModelSpec, PipelineSpec, PromotionSpec, parse_duration

LOWER_IS_BETTER = {"log_loss"}


class ModelError(ValueError):
    """A model that cannot be trained or evaluated as declared; the message names the spec field or the data."""


@dataclass(frozen=True)
class Columns:
    numeric: list[str]
    categorical: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    slices: dict[str, dict[str, float | None]] = field(default_factory=dict)
    rows: int = 0


def model_columns(spec: PipelineSpec, training: pl.DataFrame) -> Columns:
    """The model's inputs: the declared list, or every feature and request feature; types from the data."""
    model = _model(spec)
    keys = {*spec.entity.keys, spec.label.prediction_timestamp, spec.label.timestamp, spec.label.column}
    names = model.features or [c for c in training.columns if c not in keys]
    missing = [c for c in names if c not in training.columns]
    if missing:
        raise ModelError(f"model.features: {missing} are not columns of the training set")
    declared = model.preprocessing.categorical
    categorical = declared if declared is not None else [c for c in names if training.schema[c] == pl.String]
    return Columns([c for c in names if c not in categorical], [c for c in names if c in categorical])


def _model(spec: PipelineSpec) -> ModelSpec:
    if spec.model is None:
        raise ModelError(f"pipeline {spec.name!r} declares no 'model' section")
    return spec.model


def time_split(frame: pl.DataFrame, timestamp: str, holdout: timedelta) -> tuple[pl.DataFrame, pl.DataFrame, datetime]:
    """Train on everything before the last `holdout` period, evaluate on that period: never a random shuffle."""
    if frame.height == 0:
        raise ModelError("the training set is empty: materialize more days of data and labels")
    cutoff = frame.get_column(timestamp).max() - holdout
    train, test = frame.filter(pl.col(timestamp) <= cutoff), frame.filter(pl.col(timestamp) > cutoff)
    if train.height == 0 or test.height == 0:
        raise ModelError(
            f"model.holdout: a holdout of {holdout} leaves {train.height} training and {test.height} holdout rows"
        )
    return train, test, cutoff


def load_estimator(model: ModelSpec, seed: int) -> BaseEstimator:
    module_name, _, name = model.estimator.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ModelError(f"model.estimator: cannot import {model.estimator!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise ModelError(f"model.estimator: {model.estimator!r} is not a scikit-learn estimator class")
    params = dict(model.params)
    if "random_state" in inspect.signature(cls).parameters:
        params.setdefault("random_state", seed)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ModelError(f"model.params: {model.estimator} rejects the parameters {sorted(params)} ({exc})") from None


def build_pipeline(model: ModelSpec, columns: Columns) -> Pipeline:
    """Preprocessing and estimator as one sklearn Pipeline: what is logged is what serving runs."""
    prep = model.preprocessing
    numeric_steps: list[tuple[str, Any]] = [
        (
            "impute",
            SimpleImputer(strategy="constant", fill_value=0)
            if prep.numeric_impute == "zero"
            else SimpleImputer(strategy=prep.numeric_impute),
        )
    ]
    if prep.scale:
        numeric_steps.append(("scale", StandardScaler()))
    encoder = (
        OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=prep.max_categories, sparse_output=False)
        if prep.categorical_encoding == "onehot"
        else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2)
    )
    transformer = ColumnTransformer(
        [("numeric", Pipeline(numeric_steps), columns.numeric), ("categorical", encoder, columns.categorical)],
        verbose_feature_names_out=False,
    )
    return Pipeline([("preprocess", transformer), ("estimator", load_estimator(model, model.seed))])


def to_pandas(frame: pl.DataFrame, columns: Columns) -> pd.DataFrame:
    """Model input as pandas: floats for numeric columns (nulls as NaN), objects for categorical ones."""
    out = frame.select(
        *[pl.col(c).cast(pl.Float64) for c in columns.numeric],
        *[pl.col(c).cast(pl.String) for c in columns.categorical],
    ).to_pandas()
    for c in columns.categorical:
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


def rows_to_pandas(rows: Sequence[Mapping[str, Any]], columns: Columns) -> pd.DataFrame:
    """`to_pandas` for a few rows given as dicts (serving's request path), without building a polars frame first.

    Same values and dtypes as `to_pandas(pl.DataFrame(rows), columns)`: a test holds the two equal.
    """
    data: dict[str, Any] = {
        c: np.array([np.nan if (v := r.get(c)) is None else float(v) for r in rows], dtype=np.float64)
        for c in columns.numeric
    }
    for c in columns.categorical:
        data[c] = np.array([_as_string(r.get(c)) for r in rows], dtype=object)
    return pd.DataFrame(data, columns=columns.all)


def _as_string(value: Any) -> str | None:
    """A value as polars casts it to String (booleans are 'true'/'false')."""
    if value is None or isinstance(value, str):
        return value
    return str(value).lower() if isinstance(value, bool) else str(value)


def fit(pipeline: Pipeline, train: pl.DataFrame, columns: Columns, label: str) -> Pipeline:
    y = train.get_column(label).to_numpy()
    classes = np.unique(y)
    if len(classes) < 2:
        raise ModelError(f"the training set has a single class of {label!r} ({classes.tolist()}): nothing to learn")
    try:
        return pipeline.fit(to_pandas(train, columns), y)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"model.params: the estimator failed to fit ({exc})") from exc


def scores(pipeline: Pipeline, frame: pl.DataFrame, columns: Columns) -> np.ndarray:
    return pipeline.predict_proba(to_pandas(frame, columns))[:, 1]


def compute_metrics(y: np.ndarray, p: np.ndarray, metrics: list[str], threshold: float) -> dict[str, float | None]:
    """The declared metrics; a ranking metric is None (not 0) where one class is absent."""
    both = len(np.unique(y)) == 2
    decided = (p >= threshold).astype(int)
    table = {
        "roc_auc": lambda: roc_auc_score(y, p) if both else None,
        "pr_auc": lambda: average_precision_score(y, p) if both else None,
        "log_loss": lambda: log_loss(y, p, labels=[0, 1]),
        "precision": lambda: precision_score(y, decided, zero_division=0),
        "recall": lambda: recall_score(y, decided, zero_division=0),
    }
    return {m: (None if (v := table[m]()) is None else float(v)) for m in metrics}


def evaluate(pipeline: Pipeline, holdout: pl.DataFrame, columns: Columns, model: ModelSpec, label: str) -> Evaluation:
    slice_values = holdout.get_column(model.slice_by) if model.slice_by else None
    try:
        return evaluate_scores(
            holdout.get_column(label).to_numpy(), scores(pipeline, holdout, columns), slice_values, model
        )
    except ModelError as exc:
        raise ModelError(f"the holdout has a single class of {label!r}: choose a longer model.holdout") from exc


def evaluate_scores(y: np.ndarray, p: np.ndarray, slice_values: pl.Series | None, model: ModelSpec) -> Evaluation:
    """The declared metrics overall and per slice value, from labels and scores."""
    overall = compute_metrics(y, p, model.metrics, model.threshold)
    if any(v is None for v in overall.values()):
        raise ModelError("the labels have a single class: ranking metrics are undefined")
    slices: dict[str, dict[str, float | None]] = {}
    if slice_values is not None:
        values = slice_values.cast(pl.String).fill_null("(null)").to_numpy()
        for value in sorted(set(values.tolist())):
            mask = values == value
            slices[str(value)] = {
                **compute_metrics(y[mask], p[mask], model.metrics, model.threshold),
                "rows": int(mask.sum()),
            }
    return Evaluation(metrics={k: float(v) for k, v in overall.items() if v is not None}, slices=slices, rows=len(y))


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]


def _better(metric: str, new: float, old: float) -> float:
    """How much better `new` is than `old` (positive = better), whatever the metric's direction."""
    return old - new if metric in LOWER_IS_BETTER else new - old


def promotion_gate(candidate: Evaluation, champion: Evaluation | None, promotion: PromotionSpec) -> GateDecision:
    """Pass only if the candidate meets the minimum, beats the champion by the margin and no guarded slice drops."""
    metric = promotion.metric
    value = candidate.metrics[metric]
    reasons: list[str] = []
    meets = _better(metric, value, promotion.minimum) >= 0
    reasons.append(f"{metric} {value:.4f} {'meets' if meets else 'misses'} the minimum {promotion.minimum}")
    passed = meets
    if champion is not None:
        old = champion.metrics[metric]
        gain = _better(metric, value, old)
        needed = promotion.min_improvement * (abs(old) if promotion.improvement == "relative" else 1.0)
        ok = gain >= needed
        passed &= ok
        reasons.append(
            f"{metric} improves on the champion by {gain:+.4f} ({'>=' if ok else '<'} required {needed:.4f})"
        )
        if promotion.max_slice_drop is not None:
            for name, metrics in candidate.slices.items():
                before = champion.slices.get(name, {})
                new, old_slice = metrics.get(metric), before.get(metric)
                if new is None or old_slice is None or (metrics.get("rows") or 0) < promotion.min_slice_rows:
                    continue
                drop = -_better(metric, new, old_slice)
                if drop > promotion.max_slice_drop:
                    passed = False
                    reasons.append(f"slice {name!r}: {metric} drops by {drop:.4f} (guard {promotion.max_slice_drop})")
    return GateDecision(passed, reasons)


def holdout_delta(spec: PipelineSpec) -> timedelta:
    return parse_duration(_model(spec).holdout)


@dataclass(frozen=True)
class TrainedCandidate:
    pipeline: Pipeline
    columns: Columns
    evaluation: Evaluation
    cutoff: datetime
    train_rows: int
    importance: dict[str, float]


def train_candidate(spec: PipelineSpec, training: pl.DataFrame) -> TrainedCandidate:
    """Split by time, fit the inference pipeline, evaluate on the holdout, rank the inputs by importance."""
    # Rows in time order whatever order the table's files gave them (it is written a chunk of label days at a time).
    training = training.sort(spec.label.prediction_timestamp, *spec.entity.keys, maintain_order=True)
    model = _model(spec)
    label = spec.label.column
    columns = model_columns(spec, training)
    train, holdout, cutoff = time_split(training, spec.label.prediction_timestamp, holdout_delta(spec))
    pipeline = fit(build_pipeline(model, columns), train, columns, label)
    evaluation = evaluate(pipeline, holdout, columns, model, label)
    return TrainedCandidate(
        pipeline,
        columns,
        evaluation,
        cutoff,
        train.height,
        permutation_importance_of(pipeline, holdout, columns, model, label),
    )


def frozen_holdout(spec: PipelineSpec, training: pl.DataFrame, cutoff: datetime) -> pl.DataFrame:
    """The holdout a candidate was evaluated on, rebuilt from the training set version it was trained on."""
    return training.filter(pl.col(spec.label.prediction_timestamp) > cutoff)


def permutation_importance_of(
    pipeline: Pipeline, holdout: pl.DataFrame, columns: Columns, model: ModelSpec, label: str, rows: int = 2000
) -> dict[str, float]:
    """Mean drop of PR AUC when each input is shuffled, on a seeded sample of the holdout."""
    from sklearn.inspection import permutation_importance

    sample = holdout.sample(min(rows, holdout.height), seed=model.seed)
    y = sample.get_column(label).to_numpy()
    if len(np.unique(y)) < 2:
        sample, y = holdout, holdout.get_column(label).to_numpy()
    result = permutation_importance(
        pipeline, to_pandas(sample, columns), y, scoring="average_precision", n_repeats=3, random_state=model.seed
    )
    ranked = sorted(zip(columns.all, result.importances_mean, strict=True), key=lambda item: -item[1])
    return {name: round(float(value), 6) for name, value in ranked}


def fitted_columns(pipeline: Pipeline) -> Columns:
    """The inputs a fitted inference pipeline expects, split as it was trained."""
    parts = {name: list(columns) for name, _, columns in pipeline.named_steps["preprocess"].transformers_}
    return Columns(parts.get("numeric", []), parts.get("categorical", []))
