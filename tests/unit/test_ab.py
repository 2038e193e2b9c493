"""A/B tests: the design's boundaries, the spec's refusals, an experiment's rows and decision, one experiment at a
time, and the decision on a public dataset (NannyML's car loans: two models' predictions on its real labels)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlops_assets.app.champion import promote, rollback
from mlops_assets.app.champion import promote_if_won as shadow_promote_if_won
from mlops_assets.app.workspace import AppError, Workspace
from mlops_assets.core.monitoring.ab import (
    ABDecision,
    ABError,
    analyse,
    design,
    experiment_rows,
    rows_at_most,
)
from mlops_assets.core.serving import experiments
from mlops_assets.core.serving.experiments import ExperimentError
from mlops_assets.core.serving.scorer import canary_bucket
from mlops_assets.settings import experiments_folder
from mlops_assets.spec import ABTestSpec, PipelineSpec, SpecError, load_spec
from tests.public_data import nannyml_csv
from tests.unit.test_spec import _fraud_with

SHADOW = "rollout: shadow              # a challenger scores beside the champion; 'canary' lets it answer a share"


def _ab_spec(tmp_path: Path, ab_test: str) -> Path:
    return _fraud_with(tmp_path, SHADOW, f"rollout: ab\n  ab_test: {ab_test}")


@pytest.fixture(scope="module")
def fraud_ab(tmp_path_factory: pytest.TempPathFactory) -> PipelineSpec:
    return load_spec(_ab_spec(tmp_path_factory.mktemp("ab"), "{metric: log_loss, minimum_detectable_effect: 0.02}"))


def _with_test(spec: PipelineSpec, **test: object) -> PipelineSpec:
    ab = ABTestSpec.model_validate({"minimum_detectable_effect": 0.02, **test})
    return spec.model_copy(update={"serving": spec.serving.model_copy(update={"ab_test": ab})})


# --- The design -----------------------------------------------------------------------------------------------------


def test_the_boundaries_are_lan_demets_obrien_fleming_type_and_one_look_is_the_fixed_test() -> None:
    # Two-sided alpha 0.05, five equally spaced looks: the values gsDesign (sfLDOF) and ldbounds publish.
    plan = design(0.1, alpha=0.05, power=0.8, looks=5)
    assert np.allclose(plan.boundaries, [4.877, 3.357, 2.680, 2.290, 2.031], atol=1e-3)
    assert plan.spent[-1] == pytest.approx(0.05)
    assert 1.0 < plan.inflation < 1.05  # a few percent more information than one test at the end
    single = design(0.1, alpha=0.05, power=0.8, looks=1)
    assert single.boundaries[0] == pytest.approx(1.95996, abs=1e-4) and single.inflation == pytest.approx(1.0)
    many = design(0.1, looks=50)  # a first look at 2% of the information spends almost nothing: a boundary of 15.8
    assert many.spent[-1] == pytest.approx(0.05) and list(many.boundaries) == sorted(many.boundaries, reverse=True)
    assert many.boundaries[0] > 15 and 1.0 < many.inflation < 1.06
    # n per variant of a fixed two-proportion test: (1.96 + 0.8416)^2 * (p0 q0 + p1 q1) / effect^2
    assert single.rows_needed(0.25, 0.24, 0.5) / 2 == pytest.approx(7.849 * 0.49 / 0.01, rel=1e-3)


# --- The spec: what is refused, where ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ab_test", "message"),
    [
        ("{metric: mae, minimum_detectable_effect: 0.02}", r"serving\.ab_test\.metric: 'mae' does not fit a binary"),
        ("{metric: roc_auc, minimum_detectable_effect: 0.02}", r"per-request metric: precision, recall, log_loss"),
        (
            "{outcome: {source: labels, column: refund, request_id: transaction_id}, minimum_detectable_effect: 1}",
            r"serving\.ab_test\.outcome\.column: 'refund' is not a column of source 'labels'",
        ),
        (
            "{outcome: {source: payments, column: x, request_id: y}, minimum_detectable_effect: 1}",
            r"serving\.ab_test\.outcome\.source: unknown source 'payments'",
        ),
        (
            "{outcome: {source: labels, column: channel, request_id: transaction_id}, minimum_detectable_effect: 1}",
            r"serving\.ab_test\.outcome\.column: 'channel' is string; an outcome is a bool or a number",
        ),
        ("{minimum_detectable_effect: 0.02}", r"serving\.ab_test: .*declare exactly one of 'metric'"),
        ("{metric: recall, minimum_detectable_effect: 0}", r"serving\.ab_test\.minimum_detectable_effect"),
        ("{metric: recall, minimum_detectable_effect: 0.1, power: 0.3}", r"serving\.ab_test\.power"),
    ],
)
def test_a_test_that_does_not_fit_the_pipeline_is_refused_where_it_is_declared(
    tmp_path: Path, ab_test: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_ab_spec(tmp_path, ab_test))


def test_a_rate_has_a_largest_sample_before_any_data_and_other_metrics_do_not(fraud_ab: PipelineSpec) -> None:
    plan = design(0.02)
    recall = _with_test(fraud_ab, metric="recall")
    assert rows_at_most(recall, plan) == pytest.approx(plan.max_information * 0.25 * 4)  # 50/50: 1/4 * (2 + 2)
    assert rows_at_most(fraud_ab, plan) is None  # log_loss: from the first rows' variance
    paid = _with_test(fraud_ab, outcome={"source": "labels", "column": "is_fraud", "request_id": "transaction_id"})
    assert rows_at_most(paid, plan) is not None  # an int declared 0..1 is a rate


def test_rollout_ab_and_its_test_go_together(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"serving\.ab_test: rollout 'ab' needs an A/B test"):
        load_spec(_fraud_with(tmp_path, SHADOW, "rollout: ab"))
    declared = f"{SHADOW}\n  ab_test: {{metric: recall, minimum_detectable_effect: 0.05}}"
    with pytest.raises(SpecError, match=r"serving\.ab_test: declared, but serving\.rollout is 'shadow'"):
        load_spec(_fraud_with(tmp_path, SHADOW, declared))


def test_a_metric_from_labels_needs_the_request_id_to_join_them(tmp_path: Path) -> None:
    path = _ab_spec(tmp_path, "{metric: recall, minimum_detectable_effect: 0.05}")
    path.write_text(path.read_text().replace("  request_id: transaction_id\n", ""))
    with pytest.raises(SpecError, match=r"serving\.ab_test\.metric: judging by labels needs label\.request_id"):
        load_spec(path)


# --- An experiment's rows ------------------------------------------------------------------------------------------

START = datetime(2026, 1, 10)


def _log(scores: list[tuple[str, float]], start: datetime = START, entities: list[str] | None = None) -> pl.DataFrame:
    n = len(scores)
    return pl.DataFrame(
        {
            "request_id": [f"t{i}" for i in range(n)],
            "timestamp": [start + timedelta(minutes=i) for i in range(n)],
            "entity": [json.dumps({"customer_id": e}) for e in (entities or [f"c{i}" for i in range(n)])],
            "model_version": [v for v, _ in scores],
            "score": [s for _, s in scores],
            "label": pl.Series([None] * n, dtype=pl.String),
            "probabilities": pl.Series([None] * n, dtype=pl.String),
        }
    )


def _labels(values: list[int | None], start: datetime = START) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(len(values))],
            "is_fraud": pl.Series(values, dtype=pl.Int64),
            "confirmed_at": [start + timedelta(days=1, minutes=len(values) - i) for i in range(len(values))],
        }
    )


def test_rows_are_the_experiments_answers_with_a_label_in_the_order_labels_arrived(fraud_ab: PipelineSpec) -> None:
    log = _log([("1", 0.9), ("2", 0.2), ("fallback", 0.02), ("3", 0.5), ("1", 0.4), ("2", 0.7)])
    early = _log([("1", 0.9)], start=START - timedelta(days=1)).with_columns(pl.lit("t-early").alias("request_id"))
    labels = _labels([1, 0, 1, 1, None, 1])
    rows = experiment_rows(pl.concat([early, log, log.head(1)]), labels, fraud_ab, "1", "2", START)
    # Not: before the start, a fallback, another version, a label not there yet, a repeated request id.
    assert rows["request_id"].to_list() == ["t5", "t1", "t0"]  # confirmed in reverse order
    assert rows["challenger"].to_list() == [True, True, False]
    assert rows["value"].to_list() == pytest.approx([-np.log(0.7), -np.log(0.8), -np.log(0.9)])


def test_precision_counts_the_flagged_rows_and_recall_the_positive_ones(fraud_ab: PipelineSpec) -> None:
    log, labels = _log([("1", 0.9), ("1", 0.2), ("2", 0.7), ("2", 0.1)]), _labels([0, 1, 1, 0])
    precision = experiment_rows(log, labels, _with_test(fraud_ab, metric="precision"), "1", "2", START)
    assert dict(zip(precision["request_id"], precision["value"], strict=True)) == {"t0": 0.0, "t2": 1.0}
    recall = experiment_rows(log, labels, _with_test(fraud_ab, metric="recall"), "1", "2", START)
    assert dict(zip(recall["request_id"], recall["value"], strict=True)) == {"t1": 0.0, "t2": 1.0}


def test_a_business_outcome_is_joined_by_its_own_request_id(fraud_ab: PipelineSpec) -> None:
    outcome = {"source": "labels", "column": "amount", "request_id": "transaction_id"}
    spec = _with_test(fraud_ab, outcome=outcome)
    log = _log([("1", 0.9), ("2", 0.2)])
    paid = pl.DataFrame(
        {"transaction_id": ["t1", "t0"], "amount": [12.5, 3.0], "confirmed_at": [START, START + timedelta(1)]}
    )
    rows = experiment_rows(log, paid, spec, "1", "2", START)
    assert rows["value"].to_list() == [12.5, 3.0] and rows["challenger"].to_list() == [True, False]
    with pytest.raises(ABError, match=r"serving\.ab_test\.outcome \(source 'labels'\): the table has no column"):
        experiment_rows(log, paid.drop("amount"), spec, "1", "2", START)
    with pytest.raises(ABError, match=r"'amount' holds String values; an outcome is a number"):
        experiment_rows(log, paid.with_columns(pl.col("amount").cast(pl.String)), spec, "1", "2", START)


def test_labels_of_the_wrong_kind_for_the_metric_are_refused(fraud_ab: PipelineSpec) -> None:
    log = _log([("1", 0.9), ("2", 0.2)])
    labels = _labels([0, 1]).with_columns(pl.Series("is_fraud", ["yes", "no"]))
    with pytest.raises(ABError, match=r"label\.column: a binary label is 0/1 or true/false"):
        experiment_rows(log, labels, fraud_ab, "1", "2", START)


def test_without_labels_yet_the_test_keeps_collecting_and_says_why(fraud_ab: PipelineSpec) -> None:
    plan = design(0.02)
    rows = experiment_rows(_log([("1", 0.9), ("2", 0.2)]), _labels([]), fraud_ab, "1", "2", START)
    result = analyse(rows, plan, 0.5, higher_is_better=False)
    assert result.decision is ABDecision.KEEP_COLLECTING and result.information_fraction == 0
    assert result.reason == "no labelled predictions of the experiment's versions yet"
    few = analyse(experiment_rows(_log([("1", 0.9)]), _labels([1]), fraud_ab, "1", "2", START), plan, 0.5, False)
    assert few.decision is ABDecision.KEEP_COLLECTING and "0 by the challenger" in few.reason


# --- One experiment at a time --------------------------------------------------------------------------------------


def test_two_overlapping_experiments_on_one_pipeline_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "experiments" / "fraud"
    first = experiments.start(folder, "fraud", "1", "2", "abc", "tester")
    with pytest.raises(ExperimentError, match=r"A/B experiment .* \(champion 1 against challenger 2.*is running"):
        experiments.start(folder, "fraud", "1", "3", "abc", "tester")
    assert experiments.running(folder) == first
    ended = experiments.end(folder, first, "challenger_wins", "tester")
    assert experiments.running(folder) is None and experiments.history(folder) == [ended]
    with pytest.raises(ExperimentError, match="is not running"):
        experiments.end(folder, first, "champion_wins", "tester")
    second = experiments.start(folder, "fraud", "2", "3", "abc", "tester")  # after the end, another may start
    assert experiments.running(folder) == second


def test_of_two_experiments_started_at_once_exactly_one_runs(tmp_path: Path) -> None:
    folder = tmp_path / "experiments" / "fraud"
    barrier, outcomes = threading.Barrier(8), []

    def begin(challenger: str) -> None:
        barrier.wait()
        try:
            outcomes.append(experiments.start(folder, "fraud", "1", challenger, "abc", "tester").challenger)
        except ExperimentError:
            outcomes.append("refused")

    threads = [threading.Thread(target=begin, args=(str(c),)) for c in range(2, 10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (winner,) = [o for o in outcomes if o != "refused"]
    assert len(outcomes) == 8 and experiments.running(folder).challenger == winner  # type: ignore[union-attr]
    assert [p.name for p in folder.iterdir()] == ["running.json"]  # no temporary file left behind


def test_a_promotion_or_rollback_mid_test_is_refused(tmp_path: Path, fraud_ab: PipelineSpec) -> None:
    workspace = Workspace(specs_dir=None, data_dir=str(tmp_path))
    experiments.start(experiments_folder(workspace.root, "fraud"), "fraud", "1", "2", "abc", "tester")
    with pytest.raises(AppError, match=r"promoting version 3 would change its variants mid-test.*--from-ab"):
        promote(workspace, fraud_ab, "3", "manual", "tester")
    with pytest.raises(AppError, match=r"a rollback would change its variants mid-test.*mlops ab stop fraud"):
        rollback(workspace, fraud_ab, "tester")
    with pytest.raises(AppError, match=r"promoting from the shadow comparison would change its variants mid-test"):
        shadow_promote_if_won(workspace, fraud_ab, "tester")


# --- A public dataset: two models' predictions on NannyML's car loans ------------------------------------------------


@pytest.fixture(scope="module")
def loans() -> pl.DataFrame:
    """Car loans with NannyML's model's probability of repayment and a weak one-feature model's (fitted on the
    first 10,000 loans), for the 40,000 loans after them."""
    from sklearn.linear_model import LogisticRegression

    frame = nannyml_csv("synthetic_car_loan_reference")
    train, rest = frame.head(10_000), frame.slice(10_000)
    weak = LogisticRegression().fit(train.select("debt_to_income_ratio").to_numpy(), train["repaid"].to_numpy())
    return rest.with_columns(
        pl.Series("weak", weak.predict_proba(rest.select("debt_to_income_ratio").to_numpy())[:, 1]),
        pl.col("timestamp").str.to_datetime(),
    )


def _served(loans: pl.DataFrame, champion: str, challenger: str, share: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The loans as an A/B rollout would have logged them: each customer (a loan id) sticky to a variant by the
    serving hash, answered by that variant's model; the repayment confirmed a day later."""
    ids = [str(i) for i in loans["id"]]
    to_challenger = [canary_bucket("fraud", [i]) < share for i in ids]
    scores = np.where(to_challenger, loans[challenger].to_numpy(), loans[champion].to_numpy())
    log = pl.DataFrame(
        {
            "request_id": ids,
            "timestamp": loans["timestamp"],
            "entity": [json.dumps({"customer_id": i}) for i in ids],
            "model_version": ["2" if c else "1" for c in to_challenger],
            "score": np.clip(scores, 0.0, 1.0),
            "label": pl.Series([None] * len(ids), dtype=pl.String),
            "probabilities": pl.Series([None] * len(ids), dtype=pl.String),
        }
    )
    labels = pl.DataFrame(
        {
            "transaction_id": ids,
            "is_fraud": loans["repaid"].cast(pl.Int64),
            "confirmed_at": loans["timestamp"] + timedelta(days=1),
        }
    )
    return log, labels


