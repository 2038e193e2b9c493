"""Training and evaluation: the whole inference pipeline (preprocessing + estimator), a time-based split, metrics.

No MLflow and no Dagster here: these functions take frames and return models and numbers.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
import pandas as pd
import polars as pl
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlops_assets.spec import LOWER_IS_BETTER, ModelSpec, PipelineSpec, PromotionSpec, parse_duration

# How permutation importance scores a shuffled input, per kind of problem (bigger is better for each scorer).
IMPORTANCE_SCORING = {
    "binary": "average_precision",
    "multiclass": "neg_log_loss",
    "regression": "neg_root_mean_squared_error",
}


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
class Outputs:
    """What a model says about rows: the positive class's probability (binary), the predicted value (regression),
    or each class's probability (multiclass: one column per class of `classes`)."""

    task: str
    values: np.ndarray
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.values)

    def take(self, rows: np.ndarray) -> Outputs:
        return Outputs(self.task, self.values[rows], self.classes)

    @property
    def labels(self) -> np.ndarray:
        """Multiclass: the most probable class of each row."""
        labels: np.ndarray = np.asarray(self.classes, dtype=object)[np.argmax(self.values, axis=1)]
        return labels

    @property
    def scores(self) -> np.ndarray:
        """One number per row: the probability or value; multiclass: the probability of the predicted class."""
        return self.values.max(axis=1) if self.task == "multiclass" else self.values


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    slices: dict[str, dict[str, float | None]] = field(default_factory=dict)
    rows: int = 0
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # multiclass: recall and rows by class
    # Protected attribute -> group -> its metrics (None where undefined on the group's rows) and rows.
    groups: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)


def model_columns(spec: PipelineSpec, training: pl.DataFrame) -> Columns:
    """The model's inputs: the declared list, or every feature and request feature; types from the data."""
    model = _model(spec)
    keys = {*spec.entity.keys, spec.label.prediction_timestamp, spec.label.timestamp, spec.label.column}
    keys |= set(spec.evaluation_columns())  # protected attributes carried for evaluation: never an input
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
    # polars types a column's max as any Python literal; a timestamp column's is a datetime (the frame has rows).
    cutoff = cast(datetime, frame.get_column(timestamp).max()) - holdout
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
        data[c] = np.array([as_string(r.get(c)) for r in rows], dtype=object)
    return pd.DataFrame(data, columns=columns.all)


def as_string(value: Any) -> str | None:
    """A value as polars casts it to String (booleans are 'true'/'false')."""
    if value is None or isinstance(value, str):
        return value
    return str(value).lower() if isinstance(value, bool) else str(value)


def targets(values: pl.Series | np.ndarray, task: str, where: str = "label.column") -> np.ndarray:
    """Label values as the model learns them: 0/1 (binary, from ints, floats 0.0/1.0 or booleans), class names as
    text (multiclass), floats (regression). Anything else is an error naming the values found."""
    series = values if isinstance(values, pl.Series) else pl.Series("label", values)
    if series.null_count():
        raise ModelError(f"{where}: {series.null_count()} rows have no label value")
    if task == "regression":
        if not series.dtype.is_numeric():
            raise ModelError(f"{where}: a regression label is numeric, found {series.dtype} values")
        return series.cast(pl.Float64).to_numpy()
    if task == "multiclass":
        return series.cast(pl.String).to_numpy().astype(object)
    found = set(series.unique().to_list())
    if not (series.dtype == pl.Boolean or series.dtype.is_numeric()) or not found <= {0, 1}:
        shown = sorted(map(str, found))[:5]
        raise ModelError(
            f"{where}: a binary label is 0/1 or true/false, found {shown}: declare model.task multiclass for "
            "named classes, or store the label as 0/1"
        )
    return series.cast(pl.Int64).to_numpy()


def fit(pipeline: Pipeline, train: pl.DataFrame, columns: Columns, label: str, task: str = "binary") -> Pipeline:
    y = targets(train.get_column(label), task)
    distinct = np.unique(y)
    if len(distinct) < 2:
        kind = "value" if task == "regression" else "class"
        raise ModelError(f"the training set has a single {kind} of {label!r} ({distinct.tolist()}): nothing to learn")
    try:
        return pipeline.fit(to_pandas(train, columns), y)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"model.params: the estimator failed to fit ({exc})") from exc


