"""The training set's blocking checks stop a model from being trained on what cannot teach it."""

from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.definitions import build_definitions
from tests.helpers import QUIET

pytestmark = pytest.mark.integration

MODEL = """
model:
  estimator: sklearn.linear_model.LogisticRegression
  holdout: 1d
promotion:
  minimum: 0.0
"""


def test_too_little_to_learn_from_stops_the_training_run_before_the_candidate(shop: tuple[Path, Path]) -> None:
    specs, data = shop
    spec = specs / "shop.yaml"
    spec.write_text(spec.read_text() + MODEL)
    defs = build_definitions(specs, str(data))
    tags = {"dagster/asset_partition_range_start": "2026-03-01", "dagster/asset_partition_range_end": "2026-03-02"}
    with dg.instance_for_test() as instance:
        daily = defs.resolve_job_def("shop_daily")
        assert daily.execute_in_process(instance=instance, tags=tags, run_config=QUIET).success
        result = defs.resolve_job_def("shop_training").execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False
        )
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert (checks["feature_coverage"].passed, checks["constant_features"].passed) == (True, True)
    learn = checks["enough_to_learn"]
    assert (learn.passed, learn.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert "model.holdout (1d) is as long as or longer than the training part" in learn.description
    assert "fewer than model.min_class_rows (20)" in learn.description
    assert learn.metadata["rows"].value == 2
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"shop/training_set"}