@pytest.mark.parametrize(
    ("champion", "challenger", "metric", "effect", "decision"),
    [
        ("weak", "y_pred_proba", "log_loss", 0.05, ABDecision.CHALLENGER_WINS),
        ("y_pred_proba", "weak", "log_loss", 0.05, ABDecision.CHAMPION_WINS),
        ("weak", "y_pred_proba", "recall", 0.02, ABDecision.CHALLENGER_WINS),
        ("y_pred_proba", "y_pred_proba", "recall", 0.02, ABDecision.NO_DIFFERENCE),
    ],
)
def test_the_better_model_wins_on_real_labels_and_the_same_model_shows_no_difference(
    loans: pl.DataFrame,
    fraud_ab: PipelineSpec,
    champion: str,
    challenger: str,
    metric: str,
    effect: float,
    decision: ABDecision,
) -> None:
    spec = _with_test(fraud_ab, metric=metric, minimum_detectable_effect=effect, challenger_share=0.3)
    ab = spec.serving.ab_test
    assert ab is not None
    log, labels = _served(loans, champion, challenger, ab.challenger_share)
    since = loans["timestamp"].min().replace(tzinfo=None)  # type: ignore[union-attr]
    rows = experiment_rows(log, labels, spec, "1", "2", since)
    plan = design(ab.minimum_detectable_effect, ab.alpha, ab.power, ab.looks)
    result = analyse(rows, plan, ab.challenger_share, ab.higher_is_better)
    assert result.decision is decision, result.reason
    assert result.champion is not None and result.challenger is not None and result.improvement is not None
    assert result.challenger.rows / rows.height == pytest.approx(ab.challenger_share, abs=0.02)  # the sticky share
    if decision is ABDecision.NO_DIFFERENCE:
        assert result.p_value is not None and result.p_value > ab.alpha
        return
    decided = result.looks[[look["crossed"] for look in result.looks].index(True)]
    assert int(decided["rows"]) < rows.height  # decided at a look, before all the data
    assert result.p_value is not None and result.p_value <= ab.alpha
    better = result.improvement > 0
    assert better == (decision is ABDecision.CHALLENGER_WINS)
    assert result.repeated_ci is not None and (result.repeated_ci[0] > 0 or result.repeated_ci[1] < 0)


