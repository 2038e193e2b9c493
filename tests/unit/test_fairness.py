"""Fairness guards of the promotion gate: the spec's checks, the protected attribute carried into the training set
without becoming an input, the group rule (small or undefined groups reported, not gated) and the gap, checked
against scikit-learn on NannyML's car loans (binary) and used car prices (regression)."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.metrics import confusion_matrix, mean_absolute_error, recall_score

from mlops_assets.app.starter import guess_spec, read_events
from mlops_assets.core.features.views import compute_features
from mlops_assets.core.models.cards import render_card
from mlops_assets.core.models.fairness import (
    fairness_decision,
    fairness_groups,
    fairness_results,
    fairness_section,
)
from mlops_assets.core.models.modeling import (
    GateDecision,
    ModelError,
    Outputs,
    evaluate,
    evaluate_scores,
    fitted_columns,
    frozen_holdout,
    model_columns,
    train_candidate,
)
from mlops_assets.core.training.training_set import model_inputs, training_set
from mlops_assets.spec import FairnessGuard, ModelSpec, PipelineSpec, SpecError, load_spec, load_specs
from tests.public_data import nannyml_csv, write_csv
from tests.unit.test_training import pipeline

DAY1 = dt.datetime(2026, 1, 11)


def _spec(promotion: dict[str, Any] | None = None, **model: Any) -> dict[str, Any]:
    """test_training's small spec, its aggregation view only, with a `region` in the label source that no request
    feature declares (so the model is not given it), a model and a gate."""
    data = pipeline("at").model_dump(mode="json", exclude_none=True)
    data["feature_views"].pop("mix")
    data["sources"]["labels"]["columns"]["region"] = {"dtype": "string"}
    data["model"] = {"estimator": "sklearn.linear_model.LogisticRegression", "holdout": "1d", **model}
    data["promotion"] = {"minimum": 0.0, **(promotion or {})}
    return data


def _load(tmp_path: Path, data: dict[str, Any]) -> PipelineSpec:
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_spec(path)


def _problems(tmp_path: Path, data: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as err:
        _load(tmp_path, data)
    return str(err.value)


GUARD = {"attribute": "region", "metric": "recall", "max_gap": 0.1}


def test_an_unknown_protected_attribute_is_a_located_error_listing_the_columns_there_are(tmp_path: Path) -> None:
    message = _problems(tmp_path, _spec({"fairness": [GUARD, {**GUARD, "attribute": "gender"}]}))
    spend = PipelineSpec.model_validate(_spec()).feature_views["spend"].feature_names() or []
    columns = ", ".join(["customer_id", "amount", *spend, "region"])
    assert (
        f"promotion.fairness[1].attribute: 'gender' is not a column of the training set (its columns: {columns}); a "
        "protected attribute is an entity key, a request feature, a feature or a column of the label source 'labels'"
    ) in message
    assert "fairness[0]" not in message


def test_a_custom_views_features_are_known_from_its_output_so_the_attribute_is_checked_on_the_training_set() -> None:
    (fraud,) = load_specs()  # its customer_channel_mix view is a function: the check waits for the training set
    assert fraud.promotion is not None
    guarded = fraud.model_copy(
        update={"promotion": fraud.promotion.model_copy(update={"fairness": [FairnessGuard(**GUARD)]})}
    )
    assert not guarded.fairness_problems()
    with pytest.raises(ModelError) as err:
        fairness_groups(guarded, ["customer_id", "amount", "channel"])
    assert str(err.value).startswith(
        "promotion.fairness[0].attribute: 'region' is not a column of the training set (its columns: customer_id, "
        "amount, channel)"
    )


def test_a_metric_that_does_not_fit_the_task_is_refused_with_the_tasks_metrics(tmp_path: Path) -> None:
    message = _problems(tmp_path, _spec({"fairness": [{**GUARD, "metric": "mae"}]}))
    assert (
        "promotion.fairness[0].metric: 'mae' does not apply to task 'binary' (its fairness metrics: roc_auc, pr_auc, "
        "log_loss, precision, recall, false_positive_rate, positive_rate, accuracy)"
    ) in message
    regression = _spec({"metric": "rmse", "minimum": 100.0, "fairness": [{**GUARD, "metric": "recall"}]})
    regression["model"]["task"] = "regression"
    regression["model"]["estimator"] = "sklearn.linear_model.Ridge"
    assert "'recall' does not apply to task 'regression' (its fairness metrics: rmse, mae, r2, mape)" in _problems(
        tmp_path, regression
    )
    assert "Input should be 'roc_auc'" in _problems(tmp_path, _spec({"fairness": [{**GUARD, "metric": "fairness"}]}))


def test_the_label_and_the_times_are_no_groups_and_a_carried_attribute_is_never_an_input(tmp_path: Path) -> None:
    message = _problems(tmp_path, _spec({"fairness": [{**GUARD, "attribute": "is_fraud"}]}))
    assert "promotion.fairness[0].attribute: 'is_fraud' is the label (label.column), not an attribute" in message
    message = _problems(tmp_path, _spec({"fairness": [GUARD]}, features=["amount", "region"]))
    assert "model.features: 'region' is a protected attribute carried for evaluation only" in message
    negative = _problems(tmp_path, _spec({"fairness": [{**GUARD, "max_gap": -0.1}]}))
    assert "promotion.fairness[0].max_gap: Input should be greater than or equal to 0" in negative


def _history(regions: dict[str, str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each customer's transactions every 20 minutes over three days and a labelled prediction every hour of the
    last two."""
    events = pl.DataFrame(
        [
            {"customer_id": c, "ts": DAY1 + dt.timedelta(minutes=m), "amount": float(m % 7)}
            | {"channel": "pos", "ingested_at": DAY1}
            for c in regions
            for m in range(0, 72 * 60, 20)
        ]
    )
    labels = pl.DataFrame(
        [
            {
                "customer_id": c,
                "transaction_ts": DAY1 + dt.timedelta(hours=h),
                "amount": float(h + i),
                "region": region,
                "is_fraud": int((h + i) % 3 == 0),
                "confirmed_at": DAY1 + dt.timedelta(days=1, hours=h),
            }
            for i, (c, region) in enumerate(regions.items())
            for h in range(24, 72)
        ]
    )
    return events, labels


