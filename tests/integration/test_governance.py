"""Fairness and latency in the promotion gate, end to end on NannyML's car loans as a user would run them: `mlops new`,
`salary_range` taken out of the inputs and guarded, an impossible latency budget, then `mlops materialize`."""

from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.metrics import recall_score

from mlops_assets.core.lake import table_path
from mlops_assets.core.models.modeling import fitted_columns, frozen_holdout, to_pandas
from mlops_assets.core.models.registry import open_registry
from mlops_assets.core.serving.latency import LATENCY_TAG, Latency
from mlops_assets.spec import load_spec
from tests.helpers import Project

pytestmark = pytest.mark.integration

DAYS = 20


def test_the_gate_grades_fairness_on_a_column_no_model_sees_and_fails_an_impossible_latency_budget(
    tmp_path: Path,
) -> None:
    project = Project(tmp_path)
    project.run("-m", "mlops_assets.examples.nannyml", "loans", "loans.csv", "--days", str(DAYS))
    project.mlops("new", "loans", "--from", "loans.csv")
    path = tmp_path / "specs" / "loans.yaml"
    spec = yaml.safe_load(path.read_text())
    del spec["request_features"]["salary_range"]  # still a column of the events: carried for evaluation only
    spec["model"]["params"] = {"max_iter": 30}
    spec["promotion"]["fairness"] = [
        {"attribute": "salary_range", "metric": "recall", "max_gap": 0.5},
        {"attribute": "salary_range", "metric": "false_positive_rate", "max_gap": 0.5, "min_group_rows": 100},
    ]
    spec["promotion"]["latency_budget_ms"] = {"single_p99": 0.0001}
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    assert "loans: ok" in project.mlops("check")

    run = project.invoke("materialize", "loans", "--start", str(spec["start_date"]), "--days", str(DAYS))
    result = run.output
    assert run.exit_code == 1, result
    assert "FAILED loans__candidate_evaluation" in result and "promotion_gate" in result
    assert "fairness recall by 'salary_range': gap " in result
    assert "latency single_p99 " in result and "ms over the budget 0.0001 ms" in result

    data = tmp_path / "data"
    registry = open_registry(data)
    assert registry.aliases("loans") == {}  # the gate held: nothing promoted
    version = registry.version("loans", "1")
    assert "over the budget 0.0001 ms" in version.tags["promotion_gate"]
    assert LATENCY_TAG in version.tags  # on the model version, and as metrics of its run
    latency = Latency.from_metrics(registry.run_metrics(version.run_id))
    assert latency is not None and 0 < latency.single_p50 <= latency.single_p99
    assert 0 < latency.batch_100_p50 <= latency.batch_100_p99

    # salary_range is in the training set, yet no input of the registered model.
    training = pl.read_delta(str(table_path(data, "loans", "training_set")), version=0)
    assert "salary_range" in training.columns
    model = registry.load_sklearn("loans", "1")
    columns = fitted_columns(model)
    assert "salary_range" not in columns.all

    # The card's recall per salary range is scikit-learn's, on the frozen holdout and the registered model.
    holdout = frozen_holdout(load_spec(path), training, datetime.fromisoformat(version.tags["holdout_cutoff"]))
    decided = (model.predict_proba(to_pandas(holdout, columns))[:, 1] >= 0.5).astype(int)
    y, ranges = holdout["repaid"].cast(pl.Int64).to_numpy(), holdout["salary_range"].to_numpy()
    card = (data / "model_cards" / "loans" / "v1.md").read_text()
    assert "## Fairness" in card and "## Latency" in card
    for group in np.unique(ranges):
        mask = ranges == group
        expected = recall_score(y[mask], decided[mask])
        assert f"| salary_range | {group} | {mask.sum()} | recall | {expected:.4f} | counted |" in card
    assert "| salary_range | 60K+ € |" in card and "not counted: under 100 rows" in card
    page = (data / "model_cards" / "loans" / "v1.html").read_text()
    assert "<h2>Fairness</h2>" in page and "<h2>Latency</h2>" in page
