"""Train -> evaluate -> gate -> champion on a small copy of the fraud example, with MLflow on SQLite."""

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from mlflow.exceptions import MlflowException

from mlops_assets.cli import main
from mlops_assets.core.lake import content_hash, table_path
from mlops_assets.core.models.modeling import frozen_holdout, model_columns, scores, to_pandas, train_candidate
from mlops_assets.core.models.registry import open_registry
from mlops_assets.definitions import build_definitions
from mlops_assets.spec import load_specs
from tests.helpers import QUIET, small_fraud_specs

pytestmark = pytest.mark.integration


def _champion_history(instance: dg.DagsterInstance) -> list[tuple[str, str, str]]:
    events = instance.fetch_materializations(dg.AssetKey(["fraud", "champion"]), limit=100).records
    history = []
    for record in sorted(events, key=lambda r: r.timestamp):
        meta = record.asset_materialization.metadata
        history.append((meta["version"].value, meta["previous"].value, meta["reason"].value))
    return history


def test_train_gate_promote_and_roll_back(
    lake: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs, data = lake
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "home").mkdir()
    defs = build_definitions(specs, str(data))
    registry = open_registry(str(data))
    cli = ["--specs", str(specs), "--data-dir", str(data)]
    with dg.DagsterInstance.get() as instance:
        first = defs.resolve_job_def("fraud_training").execute_in_process(instance=instance, run_config=QUIET)
        assert first.success
        assert registry.aliases("fraud") == {"champion": "1"}

        # The same data and seed give the same model: no improvement, so the gate holds and nothing moves.
        second = defs.resolve_job_def("fraud_training").execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False
        )
        assert not second.success
        (gate,) = [e for e in second.get_asset_check_evaluations() if e.check_name == "promotion_gate"]
        assert not gate.passed and "improves on the champion by +0.0000" in gate.description
        assert registry.aliases("fraud") == {"champion": "1"}
        card = (data / "model_cards" / "fraud" / "v2.md").read_text()
        assert "Compared with champion version 1" in card and "**failed**" in card
        assert "trained on predictions from 2026-01-01" in card and "training set Delta version" in card

        result = CliRunner().invoke(main, [*cli, "promote", "fraud", "2", "--reason", "reviewed by hand"])
        assert result.exit_code == 0, result.output
        assert registry.aliases("fraud") == {"champion": "2"}
        result = CliRunner().invoke(main, [*cli, "rollback", "fraud"])
        assert result.exit_code == 0, result.output
        assert "champion is now version 1 (was 2)" in result.output
        assert registry.aliases("fraud") == {"champion": "1"}
        assert _champion_history(instance) == [
            ("1", "", "promotion gate passed"),
            ("2", "1", "manual promotion: reviewed by hand"),
            ("1", "2", "rollback from version 2"),
        ]
        result = CliRunner().invoke(main, [*cli, "rollback", "fraud"])
        assert result.exit_code == 1 and "replaced no earlier champion" in result.output
        status = CliRunner().invoke(main, [*cli, "status", "--json"])
        assert '"version": "1"' in status.output and '"pr_auc"' in status.output