def test_a_protected_attribute_of_the_label_source_reaches_the_holdout_but_is_no_model_input(tmp_path: Path) -> None:
    spec = _load(tmp_path, _spec({"fairness": [GUARD]}))
    assert spec.evaluation_columns() == ["region"]
    assert spec.reserved_columns()["region"] == "a protected attribute (promotion.fairness)"
    events, labels = _history({"c1": "north", "c2": "south", "c3": "north"})
    features = {name: compute_features(spec, name, events.lazy()) for name in spec.feature_views}
    training, _ = training_set(spec, labels.lazy(), features)
    assert training.get_column("region").to_list() == labels.sort("transaction_ts", "customer_id")["region"].to_list()
    assert "region" not in model_inputs(spec, training.lazy())
    assert "region" not in model_columns(spec, training).all
    trained = train_candidate(spec, training)
    assert "region" not in fitted_columns(trained.pipeline).all
    assert {"amount", "amount_sum_1d"} <= set(fitted_columns(trained.pipeline).all)

    holdout = frozen_holdout(spec, training, trained.cutoff)
    groups = fairness_groups(spec, training.columns)
    evaluation = evaluate(trained.pipeline, holdout, trained.columns, spec.model, "is_fraud", groups)  # type: ignore[arg-type]
    assert set(evaluation.groups["region"]) == {"north", "south"}
    assert sum(g["rows"] or 0 for g in evaluation.groups["region"].values()) == holdout.height

    # A request feature as the attribute is carried as the input it already is.
    request = _load(tmp_path, _spec({"fairness": [{**GUARD, "attribute": "amount", "metric": "positive_rate"}]}))
    assert request.evaluation_columns() == [] and "amount" in model_columns(request, training).all


BINARY = ModelSpec(estimator="sklearn.linear_model.LogisticRegression", threshold=0.5)


def _binary_outputs() -> tuple[np.ndarray, Outputs, pl.Series]:
    """Groups a (80 rows, recall 1.0), b (80 rows, recall 0.5), c (10 rows), d (40 rows, no positive)."""
    y = np.array([1, 0] * 40 + [1, 0] * 40 + [1, 0] * 5 + [0] * 40)
    decided = np.concatenate(
        [np.tile([1, 0], 40), np.tile([1, 0, 0, 0], 20), np.tile([0, 1], 5), np.zeros(40, dtype=int)]
    )
    groups = pl.Series("region", ["a"] * 80 + ["b"] * 80 + ["c"] * 10 + ["d"] * 40)
    return y, Outputs("binary", np.where(decided == 1, 0.9, 0.1)), groups


