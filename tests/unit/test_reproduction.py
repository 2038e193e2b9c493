"""What `mlops reproduce` compares: two models' outputs on the same rows, and what changed since a version was
trained."""

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.lake import overwrite_table
from mlops_assets.core.models.lineage import LineageError, trained_on
from mlops_assets.core.models.modeling import Outputs
from mlops_assets.core.models.reproduction import Reproduction, changes, largest_difference
from mlops_assets.spec import load_specs


def test_outputs_are_identical_only_when_every_value_is() -> None:
    a = Outputs("binary", np.array([0.1, 0.2, np.nan]))
    assert largest_difference(a, Outputs("binary", np.array([0.1, 0.2, np.nan]))) == 0.0  # NaN where both are
    assert largest_difference(a, Outputs("binary", np.array([0.1, 0.25, np.nan]))) == np.float64(0.25) - 0.2
    assert largest_difference(a, Outputs("binary", np.array([0.1, 0.2, 0.3]))) == float("inf")  # one NaN only
    assert largest_difference(a, Outputs("binary", np.array([0.1, 0.2]))) == float("inf")  # other rows


def test_multiclass_outputs_in_other_classes_are_never_close() -> None:
    values = np.array([[0.7, 0.3], [0.4, 0.6]])
    mine = Outputs("multiclass", values, ("gold", "silver"))
    assert largest_difference(mine, Outputs("multiclass", values.copy(), ("gold", "silver"))) == 0.0
    assert largest_difference(mine, Outputs("multiclass", values.copy(), ("gold", "platinum"))) == float("inf")


def test_changes_name_what_differs_and_what_is_missing_on_either_side() -> None:
    recorded = {"numpy": "2.1.0", "polars": "1.30.0", "skops": "0.13"}
    now = {"numpy": "2.1.0", "polars": "1.31.0", "mlflow": "3.17.2"}
    assert changes(recorded, now, "package ") == {
        "package mlflow": ("not recorded", "3.17.2"),
        "package polars": ("1.30.0", "1.31.0"),
        "package skops": ("0.13", "absent"),
    }
    assert changes(recorded, dict(recorded)) == {}


def test_a_reproduction_is_identical_only_with_the_same_training_set_and_outputs() -> None:
    same = Reproduction("loans", "1", 100, True, 20, 0.0)
    assert same.identical
    assert not Reproduction("loans", "1", 100, False, 20, 0.0).identical
    assert not Reproduction("loans", "1", 100, True, 20, 1e-17).identical


def test_a_version_is_judged_on_its_own_training_set_version_and_the_rows_after_its_cutoff(tmp_path: Path) -> None:
    spec = load_specs()[0]
    when = spec.label.prediction_timestamp
    table = tmp_path / "training_set"
    start = datetime(2026, 1, 1)
    first = pl.DataFrame({when: [start + timedelta(days=d) for d in range(6)], "x": list(range(6))})
    overwrite_table(table, first)
    overwrite_table(table, first.with_columns(pl.col("x") + 100))  # a later training set, version 1
    tags = {"training_set_delta_version": "0", "holdout_cutoff": (start + timedelta(days=3)).isoformat()}
    training, holdout = trained_on(spec, table, tags)
    assert training.equals(first)
    # The cutoff row itself was trained on: the holdout is strictly after it.
    assert holdout.get_column("x").to_list() == [4, 5]
    with pytest.raises(LineageError, match=r"training_set at Delta version 7 cannot be read"):
        trained_on(spec, table, {**tags, "training_set_delta_version": "7"})
    # A version whose lineage tags are gone or edited says which tag, not a bare KeyError.
    with pytest.raises(LineageError, match=r"the version's tag 'holdout_cutoff' is missing"):
        trained_on(spec, table, {"training_set_delta_version": "0"})
    with pytest.raises(LineageError, match=r"tags are unreadable \(invalid literal"):
        trained_on(spec, table, {**tags, "training_set_delta_version": "latest"})
