"""Where a browser opens MLflow for the links in the Dagster UI, and where files a person opens are kept."""

from pathlib import Path

import pytest

from mlops_assets.settings import (
    MLFLOW_UI_ENV,
    SettingError,
    card_path,
    drift_report_path,
    embedded_registry_missing,
    link_seconds,
    mlflow_links,
    mlflow_settings,
    mlflow_ui_url,
    object_store_uri,
)


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


def test_the_artifact_uri_sets_where_new_experiments_keep_artifacts_with_any_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLOPS_ARTIFACT_URI", raising=False)
    assert mlflow_settings(str(tmp_path))[1] == str(tmp_path / "mlartifacts")
    assert mlflow_settings(str(tmp_path), "http://mlflow:5000")[1] == ""  # the server decides
    monkeypatch.setenv("MLOPS_ARTIFACT_URI", "s3://models/mlflow/")
    assert mlflow_settings(str(tmp_path)) == (f"sqlite:///{tmp_path / 'mlflow.db'}", "s3://models/mlflow")
    assert mlflow_settings(str(tmp_path), "http://mlflow:5000")[1] == "s3://models/mlflow"


@pytest.mark.parametrize(
    "value", ["/srv/artifacts", "models/mlflow", "gs://models/mlflow", "s3://", "s3://models/x?endpoint_url=http://h"]
)
def test_an_object_store_location_is_an_s3_uri_and_nothing_else(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_BENTO_URI", value)
    with pytest.raises(SettingError, match="MLOPS_BENTO_URI must be an object-store location such as s3://bucket/pre"):
        object_store_uri("MLOPS_BENTO_URI")
    monkeypatch.setenv("MLOPS_BENTO_URI", "")
    assert object_store_uri("MLOPS_BENTO_URI") is None


def test_links_last_seven_days_unless_told_fewer_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_REPORT_LINK_SECONDS", raising=False)
    assert link_seconds() == 7 * 24 * 3600
    monkeypatch.setenv("MLOPS_REPORT_LINK_SECONDS", "3600")
    assert link_seconds() == 3600
    for wrong in ("0", "604801", "1h"):
        monkeypatch.setenv("MLOPS_REPORT_LINK_SECONDS", wrong)
        with pytest.raises(SettingError, match="MLOPS_REPORT_LINK_SECONDS must be a number of seconds, 1 to 604800"):
            link_seconds()


def test_a_serving_host_without_a_registry_is_one_without_a_tracking_server_or_an_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert embedded_registry_missing(str(tmp_path))  # a fresh data folder: the bento's versions are served
    (tmp_path / "mlflow.db").touch()
    assert not embedded_registry_missing(str(tmp_path))  # the builder's own folder: its registry is followed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert not embedded_registry_missing(str(tmp_path / "elsewhere"))
