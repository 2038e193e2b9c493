"""The `ab_test` asset on a public dataset: NannyML's car loans served by an A/B rollout (a one-feature model against
NannyML's own), ingested into the prediction log and the label table, analysed by the running experiment; and what
it refuses: no experiment, variants changed mid-test, a test changed mid-test."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest

from mlops_assets.core.lake import PARTITION_COLUMN, replace_partitions
from mlops_assets.core.monitoring.ab import design
from mlops_assets.core.serving import experiments
from mlops_assets.core.serving.prediction_log import LOG_SCHEMA
from mlops_assets.core.serving.scorer import canary_bucket
from mlops_assets.definitions import build_definitions
from mlops_assets.defs import keys
from mlops_assets.defs.common.resources import LakeResource, MlflowResource
from mlops_assets.defs.serving.ab_test import AB_DECISION, build_ab_test_asset
from mlops_assets.settings import experiments_folder
from mlops_assets.spec import PipelineSpec, load_spec
from tests.public_data import nannyml_csv
from tests.unit.test_spec import _fraud_with

# One worker runs the whole file: its module fixtures (a served bento, a materialized run) are set up once.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ab_test")]

AB_TEST = "{metric: recall, minimum_detectable_effect: 0.05, looks: 4, challenger_share: 0.4}"
SHADOW = "rollout: shadow              # a challenger scores beside the champion; 'canary' lets it answer a share"


class Aliases:
    def __init__(self, aliases: dict[str, str]) -> None:
        self._aliases = aliases

    def aliases(self, name: str) -> dict[str, str]:
        return dict(self._aliases)


class AliasesOnly(MlflowResource):
    """The registry's aliases without MLflow: the asset reads nothing else from it."""

    challenger: str = "2"

    def registry(self) -> Any:
        return Aliases({"champion": "1", "challenger": self.challenger})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineSpec, Path, pl.DataFrame]:
    """A spec with rollout ab, and a lake whose prediction log and labels are 8 days of car loans answered by the
    variant each loan's id is sticky to: the champion a one-feature logistic regression, the challenger NannyML's."""
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path_factory.mktemp("ab")
    (folder / "specs").mkdir()
    spec = load_spec(_fraud_with(folder / "specs", SHADOW, f"rollout: ab\n  ab_test: {AB_TEST}"))
    loans = nannyml_csv("synthetic_car_loan_reference").with_columns(pl.col("timestamp").str.to_datetime())
    train, rest = loans.head(5_000), loans.slice(5_000, 12_000)
    weak = LogisticRegression().fit(train.select("debt_to_income_ratio").to_numpy(), train["repaid"].to_numpy())
    ids = [str(i) for i in rest["id"]]
    share = spec.serving.ab_test.challenger_share  # type: ignore[union-attr]
    to_challenger = np.array([canary_bucket(spec.name, [i]) < share for i in ids])
    weak_scores = weak.predict_proba(rest.select("debt_to_income_ratio").to_numpy())[:, 1]
    log = pl.DataFrame(
        {
            "request_id": ids,
            "timestamp": rest["timestamp"],
            "entity": [json.dumps({"customer_id": i}) for i in ids],
            "model_version": np.where(to_challenger, "2", "1"),
            "score": np.where(to_challenger, rest["y_pred_proba"].to_numpy(), weak_scores),
        },
        schema_overrides={"timestamp": pl.Datetime("us")},
    )
    log = pl.DataFrame(
        [log.get_column(c) if c in log.columns else pl.Series(c, [None] * log.height, t) for c, t in LOG_SCHEMA.items()]
    ).with_columns(pl.col("timestamp").dt.date().cast(pl.String).alias(PARTITION_COLUMN))
    replace_partitions(_table(folder, keys.prediction_log_key(spec)), log, sorted(set(log[PARTITION_COLUMN])))
    labels = pl.DataFrame(
        {
            "transaction_id": ids,
            "is_fraud": rest["repaid"].cast(pl.Int64),
            "confirmed_at": rest["timestamp"] + timedelta(days=2),
        }
    ).with_columns(pl.col("confirmed_at").dt.date().cast(pl.String).alias(PARTITION_COLUMN))
    raw = keys.raw_key(spec, spec.label.source)
    replace_partitions(_table(folder, raw), labels, sorted(set(labels[PARTITION_COLUMN])))
    return spec, folder, log


def _table(root: Path, key: dg.AssetKey) -> Path:
    return keys.table_of(root, key)


def _materialize(spec: PipelineSpec, root: Path, challenger: str = "2") -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_ab_test_asset(spec)],
        resources={
            "lake": LakeResource(data_dir=str(root)),
            "mlflow_store": AliasesOnly(tracking_uri="unused", challenger=challenger),
        },
        raise_on_error=False,
    )


