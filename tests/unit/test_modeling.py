from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_assets.core.models.modeling import (
    Columns,
    Evaluation,
    ModelError,
    Outputs,
    build_pipeline,
    compute_metrics,
    evaluate,
    fit,
    load_estimator,
    model_columns,
    promotion_gate,
    rows_to_pandas,
    scores,
    targets,
    time_split,
    to_pandas,
    train_candidate,
)
from mlops_assets.spec import ModelSpec, PromotionSpec, load_specs

T0 = datetime(2026, 1, 1)


def _frame(n: int = 400, seed: int = 0) -> pl.DataFrame:
    """A learnable toy training set: the label follows `x` and the channel, with noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    channel = rng.choice(["online", "pos"], size=n)
    y = ((x + (channel == "online") * 0.8 + rng.normal(scale=0.7, size=n)) > 0.9).astype(np.int64)
    return pl.DataFrame(
        {
            "customer_id": [f"c{i % 20}" for i in range(n)],
            "transaction_ts": [T0 + timedelta(hours=i) for i in range(n)],
            "confirmed_at": [T0 + timedelta(hours=i, days=2) for i in range(n)],
            "x": np.where(rng.random(n) < 0.05, np.nan, x),
            "channel": channel,
            "is_fraud": y,
        }
    ).with_columns(pl.col("x").fill_nan(None))


SPEC = load_specs()[0]
MODEL = ModelSpec(
    estimator="sklearn.linear_model.LogisticRegression",
    params={"max_iter": 200},
    holdout="3d",
    seed=3,
    slice_by="channel",
)


def _fitted(frame: pl.DataFrame, model: ModelSpec = MODEL):
    columns = model_columns(SPEC.model_copy(update={"model": model}), frame)
    train, holdout, _ = time_split(frame, "transaction_ts", timedelta(days=3))
    return fit(build_pipeline(model, columns), train, columns, "is_fraud"), holdout, columns


def test_time_split_holds_out_the_most_recent_period() -> None:
    frame = _frame()
    train, holdout, cutoff = time_split(frame, "transaction_ts", timedelta(days=3))
    assert train["transaction_ts"].max() <= cutoff < holdout["transaction_ts"].min()
    assert holdout.height == 72 and train.height + holdout.height == frame.height
    with pytest.raises(ModelError, match="the training set is empty"):
        time_split(frame.clear(), "transaction_ts", timedelta(days=3))
    with pytest.raises(ModelError, match="a holdout of 30 days, 0:00:00 leaves 0 training"):
        time_split(frame, "transaction_ts", timedelta(days=30))


def test_inputs_are_inferred_from_types() -> None:
    columns = model_columns(SPEC, _frame())
    assert (columns.numeric, columns.categorical) == (["x"], ["channel"])
    declared = SPEC.model_copy(update={"model": MODEL.model_copy(update={"features": ["x", "nope"]})})
    with pytest.raises(ModelError, match=r"model.features: \['nope'\] are not columns"):
        model_columns(declared, _frame())


def test_training_twice_with_the_same_seed_gives_identical_predictions() -> None:
    model = MODEL.model_copy(
        update={"estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "params": {"max_iter": 20}}
    )
    first, holdout, columns = _fitted(_frame(), model)
    second, _, _ = _fitted(_frame(), model)
    assert np.array_equal(scores(first, holdout, columns), scores(second, holdout, columns))


def test_bad_estimators_and_data_fail_with_specific_messages() -> None:
    with pytest.raises(ModelError, match=r"model\.estimator: cannot import 'sklearn.nope.Model'"):
        load_estimator(MODEL.model_copy(update={"estimator": "sklearn.nope.Model"}), 0)
    with pytest.raises(ModelError, match=r"model\.params: .*LogisticRegression rejects the parameters"):
        load_estimator(MODEL.model_copy(update={"params": {"depth": 3}}), 0)
    with pytest.raises(ModelError, match=r"model\.params: the estimator failed to fit"):
        _fitted(_frame(), MODEL.model_copy(update={"params": {"C": -1.0}}))
    with pytest.raises(ModelError, match="single class of 'is_fraud'"):
        _fitted(_frame().with_columns(pl.lit(0, dtype=pl.Int64).alias("is_fraud")))


def test_evaluation_reports_metrics_overall_and_per_slice() -> None:
    pipeline, holdout, columns = _fitted(_frame())
    evaluation = evaluate(pipeline, holdout, columns, MODEL, "is_fraud")
    assert set(evaluation.metrics) == {"roc_auc", "pr_auc", "log_loss", "precision", "recall"}
    assert evaluation.metrics["roc_auc"] > 0.7
    assert set(evaluation.slices) == {"online", "pos"}
    assert sum(s["rows"] for s in evaluation.slices.values()) == holdout.height == evaluation.rows


def test_ranking_metrics_are_undefined_for_one_class() -> None:
    metrics = compute_metrics(
        np.array([0, 0, 0]), Outputs("binary", np.array([0.1, 0.7, 0.2])), ["roc_auc", "precision"]
    )
    assert metrics == {"roc_auc": None, "precision": 0.0}


def _eval(value: float, slices: dict[str, float] | None = None, metric: str = "pr_auc") -> Evaluation:
    return Evaluation(
        metrics={metric: value}, slices={k: {metric: v, "rows": 100} for k, v in (slices or {}).items()}, rows=200
    )


GATE = PromotionSpec(metric="pr_auc", minimum=0.5, min_improvement=0.01, max_slice_drop=0.02)


def test_gate_promotes_only_a_better_candidate() -> None:
    assert promotion_gate(_eval(0.6), None, GATE).passed  # first model: the minimum alone
    assert not promotion_gate(_eval(0.4), None, GATE).passed
    worse = promotion_gate(_eval(0.60), _eval(0.65), GATE)
    assert not worse.passed and "improves on the champion by -0.0500" in worse.reasons[1]
    assert not promotion_gate(_eval(0.655), _eval(0.65), GATE).passed  # better, not by the margin
    assert promotion_gate(_eval(0.70), _eval(0.65), GATE).passed


def test_gate_refuses_a_candidate_worse_on_a_guarded_slice() -> None:
    decision = promotion_gate(_eval(0.70, {"pos": 0.9, "atm": 0.5}), _eval(0.65, {"pos": 0.9, "atm": 0.6}), GATE)
    assert not decision.passed
    assert "slice 'atm': pr_auc drops by 0.1000 (guard 0.02)" in decision.reasons
    small = Evaluation(metrics={"pr_auc": 0.7}, slices={"atm": {"pr_auc": 0.1, "rows": 3}}, rows=200)
    assert promotion_gate(small, _eval(0.65, {"atm": 0.6}), GATE).passed  # too few rows to guard


def test_gate_understands_lower_is_better_and_relative_margins() -> None:
    gate = PromotionSpec(metric="log_loss", minimum=0.3, min_improvement=0.1, improvement="relative")
    assert promotion_gate(_eval(0.18, metric="log_loss"), _eval(0.2, metric="log_loss"), gate).passed
    assert not promotion_gate(_eval(0.19, metric="log_loss"), _eval(0.2, metric="log_loss"), gate).passed
    assert not promotion_gate(_eval(0.35, metric="log_loss"), None, gate).passed


_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "n": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
            "i": st.one_of(st.none(), st.integers(-(2**40), 2**40)),
            "c": st.one_of(st.none(), st.text(max_size=5)),
            "k": st.one_of(st.none(), st.booleans()),
        }
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(_ROWS)
def test_serving_rows_become_the_same_model_input_as_training_frames(rows: list[dict[str, object]]) -> None:
    """The request path (dicts -> pandas) and the training path (polars -> pandas) give identical inputs."""
    columns = Columns(["n", "i"], ["c", "k"])
    frame = pl.DataFrame(rows, schema={"n": pl.Float64, "i": pl.Int64, "c": pl.String, "k": pl.Boolean})
    pd.testing.assert_frame_equal(rows_to_pandas(rows, columns), to_pandas(frame, columns))


def test_labels_are_read_as_the_task_needs_them() -> None:
    assert targets(pl.Series([1.0, 0.0, 1.0]), "binary").tolist() == [1, 0, 1]  # outcomes stored as floats
    assert targets(pl.Series([True, False]), "binary").tolist() == [1, 0]
    assert targets(pl.Series([2, 0, 1]), "multiclass").tolist() == ["2", "0", "1"]
    assert targets(pl.Series([3, 4]), "regression").dtype == np.float64
    with pytest.raises(ModelError, match=r"label.column: a binary label is 0/1 or true/false, found \['no', 'yes'\]"):
        targets(pl.Series(["yes", "no"]), "binary")
    with pytest.raises(ModelError, match="a regression label is numeric, found String"):
        targets(pl.Series(["1.5"]), "regression")
    with pytest.raises(ModelError, match="1 rows have no label value"):
        targets(pl.Series([1.0, None]), "regression")


def test_regression_metrics_and_their_direction_in_the_gate() -> None:
    y = np.array([10.0, 20.0, 30.0])
    metrics = compute_metrics(y, Outputs("regression", np.array([12.0, 18.0, 33.0])), ["rmse", "mae", "r2", "mape"])
    assert metrics["mae"] == pytest.approx(7 / 3)
    assert metrics["rmse"] == pytest.approx(np.sqrt(17 / 3))
    assert metrics["mape"] == pytest.approx((0.2 + 0.1 + 0.1) / 3)
    assert metrics["r2"] == pytest.approx(1 - 17 / 200)
    assert compute_metrics(np.array([0.0, 5.0]), Outputs("regression", np.array([1.0, 5.0])), ["mape"]) == {
        "mape": None
    }
    gate = PromotionSpec(metric="rmse", minimum=5.0, min_improvement=0.5, max_slice_drop=1.0)
    assert promotion_gate(_eval(4.0, metric="rmse"), None, gate).passed  # under the ceiling
    assert not promotion_gate(_eval(6.0, metric="rmse"), None, gate).passed
    assert promotion_gate(_eval(3.0, metric="rmse"), _eval(4.0, metric="rmse"), gate).passed  # lower is better
    assert not promotion_gate(_eval(3.8, metric="rmse"), _eval(4.0, metric="rmse"), gate).passed
    worse_slice = promotion_gate(_eval(3.0, {"a": 5.5}, "rmse"), _eval(4.0, {"a": 4.0}, "rmse"), gate)
    assert not worse_slice.passed and "slice 'a': rmse drops by 1.5000" in worse_slice.reasons[-1]


def test_multiclass_metrics_and_per_class_recall() -> None:
    out = Outputs(
        "multiclass", np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]]), ("a", "b", "c")
    )
    y = np.array(["a", "b", "b", "c"], dtype=object)
    assert out.labels.tolist() == ["a", "b", "a", "c"] and out.scores.tolist() == [0.7, 0.8, 0.5, 0.6]
    metrics = compute_metrics(y, out, ["accuracy", "macro_f1", "log_loss"])
    assert metrics["accuracy"] == 0.75
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.4, 0.6])))
    unseen = compute_metrics(np.array(["a", "z"], dtype=object), out.take(np.array([0, 1])), ["log_loss"])
    assert unseen == {"log_loss": None}  # a class the model never saw


def _kind_frame(task: str, n: int = 600) -> pl.DataFrame:
    frame = _frame(n, seed=1)
    x = frame.get_column("x").fill_null(0).to_numpy()
    label = np.where(x > 0.6, "high", np.where(x < -0.6, "low", "mid")) if task == "multiclass" else 100 + 20 * x
    return frame.with_columns(pl.Series("is_fraud", label))


@pytest.mark.parametrize(
    ("task", "estimator", "metrics"),
    [
        ("multiclass", "sklearn.linear_model.LogisticRegression", {"macro_f1", "accuracy", "log_loss"}),
        ("regression", "sklearn.linear_model.Ridge", {"rmse", "mae", "r2", "mape"}),
    ],
)
def test_every_kind_of_problem_trains_evaluates_and_ranks_its_inputs(
    task: str, estimator: str, metrics: set[str]
) -> None:
    model = ModelSpec(task=task, estimator=estimator, holdout="3d", seed=3, slice_by="channel")
    spec = SPEC.model_copy(update={"model": model})
    trained = train_candidate(spec, _kind_frame(task))
    assert set(trained.evaluation.metrics) == metrics
    assert set(trained.evaluation.slices) == {"online", "pos"}
    assert max(trained.importance, key=trained.importance.get) == "x"  # the only input the label depends on
    if task == "multiclass":
        assert trained.evaluation.metrics["accuracy"] > 0.8
        assert set(trained.evaluation.per_class) == {"high", "low", "mid"}
        assert all(0 <= c["recall"] <= 1 and c["rows"] > 0 for c in trained.evaluation.per_class.values())
    else:
        assert trained.evaluation.metrics["r2"] > 0.95 and trained.evaluation.per_class == {}
