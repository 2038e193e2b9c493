"""A fitted inference pipeline's preprocessing as plain numpy, for scoring a few rows at a time.

scikit-learn's ColumnTransformer, imputer and encoders pay a pandas round trip on every call: for one served row that
is most of the time of a request, and the estimator itself a small part. The preprocessing `build_pipeline` makes is
column by column (impute and scale a number, encode a category), so it compiles into arrays and lookup tables read
from the fitted pipeline: each categorical column's output block for every category it knows, for a missing value and
for an unseen one, taken from the fitted encoder itself (so no encoder rule is written twice). The registered artifact
stays the pipeline; a compiled transform is only used after it gave the pipeline's own output on check rows
(`check`), and the estimator is the pipeline's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlops_assets.core.models.modeling import Outputs, as_string, fitted_columns, predict, rows_to_pandas

# How far the compiled output may be from the pipeline's (absolute, on every output of every check row).
TOLERANCE = 1e-12
# Up to this many rows at once the compiled trees score faster than scikit-learn's tree-by-tree walk (a level of all
# trees costs numpy a few passes over rows x trees); above it, scikit-learn's own walk, vectorized over the rows.
TREE_ROWS = 16
# A category no training row had: the encoders give every unseen value the same output.
UNSEEN = "\x00mlops-unseen-category\x00"


class NotCompilable(ValueError):
    """A pipeline whose preprocessing is not the column-by-column kind `build_pipeline` makes."""


@dataclass(frozen=True)
class Categorical:
    """One categorical input: its output block for each known value (None: missing) and for any other value."""

    name: str
    blocks: dict[str | None, np.ndarray]
    unseen: np.ndarray


@dataclass(frozen=True)
class CompiledTransform:
    """The preprocessing of a fitted pipeline: numeric inputs imputed (and scaled), categorical ones looked up."""

    numeric: list[str]  # the numeric inputs the imputer kept (it drops those that were all missing in training)
    fill: np.ndarray
    mean: np.ndarray | None
    scale: np.ndarray | None
    categorical: list[Categorical]

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The estimator's input for rows given as dicts (missing keys and None are missing values)."""
        numbers = np.array(
            [[np.nan if (v := r.get(c)) is None else float(v) for c in self.numeric] for r in rows], dtype=np.float64
        ).reshape(len(rows), len(self.numeric))
        missing = np.isnan(numbers)
        if missing.any():
            numbers[missing] = np.broadcast_to(self.fill, numbers.shape)[missing]
        # The same float operations, in the same order, as StandardScaler.transform: the same bits.
        if self.mean is not None:
            numbers -= self.mean
        if self.scale is not None:
            numbers /= self.scale
        blocks = [
            np.stack([c.blocks.get(v, c.unseen) for v in (as_string(r.get(c.name)) for r in rows)])
            if rows
            else np.empty((0, c.unseen.size))
            for c in self.categorical
        ]
        # In the memory order the pipeline gives its estimator (numbers alone: column-major, as the imputer makes them
        # from a pandas frame), so that even a BLAS-backed estimator computes exactly the same floats.
        return np.hstack([numbers, *blocks]) if blocks else np.asfortranarray(numbers)


def compile_transform(pipeline: Pipeline) -> CompiledTransform:
    """The pipeline's preprocessing compiled; NotCompilable when it is not one `build_pipeline` makes."""
    preprocess = pipeline.named_steps.get("preprocess")
    if not isinstance(preprocess, ColumnTransformer) or len(pipeline.steps) != 2:
        raise NotCompilable("not a (preprocess, estimator) pipeline")
    columns = fitted_columns(pipeline)
    fitted = {name: step for name, step, _ in preprocess.transformers_}
    if preprocess.remainder != "drop" or set(fitted) - {"numeric", "categorical", "remainder"}:
        raise NotCompilable(f"unknown transformers {sorted(fitted)}")
    numeric, fill, mean, scale = _numeric(fitted.get("numeric"), columns.numeric)
    encoder = fitted.get("categorical")
    categorical = _categorical(encoder, columns.categorical) if columns.categorical else []
    return CompiledTransform(numeric, fill, mean, scale, categorical)