def test_a_gap_over_the_limit_fails_the_gate_with_the_numbers_and_small_or_undefined_groups_do_not_count() -> None:
    y, out, groups = _binary_outputs()
    evaluation = evaluate_scores(y, out, None, BINARY, {"region": (groups, ["recall", "false_positive_rate"])})
    measured = evaluation.groups["region"]
    assert measured["a"] == pytest.approx({"recall": 1.0, "false_positive_rate": 0.0, "rows": 80})
    assert measured["b"] == pytest.approx({"recall": 0.5, "false_positive_rate": 0.0, "rows": 80})
    assert measured["d"]["recall"] is None and measured["d"]["false_positive_rate"] == 0.0  # no positive in d
    assert measured["c"] == pytest.approx({"recall": 0.0, "false_positive_rate": 1.0, "rows": 10})

    recall = FairnessGuard(attribute="region", metric="recall", max_gap=0.2, min_group_rows=50)
    (result,) = fairness_results(evaluation, [recall])
    assert result.counted == ["a", "b"] and result.gap == pytest.approx(0.5) and not result.passed
    decision = fairness_decision([result])
    assert not decision.passed
    assert decision.reasons == [
        "fairness recall by 'region': gap 0.5000 over the limit 0.2 (a: 1.0000 on 80 rows, b: 0.5000 on 80 rows)"
    ]
    # The small group c (recall 0.0, false-positive rate 1.0) would make any gap 1.0: it is reported, not counted.
    fpr = FairnessGuard(attribute="region", metric="false_positive_rate", max_gap=0.05, min_group_rows=50)
    assert fairness_decision(fairness_results(evaluation, [fpr])).passed
    assert not fairness_decision(fairness_results(evaluation, [fpr.model_copy(update={"min_group_rows": 5})])).passed
    wide = recall.model_copy(update={"max_gap": 0.5})
    assert fairness_decision(fairness_results(evaluation, [wide])).passed  # at the limit is within it

    section = "\n".join(fairness_section(fairness_results(evaluation, [recall, fpr])))
    assert "| region | recall | 0.5000 | 0.2 | 2 | failed |" in section
    assert "| region | c | 10 | recall | 0.0000 | not counted: under 50 rows |" in section
    assert "| region | d | 40 | recall | undefined | not counted: undefined |" in section
    assert "| region | a | 80 | false_positive_rate | 0.0000 | counted |" in section


def test_fewer_than_two_measurable_groups_measure_no_gap_and_do_not_block() -> None:
    y, out, groups = _binary_outputs()
    evaluation = evaluate_scores(y, out, None, BINARY, {"region": (groups, ["recall"])})
    strict = FairnessGuard(attribute="region", metric="recall", max_gap=0.0, min_group_rows=81)
    decision = fairness_decision(fairness_results(evaluation, [strict]))
    assert decision.passed
    assert decision.reasons[0].startswith(
        "fairness recall by 'region': not measured, fewer than two groups with at least 81 rows and a defined recall "
        "(a: 1.0000 on 80 rows, b: 0.5000 on 80 rows, c: 0.0000 on 10 rows, d: undefined on 40 rows)"
    )


def test_the_card_shows_the_fairness_section_and_the_gate_its_reason() -> None:
    (spec,) = load_specs()
    y, out, groups = _binary_outputs()
    model = spec.model
    assert model is not None
    evaluation = evaluate_scores(y, out, None, BINARY, {"region": (groups, ["recall"])})
    results = fairness_results(evaluation, [FairnessGuard(attribute="region", metric="recall", max_gap=0.2)])
    decision = fairness_decision(results)
    card = render_card(
        spec, "3", {}, evaluation, None, None, {}, GateDecision(False, decision.reasons), fairness_section(results)
    )
    assert "## Fairness" in card and "| region | b | 80 | recall | 0.5000 | counted |" in card
    assert "- fairness recall by 'region': gap 0.5000 over the limit 0.2" in card


@functools.cache
def _public(name: str, days: int) -> pl.DataFrame:
    return nannyml_csv(name, days)


def _public_spec(tmp_path: Path, name: str, days: int, attribute: str, guards: list[dict[str, Any]]) -> PipelineSpec:
    """`mlops new`'s spec of a NannyML file, with `attribute` taken out of the inputs and guarded."""
    path = write_csv(_public(name, days), tmp_path / f"{name}.csv")
    data = guess_spec(name, read_events(path), path).spec
    data["request_features"].pop(attribute, None)
    data["model"]["params"] = {"max_iter": 20}  # a quick model: the groups' metrics are what is checked
    data["promotion"]["fairness"] = [{"attribute": attribute, **guard} for guard in guards]
    return _load(tmp_path, data)


