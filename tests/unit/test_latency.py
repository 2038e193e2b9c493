"""The latency budget of the promotion gate: figures measured through serving's scoring path, recorded and read back,
graded against the spec's budget. Behaviour only: no test depends on how fast this machine is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.core.models.cards import render_card
from mlops_assets.core.models.compiled import fast_model
from mlops_assets.core.models.modeling import Evaluation, GateDecision, Outputs, train_candidate
from mlops_assets.core.serving import latency as latency_module
from mlops_assets.core.serving.latency import (
    BATCH_ROWS,
    LATENCY_TAG,
    Latency,
    latency_decision,
    latency_section,
    latency_tag,
    measure_latency,
    measured_how,
)
from mlops_assets.core.serving.scorer import LoadedModel
from mlops_assets.spec import LatencyBudget, SpecError, load_specs
from tests.public_data import nannyml_csv, write_csv
from tests.unit.test_fairness import _load, _public_training, _spec


@pytest.fixture(scope="module")
def loans(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[dict[str, Any]]]:
    """A model of NannyML's car loans (`mlops new`'s spec, a quick estimator) and 50 holdout rows as served rows."""
    from mlops_assets.app.starter import guess_spec, read_events

    folder = tmp_path_factory.mktemp("loans")
    path = write_csv(nannyml_csv("loans", 20), folder / "loans.csv")
    data = guess_spec("loans", read_events(path), path).spec
    data["model"]["params"] = {"max_iter": 20}
    spec = _load(folder, data)
    training = _public_training(spec, nannyml_csv("loans", 20))
    trained = train_candidate(spec, training)
    rows = training.tail(50).select(trained.columns.all).to_dicts()
    return trained.pipeline, rows


def test_the_figures_are_positive_ordered_and_recorded_on_the_version(loans: tuple[Any, list[dict[str, Any]]]) -> None:
    pipeline, rows = loans
    fast, how = fast_model(pipeline, "binary", rows)
    assert fast is not None, how  # the compiled path serving takes for this model
    measured = measure_latency(pipeline, "binary", rows, calls=20, fast=fast)
    assert measured.calls == 20
    assert 0 < measured.single_p50 <= measured.single_p99
    assert 0 < measured.batch_100_p50 <= measured.batch_100_p99
    metrics = measured.metrics()
    assert set(metrics) == {
        "latency.single_p50_ms",
        "latency.single_p99_ms",
        "latency.batch_100_p50_ms",
        "latency.batch_100_p99_ms",
        "latency.calls",
    }
    assert Latency.from_metrics({**metrics, "roc_auc": 0.9}) == measured  # read back from the run's metrics
    assert Latency.from_metrics({"roc_auc": 0.9}) is None
    tags = {LATENCY_TAG: latency_tag(measured, how)}
    assert measured_how(tags) is not None and how in str(measured_how(tags))
    assert measured_how({}) is None


def test_the_calls_go_through_serving_scoring_path_one_row_then_a_hundred(
    loans: tuple[Any, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, rows = loans
    fast, _ = fast_model(pipeline, "binary", rows)
    sizes: list[tuple[int, bool]] = []
    outputs = LoadedModel.outputs

    def spy(self: LoadedModel, vectors: Sequence[Mapping[str, Any]]) -> Outputs:
        sizes.append((len(vectors), self.fast is fast))
        return outputs(self, vectors)

    monkeypatch.setattr(latency_module.LoadedModel, "outputs", spy)
    measure_latency(pipeline, "binary", rows, calls=30, fast=fast)
    warm_up = 3  # a tenth as many untimed calls before each timing
    assert sizes == [(1, True)] * (30 + warm_up) + [(BATCH_ROWS, True)] * (30 + warm_up)
    with pytest.raises(ValueError, match="latency is measured on rows of the holdout: there are none"):
        measure_latency(pipeline, "binary", [], calls=10)


def test_an_impossible_budget_fails_the_gate_with_the_numbers_and_a_generous_one_passes(
    loans: tuple[Any, list[dict[str, Any]]],
) -> None:
    pipeline, rows = loans
    measured = measure_latency(pipeline, "binary", rows, calls=20, fast=fast_model(pipeline, "binary", rows)[0])
    impossible = latency_decision(measured, LatencyBudget(single_p99=0.0001, batch_100_p99=0.0001))
    assert not impossible.passed
    assert impossible.reasons == [
        f"latency single_p99 {measured.single_p99:.4f} ms over the budget 0.0001 ms",
        f"latency batch_100_p99 {measured.batch_100_p99:.4f} ms over the budget 0.0001 ms",
    ]
    generous = latency_decision(measured, LatencyBudget(single_p50=60_000, batch_100_p99=60_000))
    assert generous.passed and generous.reasons[0].startswith("latency single_p50 ")
    assert "within the budget 60000" in generous.reasons[0]
    assert latency_decision(measured, None) == GateDecision(True, [])  # recorded, not graded
    unmeasured = latency_decision(None, LatencyBudget(single_p99=20))
    assert not unmeasured.passed and "no recorded latency" in unmeasured.reasons[0]


def test_the_card_shows_the_figures_beside_their_budget(loans: tuple[Any, list[dict[str, Any]]]) -> None:
    (spec,) = load_specs()
    measured = Latency(0.2, 0.5, 2.0, 4.5, calls=200)
    section = latency_section(measured, LatencyBudget(single_p99=20, batch_100_p99=100), "scored with x")
    card = render_card(
        spec, "1", {}, Evaluation(metrics={"pr_auc": 0.5}), None, None, {}, GateDecision(True, []), latency=section
    )
    assert "## Latency" in card and "200 calls each after warm-up, scored with x" in card
    assert "| one row | 0.200 |  | 0.500 | 20.0 |" in card
    assert "| 100 rows | 2.000 |  | 4.500 | 100.0 |" in card


def test_a_budget_is_positive_milliseconds_of_the_four_figures(tmp_path: Path) -> None:
    spec = _load(tmp_path, _spec({"latency_budget_ms": {"single_p99": 20, "batch_100_p99": 100}}))
    assert spec.promotion is not None and spec.promotion.latency_budget_ms == LatencyBudget(
        single_p99=20, batch_100_p99=100
    )
    assert spec.promotion.timed_calls == 1000  # a p99 budget's default: its figure rests on ten calls, not two
    p50_only = _load(tmp_path, _spec({"latency_budget_ms": {"single_p50": 5}}))
    assert p50_only.promotion is not None and p50_only.promotion.timed_calls == 200
    declared = _load(tmp_path, _spec({"latency_budget_ms": {"single_p99": 20}, "latency_calls": 5000}))
    assert declared.promotion is not None and declared.promotion.timed_calls == 5000
    with pytest.raises(SpecError, match=r"promotion: Value error, latency_calls: 200 calls are too few for a p99"):
        _load(tmp_path, _spec({"latency_budget_ms": {"batch_100_p99": 20}, "latency_calls": 200}))
    for budget, message in [
        ({"single_p99": 0}, "promotion.latency_budget_ms.single_p99: Input should be greater than 0"),
        ({"single_p95": 10}, "promotion.latency_budget_ms.single_p95: unknown key"),
        ({}, "promotion.latency_budget_ms: Value error, declare at least one of single_p50, single_p99"),
    ]:
        with pytest.raises(SpecError, match=message.replace(".", r"\.")):
            _load(tmp_path, _spec({"latency_budget_ms": budget}))
    with pytest.raises(SpecError, match=r"promotion\.latency_calls: Input should be greater than or equal to 10"):
        _load(tmp_path, _spec({"latency_calls": 3}))


def test_rows_fewer_than_a_batch_are_cycled_into_one_and_the_pipeline_scores_without_a_compiled_model(
    loans: tuple[Any, list[dict[str, Any]]],
) -> None:
    pipeline, rows = loans
    few = rows[:3]
    measured = measure_latency(pipeline, "binary", few, calls=10)  # the pipeline itself scores: no compiled model
    assert 0 < measured.single_p50 <= measured.single_p99
    assert 0 < measured.batch_100_p50 <= measured.batch_100_p99