def _numeric(steps: Any, names: list[str]) -> tuple[list[str], np.ndarray, np.ndarray | None, np.ndarray | None]:
    if not names:
        return [], np.empty(0), None, None
    kinds = [type(step) for _, step in steps.steps] if isinstance(steps, Pipeline) else [type(steps)]
    if kinds not in ([SimpleImputer], [SimpleImputer, StandardScaler]):
        raise NotCompilable(f"numeric steps {[k.__name__ for k in kinds]}")
    imputer: SimpleImputer = steps.steps[0][1]
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    # The imputer drops an input that was missing in every training row (its statistic is NaN), unless told to keep.
    kept = np.ones(len(names), bool) if imputer.keep_empty_features else ~np.isnan(statistics)
    fill = np.where(np.isnan(statistics), 0.0, statistics)[kept]
    mean = scale = None
    if len(kinds) == 2:
        scaler: StandardScaler = steps.steps[1][1]
        mean = None if scaler.mean_ is None or not scaler.with_mean else np.asarray(scaler.mean_, np.float64)
        scale = None if scaler.scale_ is None or not scaler.with_std else np.asarray(scaler.scale_, np.float64)
    return [n for n, k in zip(names, kept, strict=True) if k], fill, mean, scale


def _categorical(encoder: Any, names: list[str]) -> list[Categorical]:
    """Each column's output blocks, read from the fitted encoder: a column's block is the output columns that change
    when only that column's value does (both encoders encode each column on its own)."""
    if not isinstance(encoder, OneHotEncoder | OrdinalEncoder):
        raise NotCompilable(f"categorical encoder {type(encoder).__name__}")
    values = [[*(_category(v) for v in known), None, UNSEEN] for known in encoder.categories_]
    base = [column[0] for column in values]
    out: list[Categorical] = []
    taken = 0
    for j, name in enumerate(names):
        rows = np.array([base] * len(values[j]), dtype=object)
        rows[:, j] = values[j]
        encoded = np.asarray(encoder.transform(pd.DataFrame(rows, columns=names)), dtype=np.float64)
        varying = np.flatnonzero((encoded != encoded[0]).any(axis=0))
        width = varying.size
        if not width or not np.array_equal(varying, np.arange(taken, taken + width)):
            raise NotCompilable(f"the encoding of {name!r} is not a block of its own")
        block = encoded[:, taken : taken + width]
        out.append(Categorical(name, {v: block[i] for i, v in enumerate(values[j][:-1])}, block[-1]))
        taken += width
    return out


def _category(value: Any) -> str | None:
    """A category as the encoder knows it, as serving's rows give it (text; a missing one, None or NaN, as None)."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else as_string(value)


def check_rows(
    pipeline: Pipeline, transform: CompiledTransform, example: Sequence[Mapping[str, Any]] = ()
) -> list[Mapping[str, Any]]:
    """Rows that take every branch of the transform, then `example`: each known category, a missing and an unseen
    one of each categorical input; a missing value, zero, large values and the fill value of each numeric one."""
    fills = dict(zip(transform.numeric, transform.fill.tolist(), strict=True))
    numbers = {c: [None, 0.0, -1e9, 1e9, 0.5, fills.get(c, 1.0)] for c in fitted_columns(pipeline).numeric}
    categories = {c.name: [*c.blocks, UNSEEN] for c in transform.categorical}
    values: dict[str, list[Any]] = {**numbers, **categories}
    length = max((len(v) for v in values.values()), default=0)
    # Column k starts k values further on, so rows mix the values of the columns.
    rows = [{c: v[(i + k) % len(v)] for k, (c, v) in enumerate(values.items())} for i in range(length)]
    return [*rows, *example]


def largest_difference(pipeline: Pipeline, model: FastModel, rows: Sequence[Mapping[str, Any]]) -> float:
    """The largest absolute difference between the compiled model's outputs and the pipeline's on `rows`, through the
    compiled trees and through the estimator's own walk (inf when shapes differ or only one of them is NaN)."""
    expected = predict(pipeline, rows_to_pandas(rows, fitted_columns(pipeline)), model.task).values
    largest = 0.0
    for trees in {False, model.trees is not None}:
        got = model.outputs(rows, trees=trees).values
        if got.shape != expected.shape:
            return float("inf")
        both_nan = np.isnan(got) & np.isnan(expected)
        largest = max(largest, float(np.max(np.where(both_nan, 0.0, np.abs(got - expected)), initial=0.0)))
    return largest