def _public_training(spec: PipelineSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """The file's rows with the columns a training set has (the view features aside: they are not needed here)."""
    label = spec.label
    columns = [*spec.entity.keys, *spec.request_features, *spec.evaluation_columns(), label.column]
    times = pl.col("timestamp").str.to_datetime()
    return frame.select(*columns, times.alias(label.prediction_timestamp)).with_columns(
        pl.col(label.prediction_timestamp).alias(label.timestamp)
    )


def _assert_groups_equal(groups: dict[str, dict[str, float | None]], expected: dict[str, dict[str, Any]]) -> None:
    assert set(groups) == set(expected)
    for name, values in expected.items():
        assert groups[name] == pytest.approx(values), name


def test_group_metrics_on_car_loans_by_salary_range_equal_scikit_learns(tmp_path: Path) -> None:
    guards = [
        {"metric": "recall", "max_gap": 0.2},
        {"metric": "false_positive_rate", "max_gap": 0.2, "min_group_rows": 100},
    ]
    spec = _public_spec(tmp_path, "loans", 20, "salary_range", guards)
    training = _public_training(spec, _public("loans", 20))
    trained = train_candidate(spec, training)
    assert "salary_range" not in fitted_columns(trained.pipeline).all
    holdout = frozen_holdout(spec, training, trained.cutoff)
    assert spec.model is not None and spec.promotion is not None
    evaluation = evaluate(
        trained.pipeline, holdout, trained.columns, spec.model, "repaid", fairness_groups(spec, training.columns)
    )

    # Independently: scikit-learn's recall and confusion matrix per salary range, on the model's own decisions.
    inputs = holdout.select(trained.columns.all).to_pandas()
    decided = (trained.pipeline.predict_proba(inputs)[:, 1] >= spec.model.threshold).astype(int)
    y = holdout["repaid"].cast(pl.Int64).to_numpy()
    ranges = holdout["salary_range"].to_numpy()
    expected = {}
    for group in sorted(set(ranges)):
        mask = ranges == group
        tn, fp, _, _ = confusion_matrix(y[mask], decided[mask], labels=[0, 1]).ravel()
        expected[group] = {
            "recall": recall_score(y[mask], decided[mask]),
            "false_positive_rate": fp / (fp + tn),
            "rows": int(mask.sum()),
        }
    _assert_groups_equal(evaluation.groups["salary_range"], expected)
    assert set(expected) == {"0 - 20K €", "20K - 40K €", "40K - 60K €", "60K+ €"}

    recall, fpr = fairness_results(evaluation, spec.promotion.fairness)
    counted = [g for g, values in expected.items() if values["rows"] >= 50]
    values = [expected[g]["recall"] for g in counted]
    assert recall.counted == counted and recall.gap == pytest.approx(max(values) - min(values))
    assert fpr.counted == [g for g, values in expected.items() if values["rows"] >= 100]
    assert expected["60K+ €"]["rows"] < 100 and "60K+ €" not in fpr.counted  # reported, not counted


def test_group_mae_on_used_car_prices_by_fuel_equals_scikit_learns(tmp_path: Path) -> None:
    spec = _public_spec(tmp_path, "cars", 3, "fuel", [{"metric": "mae", "max_gap": 1.0}])
    training = _public_training(spec, _public("cars", 3))
    trained = train_candidate(spec, training)
    assert "fuel" not in fitted_columns(trained.pipeline).all
    holdout = frozen_holdout(spec, training, trained.cutoff)
    assert spec.model is not None and spec.promotion is not None
    evaluation = evaluate(
        trained.pipeline, holdout, trained.columns, spec.model, "y_true", fairness_groups(spec, training.columns)
    )
    predicted = trained.pipeline.predict(holdout.select(trained.columns.all).to_pandas())
    fuel, y = holdout["fuel"].to_numpy(), holdout["y_true"].to_numpy()
    expected = {
        g: {"mae": mean_absolute_error(y[fuel == g], predicted[fuel == g]), "rows": int((fuel == g).sum())}
        for g in set(fuel)
    }
    _assert_groups_equal(evaluation.groups["fuel"], expected)
    (result,) = fairness_results(evaluation, spec.promotion.fairness)
    maes = [v["mae"] for v in expected.values() if v["rows"] >= 50]
    assert result.gap == pytest.approx(max(maes) - min(maes)) and not result.passed  # a 1.0 price gap is too tight
    assert f"gap {result.gap:.4f} over the limit 1.0" in result.reason()