def predict(pipeline: Pipeline, inputs: pd.DataFrame, task: str) -> Outputs:
    """The model's outputs for prepared inputs (see `to_pandas` and `rows_to_pandas`)."""
    if task == "regression":
        return Outputs(task, np.asarray(pipeline.predict(inputs), dtype=float))
    probabilities = pipeline.predict_proba(inputs)
    if task == "binary":
        return Outputs(task, probabilities[:, 1])
    return Outputs(task, probabilities, tuple(str(c) for c in pipeline.classes_))


def scores(pipeline: Pipeline, frame: pl.DataFrame, columns: Columns, task: str = "binary") -> np.ndarray:
    """The model's output values for a frame (see `Outputs.values`)."""
    return predict(pipeline, to_pandas(frame, columns), task).values


def compute_metrics(
    y: np.ndarray, out: Outputs, metrics: Sequence[str], threshold: float = 0.5, strict: bool = False
) -> dict[str, float | None]:
    """The declared metrics; None (not 0) where a metric is undefined on these rows: a ranking metric where one
    class is absent, MAPE where a target is zero, R² on fewer than two rows. `strict`: a rate without rows to be a
    rate of is None too (recall without positives, precision without positive decisions), as a group's must be."""
    p = out.values
    table: dict[str, Callable[[], float | None]]
    if out.task == "multiclass":
        classes = list(out.classes)
        predicted = out.labels
        table = {
            "accuracy": lambda: accuracy_score(y, predicted),
            "macro_f1": lambda: f1_score(y, predicted, labels=classes, average="macro", zero_division=0),
            # A class the model never saw makes log-loss undefined (its probability is not among the outputs).
            "log_loss": lambda: log_loss(y, p, labels=classes) if set(y) <= set(classes) else None,
        }
    elif out.task == "regression":
        table = {
            "rmse": lambda: float(np.sqrt(mean_squared_error(y, p))),
            "mae": lambda: mean_absolute_error(y, p),
            "r2": lambda: r2_score(y, p) if len(y) >= 2 else None,
            "mape": lambda: float(np.mean(np.abs((y - p) / y))) if len(y) and np.all(y != 0) else None,
        }
    else:
        both = len(np.unique(y)) == 2
        decided = (p >= threshold).astype(int)
        table = {
            "roc_auc": lambda: roc_auc_score(y, p) if both else None,
            "pr_auc": lambda: average_precision_score(y, p) if both else None,
            "log_loss": lambda: log_loss(y, p, labels=[0, 1]),
            "precision": lambda: None if strict and not decided.any() else precision_score(y, decided, zero_division=0),
            "recall": lambda: None if strict and not np.any(y == 1) else recall_score(y, decided, zero_division=0),
            "false_positive_rate": lambda: float(np.mean(decided[y == 0])) if np.any(y == 0) else None,
            "positive_rate": lambda: float(np.mean(decided)),
            "accuracy": lambda: accuracy_score(y, decided),
        }
    if not len(y):
        return dict.fromkeys(metrics)
    return {m: (None if (v := table[m]()) is None else float(v)) for m in metrics}


def per_class_recall(y: np.ndarray, out: Outputs) -> dict[str, dict[str, float]]:
    """Multiclass: each class's recall (share of its rows predicted as it) and rows, classes the model knows."""
    predicted = out.labels
    return {
        c: {
            "recall": float(np.mean(predicted[y == c] == c)) if np.any(y == c) else float("nan"),
            "rows": float(np.sum(y == c)),
        }
        for c in out.classes
    }


