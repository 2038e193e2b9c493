"""The compiled preprocessing gives the pipeline's own output, bit for bit, on public data of each kind of problem,
with every encoding the spec offers; a pipeline it cannot compile is scored through the pipeline."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mlops_assets.core.models import compiled
from mlops_assets.core.models.compiled import (
    UNSEEN,
    check_rows,
    compile_transform,
    fast_model,
    largest_difference,
)
from mlops_assets.core.models.modeling import Columns, build_pipeline, fit, predict, rows_to_pandas
from mlops_assets.spec import ModelSpec
from tests.public_data import nannyml_csv

# (dataset, label, task): NannyML's car loans (binary), credit card products (multiclass), used car prices (regression).
KINDS = [("loans", "repaid", "binary"), ("cards", "y_true", "multiclass"), ("cars", "y_true", "regression")]
# Trees and a BLAS-backed linear model (whose floats depend on the input's memory order, which the compiled path keeps).
ESTIMATORS = {
    "binary": "sklearn.ensemble.HistGradientBoostingClassifier",
    "multiclass": "sklearn.ensemble.HistGradientBoostingClassifier",
    "regression": "sklearn.linear_model.Ridge",
}


def public_rows(name: str, label: str, rows: int = 6000) -> tuple[pl.DataFrame, Columns]:
    frame = nannyml_csv(name).head(rows)
    frame = frame.drop([c for c in frame.columns if c.startswith("y_pred") or c in ("id", "timestamp")])
    inputs = [c for c in frame.columns if c != label]
    text = [c for c in inputs if frame.schema[c] == pl.String]
    return frame, Columns([c for c in inputs if c not in text], text)


def trained(frame: pl.DataFrame, columns: Columns, label: str, task: str, **preprocessing: object) -> Pipeline:
    params = {"max_iter": 30} if "Hist" in ESTIMATORS[task] else {}
    spec = ModelSpec(task=task, estimator=ESTIMATORS[task], params=params, preprocessing=preprocessing)
    return fit(build_pipeline(spec, columns), frame, columns, label, task)


@pytest.mark.parametrize(
    "preprocessing",
    [
        {"numeric_impute": "median", "scale": True, "categorical_encoding": "onehot", "max_categories": 3},
        {"numeric_impute": "mean", "scale": False, "categorical_encoding": "onehot", "max_categories": 20},
        {"numeric_impute": "zero", "scale": True, "categorical_encoding": "ordinal"},
    ],
    ids=["onehot-infrequent", "onehot", "ordinal"],
)
@pytest.mark.parametrize(("name", "label", "task"), KINDS, ids=[k[0] for k in KINDS])
def test_the_compiled_path_answers_exactly_as_the_pipeline(
    name: str, label: str, task: str, preprocessing: dict[str, object]
) -> None:
    frame, columns = public_rows(name, label)
    train, later = frame.head(4000), frame.tail(2000)
    # Later rows carry what serving meets: missing values and categories no training row had.
    row = pl.int_range(pl.len())
    served = later.with_columns(
        pl.when(row % 7 == 0).then(None).when(row % 11 == 0).then(pl.lit("never seen")).otherwise(pl.col(c)).alias(c)
        if c in columns.categorical
        else pl.when(row % 7 == 0).then(None).otherwise(pl.col(c)).alias(c)
        for c in columns.all
    ).to_dicts()
    pipeline = trained(train, columns, label, task, **preprocessing)

    model, why = fast_model(pipeline, task)

    assert model is not None, why
    assert (model.trees is not None) == ("Hist" in ESTIMATORS[task]), why
    assert largest_difference(pipeline, model, served) == 0.0
    expected = predict(pipeline, rows_to_pandas(served, columns), task)
    got = model.outputs(served)
    assert np.array_equal(got.values, expected.values)
    assert got.classes == expected.classes
    one = predict(pipeline, rows_to_pandas(served[:1], columns), task)  # one row, as /predict scores
    assert np.array_equal(model.outputs(served[:1]).values, one.values)


def test_check_rows_take_every_category_a_missing_and_an_unseen_one() -> None:
    frame, columns = public_rows("cards", "y_true")
    pipeline = trained(frame, columns, "y_true", "multiclass", categorical_encoding="onehot", max_categories=2)
    transform = compile_transform(pipeline)

    rows = check_rows(pipeline, transform)

    for column in columns.categorical:
        seen = {row[column] for row in rows}
        assert set(frame.get_column(column).unique().to_list()) <= seen
        assert {None, UNSEEN} <= seen
    for column in columns.numeric:
        assert None in {row[column] for row in rows}


def test_an_input_missing_in_every_training_row_is_dropped_as_the_imputer_drops_it() -> None:
    frame, columns = public_rows("loans", "repaid", rows=3000)
    frame = frame.with_columns(pl.lit(None, pl.Float64).alias("never_known"))
    columns = Columns([*columns.numeric, "never_known"], columns.categorical)
    rows = frame.with_columns(pl.lit(3.0).alias("never_known")).head(50).to_dicts()
    # scikit-learn warns of the dropped input each time the pipeline fits or transforms.
    with pytest.warns(UserWarning, match="Skipping features without any observed values"):
        pipeline = trained(frame, columns, "repaid", "binary")
        model, why = fast_model(pipeline, "binary")
        assert model is not None, why
        difference = largest_difference(pipeline, model, rows)

    assert "never_known" not in model.transform.numeric
    assert difference == 0.0


def test_a_pipeline_of_other_steps_is_scored_through_the_pipeline_and_says_why() -> None:
    frame, columns = public_rows("loans", "repaid", rows=2000)
    pipeline = Pipeline(
        [("preprocess", FunctionTransformer()), ("estimator", HistGradientBoostingClassifier(max_iter=5))]
    )
    pipeline.fit(frame.select(columns.numeric).to_pandas(), frame.get_column("repaid").to_numpy())

    model, why = fast_model(pipeline, "binary")

    assert model is None
    assert "not compiled" in why and "scored through the pipeline" in why


def test_a_compiled_transform_that_disagrees_with_its_pipeline_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    frame, columns = public_rows("cars", "y_true", rows=3000)
    pipeline = trained(frame, columns, "y_true", "regression", scale=True)
    stale = compile_transform(pipeline)
    # The pipeline's scaler moved after it was compiled, by far less than any input's spread: the check sees it.
    scaler = pipeline.named_steps["preprocess"].named_transformers_["numeric"].named_steps["scale"]
    scaler.mean_ = scaler.mean_ + 1e-9
    monkeypatch.setattr(compiled, "compile_transform", lambda _: stale)

    model, why = compiled.fast_model(pipeline, "regression")

    assert model is None
    assert "away from the pipeline's outputs" in why and "scored through the pipeline" in why


def test_trees_split_on_native_categories_are_left_to_the_estimator() -> None:
    frame, columns = public_rows("loans", "repaid", rows=3000)
    # Ordinal codes declared categorical to the trees themselves: their splits are sets of categories.
    encoded = columns.numeric.index("loan_length") if "loan_length" in columns.numeric else 0
    spec = ModelSpec(
        task="binary",
        estimator="sklearn.ensemble.HistGradientBoostingClassifier",
        params={"max_iter": 10, "categorical_features": [encoded]},
        preprocessing={"categorical_encoding": "ordinal", "scale": False},
    )
    pipeline = fit(build_pipeline(spec, columns), frame, columns, "repaid")

    model, why = fast_model(pipeline, "binary")

    assert model is not None and model.trees is None, why
    assert why.startswith("preprocessing compiled,")
    rows = frame.tail(300).to_dicts()
    assert largest_difference(pipeline, model, rows) == 0.0
