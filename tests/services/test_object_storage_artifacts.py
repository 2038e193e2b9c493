"""MLflow artifacts, bentos, drift reports and model cards on S3-compatible object storage: moto's server on
127.0.0.1, reached by the code under test through AWS's standard environment variables only."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mlops_assets.core.lake import scan_table, table_path
from mlops_assets.core.models.registry import ModelRegistry, RegistryError, open_registry
from mlops_assets.core.serving.bundle import BundleError, pull_bento
from mlops_assets.definitions import build_definitions
from tests.helpers import QUIET, Served
from tests.integration.test_drift_report import _log_window, _report
from tests.integration.test_registry import tiny_version
from tests.services.s3 import S3Server

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture
def aws(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The test's process configured for the object store as a user would: AWS's variables, nothing else."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return s3


def test_the_embedded_registry_keeps_a_versions_artifacts_only_in_the_bucket(
    aws: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, data = aws.bucket(), tmp_path / "data"
    monkeypatch.setenv("MLOPS_ARTIFACT_URI", f"s3://{bucket}/mlflow/")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry = open_registry(data)  # as the resources, the CLI and the service open it
    version = tiny_version(registry)
    registry.promote("fraud", version, "first", "test")  # checks that the version's model files are there

    keys = aws.keys(bucket)
    assert any(k.startswith("mlflow/fraud/") and k.endswith("/MLmodel") for k in keys), keys
    assert not (data / "mlartifacts").exists()  # the SQLite store is local; nothing of the model is
    assert [p.name for p in data.iterdir()] == ["mlflow.db"]
    model = registry.load_sklearn("fraud", version)
    assert hasattr(model, "predict_proba")
    downloaded = registry.download_model("fraud", version, tmp_path / "download")  # what the bento build copies
    assert "serialization_format: skops" in (downloaded / "MLmodel").read_text()


def test_an_artifact_bucket_that_is_not_there_fails_the_logging_in_a_sentence_and_registers_nothing(
    aws: S3Server, tmp_path: Path
) -> None:
    registry = ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "s3://absent-bucket/mlflow")
    with pytest.raises(RegistryError) as refused:
        tiny_version(registry)
    assert str(refused.value) == (
        "cannot write the artifacts of 'fraud': s3://absent-bucket/mlflow/fraud: the bucket 'absent-bucket' does not "
        "exist"
    )
    assert registry.versions("fraud") == set()


def test_an_experiment_made_before_the_artifact_uri_was_set_stays_where_it_is_and_says_so(
    aws: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ModelRegistry(tracking, tmp_path / "mlartifacts").experiment_id("loans")
    bucket = aws.bucket()
    with caplog.at_level(logging.WARNING):
        ModelRegistry(tracking, f"s3://{bucket}/mlflow").experiment_id("loans")
    (warning,) = [r.getMessage() for r in caplog.records if "loans" in r.getMessage()]
    assert f"keeps its artifacts at {(tmp_path / 'mlartifacts' / 'loans').as_uri()}, not under s3://{bucket}" in warning
    assert "rename" in warning


def test_a_drift_report_on_object_storage_is_linked_by_a_presigned_url_that_opens_it(
    aws: S3Server, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, day = aws.bucket(), "2026-01-15"
    monkeypatch.setenv("MLOPS_REPORTS_URI", f"s3://{bucket}/mlops")
    monkeypatch.setenv("MLOPS_REPORT_LINK_SECONDS", "3600")
    training = scan_table(table_path(served.data, "fraud", "training_set")).collect()
    _log_window(served, day, training.filter(pl.col("transaction_ts") >= datetime(2026, 1, 8)).sample(300, seed=2))
    before = datetime.now(UTC)
    metadata, _ = _report(served, day)

    uri = f"s3://{bucket}/mlops/reports/fraud/drift/{day}.html"
    assert metadata["report_uri"] == uri
    assert not (served.data / "reports" / "fraud" / "drift" / f"{day}.html").exists()
    link = metadata["report"]
    assert link.startswith(f"{aws.url}/{bucket}/mlops/reports/fraud/drift/{day}.html?")
    assert "X-Amz-Signature=" in link and "X-Amz-Expires=3600" in link and aws.secret not in link
    expires = datetime.fromisoformat(metadata["report_link_expires"])
    assert before + timedelta(seconds=3600) - timedelta(seconds=1) <= expires <= datetime.now(UTC) + timedelta(hours=1)
    with urllib.request.urlopen(link, timeout=10) as response:  # what a browser does with the UI's link
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert f"fraud drift report, {day}" in response.read().decode()

    # `mlops report` lists the bucket and links the same page.
    command = [sys.executable, "-m", "mlops_assets.cli", "--specs", str(served.specs), "--data-dir", str(tmp_path)]
    shown = subprocess.run([*command, "report", "fraud"], capture_output=True, text=True, env=served.env())
    assert shown.returncode == 0, shown.stderr
    assert f"drift report: {aws.url}/{bucket}/mlops/reports/fraud/drift/{day}.html?" in shown.stdout
    assert f"({uri}, the link works until " in shown.stdout and "model card: none yet" in shown.stdout


def _bento_run(served: Served, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    defs = build_definitions(served.specs, str(served.data), tracking_uri=served.tracking)
    return defs.resolve_job_def("fraud_bento").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False
    )


def test_the_bento_asset_exports_its_bento_and_a_missing_bucket_is_one_sentence(
    aws: S3Server, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = aws.bucket()
    monkeypatch.setenv("MLOPS_BENTO_URI", f"s3://{bucket}/bentos")
    with dg.DagsterInstance.ephemeral() as instance:
        result = _bento_run(served, instance)  # the served bento, reused (nothing changed), and exported
        assert result.success
        (event,) = result.get_asset_materialization_events()
        metadata = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
        name, _, version = metadata["bento_tag"].partition(":")
        exported = f"s3://{bucket}/bentos/fraud/{name}-{version}.bento"
        assert metadata["exported_to"] == exported and aws.keys(bucket) == [f"bentos/fraud/{name}-{version}.bento"]
        assert metadata["serve"].startswith(f"mlops serve fraud --bento {exported}")
        # A serving host's own BentoML home imports it, once: a second pull (a restart) finds it there.
        pull = (
            "import sys; from mlops_assets.core.serving.bundle import pull_bento; print(*map(pull_bento, sys.argv[1:]))"
        )
        home = tmp_path / "bentoml"
        pulled = subprocess.run(
            [sys.executable, "-c", pull, exported, exported],
            capture_output=True,
            text=True,
            env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"},
            timeout=120,
        )
        assert pulled.returncode == 0, pulled.stderr[-3000:]
        assert pulled.stdout.split() == [f"{name}:{version}"] * 2
        assert (home / "bentos" / name / version / "bento.yaml").exists()

        monkeypatch.setenv("MLOPS_BENTO_URI", "s3://absent-bucket/bentos")
        failed = _bento_run(served, instance)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert error is not None and "Traceback" not in error.message
    assert (
        f"the bento {name}:{version} was built but cannot be exported: s3://absent-bucket/bentos/fraud/"
        f"{name}-{version}.bento: the bucket 'absent-bucket' does not exist"
    ) in error.message


def test_pulling_a_bento_that_is_not_there_names_the_uri_and_why(aws: S3Server) -> None:
    uri = f"s3://{aws.bucket()}/bentos/fraud/mlops_fraud-x.bento"
    with pytest.raises(BundleError) as missing:
        pull_bento(uri)
    assert str(missing.value) == f"cannot import the bento {uri}: no such object"


def test_serve_from_a_missing_bucket_is_one_sentence_without_a_traceback(aws: S3Server, tmp_path: Path) -> None:
    # The built-in fraud spec; the service never starts: the bento cannot be pulled.
    command = [sys.executable, "-m", "mlops_assets.cli", "--data-dir", str(tmp_path), "serve", "fraud"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    result = subprocess.run(
        [*command, "--bento", "s3://absent-bucket/fraud/x.bento"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: cannot import the bento s3://absent-bucket/fraud/x.bento: the bucket 'absent-bucket' does not exist"
    )