def evaluate(
    pipeline: Pipeline,
    holdout: pl.DataFrame,
    columns: Columns,
    model: ModelSpec,
    label: str,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> Evaluation:
    """The model on the holdout; `groups`: protected attribute (a column of the holdout) -> metrics per group."""
    slice_values = holdout.get_column(model.slice_by) if model.slice_by else None
    missing = [name for name in groups or {} if name not in holdout.columns]
    if missing:
        raise ModelError(f"promotion.fairness: {missing} are not columns of the holdout (columns: {holdout.columns})")
    by_group = {name: (holdout.get_column(name), metrics) for name, metrics in (groups or {}).items()}
    y = targets(holdout.get_column(label), model.task)
    outputs = predict(pipeline, to_pandas(holdout, columns), model.task)
    try:
        return evaluate_scores(y, outputs, slice_values, model, by_group)
    except ModelError as exc:
        raise ModelError(f"{exc} in the holdout: choose a longer model.holdout") from exc


def group_metrics(
    y: np.ndarray, out: Outputs, values: pl.Series, metrics: Sequence[str], threshold: float, strict: bool = False
) -> dict[str, dict[str, float | None]]:
    """The metrics of the rows of each value of `values` (a missing value is the group '(null)'), with their rows."""
    names = values.cast(pl.String).fill_null("(null)").to_numpy()
    groups: dict[str, dict[str, float | None]] = {}
    for value in sorted(set(names.tolist())):
        mask = names == value
        groups[str(value)] = {
            **compute_metrics(y[mask], out.take(mask), metrics, threshold, strict),
            "rows": int(mask.sum()),
        }
    return groups


def evaluate_scores(
    y: np.ndarray,
    out: Outputs,
    slice_values: pl.Series | None,
    model: ModelSpec,
    groups: Mapping[str, tuple[pl.Series, Sequence[str]]] | None = None,
) -> Evaluation:
    """The declared metrics overall and per slice value, from labels and model outputs; `groups`: each protected
    attribute's values and the metrics wanted per group (undefined ones None, see `compute_metrics`)."""
    overall = compute_metrics(y, out, model.metrics, model.threshold)
    if model.task == "binary" and any(v is None for v in overall.values()):
        raise ModelError("the labels have a single class: ranking metrics are undefined")
    slices = {} if slice_values is None else group_metrics(y, out, slice_values, model.metrics, model.threshold)
    return Evaluation(
        metrics={k: float(v) for k, v in overall.items() if v is not None},
        slices=slices,
        rows=len(y),
        per_class=per_class_recall(y, out) if model.task == "multiclass" else {},
        groups={
            name: group_metrics(y, out, values, metrics, model.threshold, strict=True)
            for name, (values, metrics) in (groups or {}).items()
        },
    )


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]

    @classmethod
    def combined(cls, *decisions: GateDecision) -> GateDecision:
        """Decisions taken together: passed when each passed, with every reason."""
        return cls(all(d.passed for d in decisions), [r for d in decisions for r in d.reasons])


def _better(metric: str, new: float, old: float) -> float:
    """How much better `new` is than `old` (positive = better), whatever the metric's direction."""
    return old - new if metric in LOWER_IS_BETTER else new - old


def promotion_gate(candidate: Evaluation, champion: Evaluation | None, promotion: PromotionSpec) -> GateDecision:
    """Pass only if the candidate meets the minimum, beats the champion by the margin and no guarded slice drops."""
    metric = promotion.metric
    assert metric is not None, "filled in with the task's first metric when the spec is loaded"
    if metric not in candidate.metrics:
        return GateDecision(False, [f"{metric} is undefined on these rows (e.g. mape with a zero target)"])
    value = candidate.metrics[metric]
    reasons: list[str] = []
    meets = _better(metric, value, promotion.minimum) >= 0
    reasons.append(f"{metric} {value:.4f} {'meets' if meets else 'misses'} the minimum {promotion.minimum}")
    passed = meets
    if champion is not None and metric in champion.metrics:
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
    pipeline = fit(build_pipeline(model, columns), train, columns, label, model.task)
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
    """Mean drop of the task's score (PR AUC, log-loss, RMSE) when each input is shuffled, on a seeded sample of
    the holdout."""
    from sklearn.inspection import permutation_importance

    sample = holdout.sample(min(rows, holdout.height), seed=model.seed)
    y = targets(sample.get_column(label), model.task)
    if model.task != "regression" and len(np.unique(y)) < len(
        np.unique(targets(holdout.get_column(label), model.task))
    ):
        sample, y = holdout, targets(holdout.get_column(label), model.task)
    scoring = IMPORTANCE_SCORING[model.task]
    if model.task == "multiclass":  # neg_log_loss needs every class the model knows, whatever the sample holds
        from sklearn.metrics import make_scorer

        scoring = make_scorer(
            log_loss, greater_is_better=False, response_method="predict_proba", labels=pipeline.classes_
        )
    result = permutation_importance(
        pipeline, to_pandas(sample, columns), y, scoring=scoring, n_repeats=3, random_state=model.seed
    )
    ranked = sorted(zip(columns.all, result.importances_mean, strict=True), key=lambda item: -item[1])
    return {name: round(float(value), 6) for name, value in ranked}


def fitted_columns(pipeline: Pipeline) -> Columns:
    """The inputs a fitted inference pipeline expects, split as it was trained."""
    parts = {name: list(columns) for name, _, columns in pipeline.named_steps["preprocess"].transformers_}
    return Columns(parts.get("numeric", []), parts.get("categorical", []))
