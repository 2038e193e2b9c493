"""`mlops new` on public event files, one per kind of problem (NannyML's car loans, used car prices and credit card
products): the label, task and gate it guesses, what it leaves out, and that the spec it writes loads."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from mlops_assets.app.starter import guess_spec, read_events, render
from mlops_assets.cli import main
from mlops_assets.core.models.modeling import targets
from mlops_assets.spec import load_spec
from tests.public_data import nannyml_csv, write_csv
from tests.unit.test_starter import assert_every_column_accounted_for

MODEL_OUTPUTS = {
    "synthetic_car_loan_reference": ["y_pred_proba", "y_pred"],
    "regression_synthetic_reference": ["y_pred"],
    "mc_reference": [f"y_pred_proba_{card}_card" for card in ("prepaid", "highstreet", "upmarket")] + ["y_pred"],
}


@functools.cache
def dataset(name: str) -> pl.DataFrame:
    """One of NannyML's files, read from the wheel once per test run (frames are immutable: sharing is safe)."""
    return nannyml_csv(name)


@pytest.mark.parametrize(
    ("name", "label", "task", "evidence", "gate"),
    [
        (
            "synthetic_car_loan_reference",
            "repaid",
            "binary",
            "values {0.0, 1.0}",
            {"metric": "roc_auc", "minimum": 0.5},
        ),
        ("regression_synthetic_reference", "y_true", "regression", "numbers, 12,945 distinct values", None),
        (
            "mc_reference",
            "y_true",
            "multiclass",
            "3 text classes {'highstreet_card', 'prepaid_card', 'upmarket_card'}",
            {"metric": "macro_f1", "minimum": 0.333},
        ),
    ],
)
def test_the_label_task_and_gate_are_guessed_with_their_evidence_and_the_spec_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, label: str, task: str, evidence: str, gate: dict
) -> None:
    path = write_csv(dataset(name), tmp_path / f"{name}.csv")
    frame = read_events(path)
    starter = guess_spec("public", frame, path)
    spec = starter.spec
    assert spec["label"]["column"] == label and spec["model"]["task"] == task
    assert f"model.task: {task} (`{label}`: {evidence} → {task}): " in "\n".join(starter.guesses)
    expected = "Regressor" if task == "regression" else "Classifier"
    assert spec["model"]["estimator"] == f"sklearn.ensemble.HistGradientBoosting{expected}"
    # Better than a model that knows nothing: chance, a random class, or always the mean (RMSE = the std).
    std = frame[label].std(ddof=0) if task == "regression" else None
    assert spec["promotion"] == (gate or {"metric": "rmse", "minimum": pytest.approx(std, rel=1e-3)})
    for column in MODEL_OUTPUTS[name]:
        assert starter.left_out[column].startswith("named like another model's output")
    assert_every_column_accounted_for(starter, frame.columns)
    assert targets(frame[label], task).shape == (frame.height,)  # the label is one the model can learn from

    written = tmp_path / "public.yaml"
    written.write_text(render(starter, path))
    with caplog.at_level(logging.WARNING):
        loaded = load_spec(written)
    assert loaded.model is not None and loaded.model.task == task and loaded.label.column == label
    assert not loaded.warnings() and not caplog.records  # nothing it uses is named like a model's output


def test_car_loans_keep_their_booleans_list_the_other_candidates_and_stand_in_a_segment(tmp_path: Path) -> None:
    path = write_csv(dataset("synthetic_car_loan_reference"), tmp_path / "loans.csv")
    starter = guess_spec("loans", read_events(path), path)
    spec = starter.spec
    assert "repaid_loan_on_prev_car" in spec["request_features"]
    others = next(g for g in starter.guesses if g.startswith("other label candidates"))
    assert others.split(": ", 1)[1].startswith(
        "repaid_loan_on_prev_car (values {false, true} → binary; the word 'repaid' in its name); salary_range"
    )
    # No customer repeats: the down payment band stands in as the entity, and the header says why and what to do.
    assert spec["entity"]["keys"] == ["size_of_downpayment"] and spec["label"]["request_id"] == "id"
    assert any(
        g.startswith("entity.keys: [size_of_downpayment] (no column repeats like an entity id") for g in starter.guesses
    )
    # 303 days of loans: a holdout of 30 days, not the 60 a fifth would be.
    assert spec["model"]["holdout"] == "30d"


def test_the_multiclass_file_leaves_its_scores_out_with_a_way_back(tmp_path: Path) -> None:
    path = write_csv(dataset("mc_reference"), tmp_path / "cards.csv")
    starter = guess_spec("cards", read_events(path), path)
    for column in ("credit_bureau_score", "app_behavioral_score"):
        assert column not in starter.spec["request_features"]
        assert starter.left_out[column].endswith(
            "if it is an input known when a prediction is requested, add it to request_features"
        )
    assert {"is_customer", "app_channel", "stated_income"} <= set(starter.spec["request_features"])


def test_mlops_new_reads_text_times_with_a_zone_from_parquet_and_lays_the_days_out_in_utc(tmp_path: Path) -> None:
    loans = dataset("synthetic_car_loan_reference").head(6000)  # about a month of loans
    zoned = loans.with_columns(pl.col("timestamp").str.replace(" ", "T") + "+01:00")
    zoned.write_parquet(tmp_path / "loans.parquet")
    specs, data = tmp_path / "specs", tmp_path / "data"
    cli = ["--specs", str(specs), "--data-dir", str(data)]
    result = CliRunner().invoke(main, [*cli, "new", "loans", "--from", str(tmp_path / "loans.parquet")])
    assert result.exit_code == 0, result.output
    assert "timestamp: text date-times in zone +01:00: converted to UTC" in result.output
    text = (specs / "loans.yaml").read_text()
    assert "#   - timestamp: text date-times in zone +01:00: converted to UTC" in text
    spec = load_spec(specs / "loans.yaml")
    assert spec.sources["events"].event_timestamp == "timestamp" and spec.start_date.isoformat() == "2017-12-31"
    first_day = pl.read_parquet(data / "landing/loans/events/2017-12-31.parquet")
    assert first_day["timestamp"].dtype == pl.Datetime("us") and first_day.height == 7  # 00:00-00:59 +01:00
    assert CliRunner().invoke(main, [*cli, "check"]).exit_code == 0
