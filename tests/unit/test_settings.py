"""Where a browser opens MLflow for the links in the Dagster UI, and where files a person opens are kept."""

from pathlib import Path

import pytest

from mlops_assets.settings import MLFLOW_UI_ENV, card_path, drift_report_path, mlflow_links, mlflow_ui_url


def test_the_mlflow_ui_is_the_tracking_server_without_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MLFLOW_UI_ENV, raising=False)
    assert mlflow_ui_url("http://mlops:s3cret@tracking.internal:5000/") == "http://tracking.internal:5000"
    assert mlflow_ui_url("https://mlflow.example.com/prefix") == "https://mlflow.example.com/prefix"
    # The embedded store has no server: `mlops mlflow` serves its UI on the default port.
    assert mlflow_ui_url("sqlite:////tmp/data/mlflow.db") == "http://127.0.0.1:5000"
    monkeypatch.setenv(MLFLOW_UI_ENV, "https://mlflow.example.com/")
    assert mlflow_ui_url("sqlite:////tmp/data/mlflow.db") == "https://mlflow.example.com"


def test_links_name_the_run_and_the_registered_version() -> None:
    urls = mlflow_links("http://127.0.0.1:5000", "3", "abc123", "fraud model", "7")
    assert urls == {
        "mlflow_run": "http://127.0.0.1:5000/#/experiments/3/runs/abc123",
        "mlflow_model_version": "http://127.0.0.1:5000/#/models/fraud%20model/versions/7",
    }


def test_cards_and_reports_live_under_the_data_folder(tmp_path: Path) -> None:
    assert card_path(tmp_path, "fraud", "3") == tmp_path / "model_cards" / "fraud" / "v3.md"
    assert drift_report_path(tmp_path, "fraud", "2026-02-01") == tmp_path / "reports/fraud/drift/2026-02-01.html"