def test_registered_version_is_reproducible_from_delta_history(lake: tuple[Path, Path], tmp_path: Path) -> None:
    specs, data = lake
    (spec,) = load_specs(specs)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    defs = build_definitions(specs, str(data), tracking_uri=uri)
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("fraud_training").execute_in_process(instance=instance, run_config=QUIET).success
        # The training set moves on (rebuilt as of an earlier time): the registered version's inputs still rebuild it.
        as_of = {"ops": {"fraud__training_set": {"config": {"as_of": "2026-01-12T00:00:00"}}}}
        job = defs.resolve_job_def("fraud_training")
        assert job.execute_in_process(
            instance=instance, run_config={**QUIET, **as_of}, asset_selection=[dg.AssetKey(["fraud", "training_set"])]
        ).success
    registry = open_registry(str(data), uri)
    version = registry.aliases("fraud")["champion"]
    tags = registry.version("fraud", version).tags
    training = pl.read_delta(
        str(table_path(data, "fraud", "training_set")), version=int(tags["training_set_delta_version"])
    )
    assert content_hash(training) == tags["training_set_hash"]
    assert content_hash(pl.read_delta(str(table_path(data, "fraud", "training_set")))) != tags["training_set_hash"]

    retrained = train_candidate(spec, training)
    columns = model_columns(spec, training)
    holdout = frozen_holdout(spec, training, retrained.cutoff)
    registered = registry.load_sklearn("fraud", version)
    assert np.array_equal(scores(retrained.pipeline, holdout, columns), scores(registered, holdout, columns))

    # The registered pyfunc enforces its signature: a missing or mistyped column is a clear error.
    pyfunc = registry.load("fraud", version)
    sample = to_pandas(holdout.head(5), columns)
    assert pyfunc.predict(sample).shape == (5, 2)
    with pytest.raises(MlflowException, match="Model is missing inputs \\['amount'\\]"):
        pyfunc.predict(sample.drop(columns=["amount"]))
    with pytest.raises(MlflowException, match="count_1h"):
        pyfunc.predict(sample.assign(count_1h="many"))
    # Optional inputs (every feature, nullable request fields) may be null, as the spec allows.
    assert pyfunc.predict(sample.assign(country=None, count_1h=None)).shape == (5, 2)


@pytest.mark.parametrize(
    ("edit", "message", "as_of"),
    [
        (
            {"estimator: sklearn.ensemble.HistGradientBoostingClassifier": "estimator: sklearn.ensemble.NoSuchModel"},
            "model.estimator: cannot import 'sklearn.ensemble.NoSuchModel'",
            None,
        ),
        (
            {"params: {max_iter: 30}": "params: {max_iter: 30, depth: 3}"},
            "model.params: sklearn.ensemble.HistGradientBoostingClassifier rejects",
            None,
        ),
        ({"params: {max_iter: 30}": "params: {max_iter: -5}"}, "model.params: the estimator failed to fit", None),
        # A holdout longer than the training part, or no label yet, is stopped before training by the training
        # set's blocking enough_to_learn check (tests/integration/test_training_checks.py).
    ],
)
def test_bad_models_fail_the_candidate_and_register_nothing(
    lake: tuple[Path, Path], tmp_path: Path, edit: dict[str, str], message: str, as_of: str | None
) -> None:
    _, data = lake
    specs = small_fraud_specs(tmp_path / "specs", **edit)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    defs = build_definitions(specs, str(data), tracking_uri=uri)
    with dg.instance_for_test() as instance:
        config = {"ops": {"fraud__training_set": {"config": {"as_of": as_of}}}}
        result = defs.resolve_job_def("fraud_training").execute_in_process(
            instance=instance, run_config={**QUIET, **config}, raise_on_error=False
        )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "fraud__model_candidate"
    assert message in failure.step_failure_data.error.message
    assert open_registry(str(data), uri).client.search_model_versions("name='fraud'") == []


def test_a_retraining_with_manual_promotion_leaves_the_winner_as_challenger(
    lake: tuple[Path, Path], tmp_path: Path
) -> None:
    """retraining.promotion: manual -- the sensor tags its run so, and a candidate that passes the gate waits."""
    _, data = lake
    specs = small_fraud_specs(tmp_path / "specs", **{"min_improvement: 0.005": "min_improvement: 0.0"})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    defs = build_definitions(specs, str(data), tracking_uri=uri)
    registry = open_registry(str(data), uri)
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def("fraud_training")
        assert job.execute_in_process(instance=instance, run_config=QUIET).success
        # The same data and seed: no gain, which a margin of 0 lets through the gate.
        manual = {"mlops/retraining": "fraud", "mlops/retrain_reason": "drift", "mlops/promotion": "manual"}
        assert job.execute_in_process(instance=instance, run_config=QUIET, tags=manual).success
        assert registry.aliases("fraud") == {"champion": "1", "challenger": "2"}
        assert [version for version, _, _ in _champion_history(instance)] == ["1"]
        assert registry.version("fraud", "2").tags["retrain_reason"] == "drift"