def test_a_damaged_or_hand_edited_experiment_record_is_named_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "experiments" / "fraud"
    first = experiments.start(folder, "fraud", "1", "2", "abc", "tester")
    experiments.end(folder, first, "champion_wins", "tester")
    experiments.start(folder, "fraud", "1", "3", "abc", "tester")
    record = folder / "running.json"
    for text in ('{"id": "x", "pipeline": "fraud"', '{"id": "x", "pipeline": "fraud", "note": 1}', "[1, 2]"):
        record.write_text(text)
        with pytest.raises(ExperimentError, match=rf"{record} is not an A/B experiment record \(.*restore it"):
            experiments.running(folder)
        assert record.read_text() == text  # nothing is rewritten or dropped
    (folder / f"{first.id}.json").write_text("{")
    with pytest.raises(ExperimentError, match=rf"{folder / first.id}.json is not an A/B experiment record"):
        experiments.history(folder)


def test_experiments_start_when_asked(tmp_path: Path) -> None:
    at = datetime(2018, 1, 1, tzinfo=UTC)
    started = experiments.start(tmp_path, "fraud", "1", "2", "abc", "tester", at=at)
    assert started.since == datetime(2018, 1, 1)


def test_the_cli_refuses_an_ab_experiment_the_spec_does_not_declare(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mlops_assets.cli import main

    data = ["--data-dir", str(tmp_path)]
    both = CliRunner().invoke(main, [*data, "promote", "fraud", "--from-ab", "--from-shadow"])
    assert both.exit_code == 2 and "give one of VERSION (with --reason), --from-shadow or --from-ab" in both.output
    shadow = CliRunner().invoke(main, [*data, "ab", "start", "fraud"])  # the built-in fraud spec: rollout shadow
    assert shadow.exit_code == 1
    assert "'fraud' serves with rollout 'shadow': an A/B experiment needs serving.rollout: ab" in shadow.output
    assert CliRunner().invoke(main, [*data, "ab", "stop", "fraud", "--reason", "x"]).exit_code == 1
