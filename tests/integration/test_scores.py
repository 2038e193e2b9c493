"""Batch inference on NannyML's car loans (a public file, from its PyPI wheel): each day scored by the version that
was champion at its end, a re-run replacing the day, the features those of the training set, a day before any
champion refused."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from mlops_assets.app.runs import materialize, score
from mlops_assets.app.starter import new_pipeline
from mlops_assets.app.workspace import AppError, Workspace
from mlops_assets.core.lake import PARTITION_COLUMN, scan_table
from mlops_assets.core.models import registry as registry_module
from mlops_assets.core.models.modeling import fitted_columns, predict, to_pandas
from mlops_assets.core.scoring.batch import MODEL_VERSION, PREDICTION_TIME, RUN_ID, SCORE, feature_time_column
from mlops_assets.defs import keys
from tests.public_data import nannyml_csv, write_csv

pytestmark = pytest.mark.integration

VIEW = "size_of_downpayment_activity"


def test_each_day_is_scored_by_its_own_champion_on_the_training_sets_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    # The registry's clock, set in the loans' own time: promotions happen between the days they score.
    clock = {"now": "2018-01-13T06:00:00+00:00"}
    monkeypatch.setattr(registry_module, "_now", lambda: clock["now"])
    specs, data = tmp_path / "specs", tmp_path / "data"
    new_pipeline(specs, data, "loans", write_csv(nannyml_csv("loans", 16), tmp_path / "loans.csv"))
    path = specs / "loans.yaml"
    spec_data = yaml.safe_load(path.read_text())
    spec_data["model"]["params"] = {"max_iter": 20}
    spec_data["scoring"] = {"population": {"source": "events", "carry": ["id"]}}
    path.write_text(yaml.safe_dump(spec_data, sort_keys=False, allow_unicode=True))
    workspace = Workspace(str(specs), str(data))
    assert materialize(workspace, "loans", date(2018, 1, 1), 12).ok  # version 1, champion from Jan 13, 06:00
    assert materialize(workspace, "loans", date(2018, 1, 13), 4, training=False).ok
    # Retrained on the 16 days: version 2, champion from Jan 15, 12:00 (by its gate, or by a person if it failed).
    clock["now"] = "2018-01-15T12:00:00+00:00"
    spec = workspace.spec("loans")
    workspace.run(keys.training_job(spec))
    registry, second = workspace.registry, "2"
    if registry.aliases("loans").get("champion") != second:
        registry.promote("loans", second, "a second champion", "test")

    summary = score(workspace, "loans", date(2018, 1, 13), 4)
    assert summary.ok, summary.failures
    scores = scan_table(data / "lake" / "loans" / "scores").collect()
    used = dict(scores.group_by(PARTITION_COLUMN).agg(pl.col(MODEL_VERSION).unique()).iter_rows())
    assert used == {"2018-01-13": ["1"], "2018-01-14": ["1"], "2018-01-15": [second], "2018-01-16": [second]}
    assert [(c.version, c.at.isoformat()) for c in registry.champion_history("loans")] == [
        ("1", "2018-01-13T06:00:00+00:00"),
        ("2", "2018-01-15T12:00:00+00:00"),
    ]
    raw = scan_table(data / "lake" / "loans" / "raw_events").collect()
    for day in used:
        assert sorted(scores.filter(pl.col(PARTITION_COLUMN) == day)["id"]) == sorted(
            raw.filter(pl.col(PARTITION_COLUMN) == day)["id"]
        )
    assert all(passed for checks in summary.checks.values() for passed, _, _ in checks), summary.checks
    assert scores[feature_time_column(VIEW)].null_count() < scores.height

    # The features are the training set's for the same events: the champion scores its rows as the batch did.
    training = scan_table(data / "lake" / "loans" / "training_set").collect()
    rows = training.filter(pl.col("timestamp").dt.date() == date(2018, 1, 14)).sort("timestamp")
    model = registry.load_sklearn("loans", "1")
    expected = predict(model, to_pandas(rows, fitted_columns(model)), "binary").values
    batch = scores.filter(pl.col(PARTITION_COLUMN) == "2018-01-14").sort(PREDICTION_TIME)
    assert batch[PREDICTION_TIME].to_list() == rows["timestamp"].to_list()
    np.testing.assert_allclose(batch[SCORE].to_numpy(), expected)

    # A re-run replaces its day and only it.
    assert score(workspace, "loans", date(2018, 1, 14), 1).ok
    again = scan_table(data / "lake" / "loans" / "scores").collect()
    assert again.height == scores.height
    runs = dict(again.group_by(PARTITION_COLUMN).agg(pl.col(RUN_ID).unique()).iter_rows())
    before = dict(scores.group_by(PARTITION_COLUMN).agg(pl.col(RUN_ID).unique()).iter_rows())
    assert runs["2018-01-14"] != before["2018-01-14"]
    assert {d: r for d, r in runs.items() if d != "2018-01-14"} == {
        d: r for d, r in before.items() if d != "2018-01-14"
    }

    # A day that ended before the first promotion has no champion to score it: the run says so.
    early = score(workspace, "loans", date(2018, 1, 12), 1)
    assert not early.ok
    assert "no version was champion at 2018-01-13T00:00:00+00:00 (the first was at 2018-01-13T06:00:00+00:00)" in (
        " ".join(early.failures)
    )
    with pytest.raises(AppError, match="before the pipeline's start_date"):
        score(workspace, "loans", date(2017, 12, 31), 1)
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    with pytest.raises(AppError, match=f"reaches {tomorrow}, after today"):
        score(workspace, "loans", tomorrow - timedelta(days=1), 2)

    # A rollback is a change of the history too: the version it restores is the champion from then on.
    clock["now"] = "2018-01-17T08:00:00+00:00"
    registry.rollback("loans", "test")
    assert [(c.version, c.previous, c.at.day) for c in registry.champion_history("loans")][1:] == [
        ("2", "1", 15),
        ("1", "2", 17),
    ]