def test_the_asset_decides_the_running_experiment_and_its_blocking_check_passes_when_the_challenger_wins(
    served: tuple[PipelineSpec, Path, pl.DataFrame],
) -> None:
    spec, root, log = served
    folder = experiments_folder(root, spec.name)
    # No experiment yet: the run fails, saying how to start one.
    missing = _materialize(spec, root)
    assert not missing.success and f"mlops ab start {spec.name}" in str(missing.all_events)
    ab = spec.serving.ab_test
    assert ab is not None
    started = experiments.start(folder, spec.name, "1", "2", ab.fingerprint(), "test", at=log["timestamp"].min())
    try:
        result = _materialize(spec, root)
        assert result.success
        (check,) = result.get_asset_check_evaluations()
        assert check.check_name == AB_DECISION and check.passed, check.description
        (event,) = result.get_asset_materialization_events()
        meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
        assert meta["decision"] == "challenger_wins" and meta["experiment"] == started.id
        labels = pl.read_delta(str(_table(root, keys.raw_key(spec, spec.label.source))))
        assert meta["labelled_rows"] == labels.filter(pl.col("is_fraud") == 1).height  # recall: the repaid loans
        assert meta["progress"] > 0 and meta["planned_rows"] > 0
        assert meta["challenger/recall"] > meta["champion/recall"] and meta["sequential_p_value"] <= ab.alpha
        assert "| look |" in meta["looks"] and "challenger" in meta["by_variant"]

        # The registry names another challenger: its variants changed mid-test, and the run says so.
        changed = _materialize(spec, root, challenger="3")
        assert not changed.success and "variants changed mid-test" in str(changed.all_events)
        # The test's settings changed since it started: not the planned test.
        other = spec.model_copy(
            update={"serving": spec.serving.model_copy(update={"ab_test": ab.model_copy(update={"alpha": 0.01})})}
        )
        assert "serving.ab_test changed since" in str(_materialize(other, root).all_events)
    finally:
        experiments.end(folder, started, "test over", "test")


def test_definitions_carry_the_ab_test_and_its_job_only_when_declared(
    served: tuple[PipelineSpec, Path, pl.DataFrame],
) -> None:
    spec, root, _ = served
    with_ab = build_definitions(str(root / "specs"), str(root))
    assert with_ab.resolve_job_def(keys.ab_job(spec)) is not None
    assert keys.ab_test_key(spec) in with_ab.resolve_all_asset_keys()
    without = build_definitions(None, str(root))
    assert keys.ab_test_key(spec) not in without.resolve_all_asset_keys()


def test_promote_from_ab_promotes_only_a_winner_and_a_decision_ends_the_experiment(
    served: tuple[PipelineSpec, Path, pl.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_assets.app import ab
    from mlops_assets.app.workspace import AppError, Workspace

    spec, root, log = served
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setattr(MlflowResource, "registry", lambda self: Aliases({"champion": "1", "challenger": "2"}))
    promoted: list[tuple[str, str]] = []

    def promote(ws: Workspace, s: PipelineSpec, version: str, reason: str, by: str, approved_by: str | None) -> None:
        if fail:
            raise AppError("the registry refused")
        promoted.append((version, reason))

    fail = False
    monkeypatch.setattr(ab, "promote_authorized", promote)
    workspace = Workspace(specs_dir=str(root / "specs"), data_dir=str(root))
    workspace.__dict__["registry"] = Aliases({"champion": "1", "challenger": "2"})

    # Started now: none of the logged answers (2018) belong to it, so there are no labelled rows yet.
    started = ab.start(workspace, spec, "test")
    with pytest.raises(AppError, match=r"is running; two experiments on one pipeline would share its traffic"):
        ab.start(workspace, spec, "test")
    waiting, change = ab.promote_if_won(workspace, spec, "test")
    assert waiting.decision == "keep_collecting" and change is None and not promoted
    assert waiting.reason == "no labelled predictions of the experiment's versions yet"
    assert experiments.running(experiments_folder(root, spec.name)) == started  # it goes on
    assert ab.stop(workspace, spec, "started at the wrong time", "test").outcome == "stopped: started at the wrong time"

    # One started when the traffic began: the challenger wins, is promoted, and the experiment ends with it.
    folder = experiments_folder(root, spec.name)
    fingerprint = spec.serving.ab_test.fingerprint()  # type: ignore[union-attr]
    replayed = experiments.start(folder, spec.name, "1", "2", fingerprint, "test", at=log["timestamp"].min())
    fail = True  # a promotion that does not land leaves the experiment running, to be decided again
    with pytest.raises(AppError, match="the registry refused"):
        ab.promote_if_won(workspace, spec, "test")
    assert experiments.running(folder) == replayed and not promoted
    fail = False
    won, _ = ab.promote_if_won(workspace, spec, "test")
    assert won.decision == "challenger_wins" and won.experiment == replayed.id
    assert promoted == [("2", f"won A/B experiment {replayed.id}: {won.reason}")]
    assert experiments.running(folder) is None
    assert [e.outcome for e in experiments.history(folder)][-1] == "challenger_wins"


def test_mlops_ab_start_prints_the_plan_and_refuses_a_second_experiment(
    served: tuple[PipelineSpec, Path, pl.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from mlops_assets.app.workspace import Workspace
    from mlops_assets.cli import main

    spec, _, _ = served
    root = tmp_path / "data"
    monkeypatch.setattr(Workspace, "registry", property(lambda self: Aliases({"champion": "1", "challenger": "2"})))
    args = ["--specs", str(served[1] / "specs"), "--data-dir", str(root), "ab"]
    started = CliRunner().invoke(main, [*args, "start", spec.name])
    assert started.exit_code == 0, started.output
    assert "champion 1 against challenger 2" in started.output
    assert "4 looks (boundaries |z| 4.33, 2.96, 2.36, 2.01)" in started.output  # O'Brien-Fleming-type, alpha 0.05
    # Recall is a rate: at most I_max * (1/4 / 0.6 + 1/4 / 0.4) rows, whatever the variances turn out to be.
    most = design(0.05, 0.05, 0.8, 4).rows_needed(0.25, 0.25, 0.4)
    assert f"at most {most:,.0f} labelled rows" in started.output
    again = CliRunner().invoke(main, [*args, "start", spec.name])
    assert (
        again.exit_code == 1 and "is running; two experiments on one pipeline would share its traffic" in again.output
    )
    stopped = CliRunner().invoke(main, [*args, "stop", spec.name, "--reason", "a dry run"])
    assert stopped.exit_code == 0 and "stopped (a dry run)" in stopped.output