@dataclass(frozen=True)
class CompiledTrees:
    """A fitted histogram gradient boosting model's trees as flat arrays, walked for every tree at once.

    scikit-learn walks its trees one Python call at a time (150 calls for one row of the demo's model); here one level
    of every tree is a few numpy operations. The walk is the one of scikit-learn's predictor (a missing value goes
    where the node says, a number to the left when at most the threshold), the leaf values are added in the same
    order, starting from the same baseline, and the estimator's own loss turns the sum into its output.
    """

    estimator: Any
    roots: np.ndarray  # (iterations, trees per iteration): each tree's first node in the flat arrays
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray  # a leaf's children are itself, so walking past a leaf stays on it
    right: np.ndarray
    value: np.ndarray
    depth: int

    @classmethod
    def of(cls, estimator: Any) -> CompiledTrees:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        if type(estimator) not in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
            raise NotCompilable(f"estimator {type(estimator).__name__}")
        if getattr(estimator, "_preprocessor", None) is not None:
            raise NotCompilable("the estimator encodes categories itself")
        trees = [tree.nodes for iteration in estimator._predictors for tree in iteration]
        if any(nodes["is_categorical"].any() for nodes in trees):
            raise NotCompilable("the trees split on native categories")
        offsets = np.cumsum([0, *(len(nodes) for nodes in trees[:-1])])
        nodes = np.concatenate(trees)
        own = np.arange(len(nodes))
        shift = np.repeat(offsets, [len(n) for n in trees])
        leaf = nodes["is_leaf"].astype(bool)
        return cls(
            estimator,
            offsets.reshape(len(estimator._predictors), -1),
            nodes["feature_idx"].astype(np.intp),
            nodes["num_threshold"].astype(np.float64),
            nodes["missing_go_to_left"].astype(bool),
            np.where(leaf, own, nodes["left"] + shift),
            np.where(leaf, own, nodes["right"] + shift),
            nodes["value"].astype(np.float64),
            int(max(nodes["depth"].max() for nodes in trees)),
        )

    def raw(self, inputs: np.ndarray) -> np.ndarray:
        """The sum of the leaf values over all trees, per row and tree of an iteration (scikit-learn's raw output)."""
        rows = np.arange(len(inputs))[:, None]
        node = np.broadcast_to(self.roots.ravel(), (len(inputs), self.roots.size))
        for _ in range(self.depth):
            x = inputs[rows, self.feature[node]]
            left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(left, self.left[node], self.right[node])
        values = self.value[node].reshape(len(inputs), *self.roots.shape)
        # baseline, then each iteration's leaf added in turn: the additions scikit-learn makes, in its order.
        baseline = np.broadcast_to(self.estimator._baseline_prediction, (len(inputs), 1, self.roots.shape[1]))
        summed = np.add.accumulate(np.concatenate([baseline, values], axis=1), axis=1)[:, -1, :]
        return np.asfortranarray(summed)

    def outputs(self, inputs: np.ndarray, task: str) -> np.ndarray:
        raw = self.raw(inputs)
        if task == "regression":
            return np.asarray(self.estimator._loss.link.inverse(raw.ravel()), dtype=float)
        return np.asarray(self.estimator._loss.predict_proba(raw))


@dataclass(frozen=True)
class FastModel:
    """A pipeline scored through its compiled preprocessing and its estimator (its trees compiled, when they are)."""

    transform: CompiledTransform
    estimator: Any
    task: str
    classes: tuple[str, ...]
    trees: CompiledTrees | None = None

    def outputs(self, rows: Sequence[Mapping[str, Any]], trees: bool | None = None) -> Outputs:
        """The model's outputs; `trees` forces (or forbids) the compiled trees, else they score up to TREE_ROWS."""
        inputs = self.transform.transform(rows)
        walk = self.trees if (trees if trees is not None else len(rows) <= TREE_ROWS) else None
        if self.task == "regression":
            values = walk.outputs(inputs, self.task) if walk else self.estimator.predict(inputs)
            return Outputs(self.task, np.asarray(values, dtype=float))
        probabilities = walk.outputs(inputs, self.task) if walk else self.estimator.predict_proba(inputs)
        if self.task == "binary":
            return Outputs(self.task, probabilities[:, 1])
        return Outputs(self.task, probabilities, self.classes)


def fast_model(
    pipeline: Pipeline, task: str, example: Sequence[Mapping[str, Any]] = ()
) -> tuple[FastModel | None, str]:
    """The pipeline compiled and checked against itself on `check_rows` (every output within TOLERANCE of the
    pipeline's), or None and why it is not used."""
    try:
        transform = compile_transform(pipeline)
    except NotCompilable as exc:
        return None, f"not compiled ({exc}): scored through the pipeline"
    estimator = pipeline.named_steps["estimator"]
    try:
        trees, how = CompiledTrees.of(estimator), "preprocessing and trees compiled"
    except NotCompilable:
        trees, how = None, "preprocessing compiled"
    classes = tuple(str(c) for c in pipeline.classes_) if task == "multiclass" else ()
    model = FastModel(transform, estimator, task, classes, trees)
    difference = largest_difference(pipeline, model, check_rows(pipeline, transform, example))
    if not difference <= TOLERANCE:
        return None, f"{how}, but {difference:g} away from the pipeline's outputs: scored through the pipeline"
    return model, f"{how}, checked equal to the pipeline's outputs (largest difference {difference:g})"
