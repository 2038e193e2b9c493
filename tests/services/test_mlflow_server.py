"""Train -> register -> promote -> rollback against a real MLflow tracking server backed by PostgreSQL."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.definitions import build_definitions
from mlops_assets.registry import ModelRegistry
from tests.conftest import QUIET, free_port, wait_for_http

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture
def mlflow_server(postgres_database: str, tmp_path: Path) -> Iterator[str]:
    """`mlflow server` on loopback, its backend store a fresh PostgreSQL database, artifacts served by it."""
    port = free_port()
    log = (tmp_path / "mlflow-server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            postgres_database,
            "--artifacts-destination",
            (tmp_path / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,  # anything the server writes relative to its folder stays in the test's folder
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process, tmp_path / "mlflow-server.log")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_lifecycle_against_a_tracking_server(
    lake: tuple[Path, Path], mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs, data = lake
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    defs = build_definitions(specs, str(data), tracking_uri=mlflow_server)
    registry = ModelRegistry(mlflow_server)
    job = defs.resolve_job_def("fraud_training")
    with dg.DagsterInstance.get() as instance:
        # The whole chain: training set -> candidate -> evaluation and gate -> card -> champion.
        assert job.execute_in_process(instance=instance, run_config=QUIET).success
        assert registry.aliases("fraud") == {"champion": "1"}
        candidate = [dg.AssetKey(["fraud", "training_set"]), dg.AssetKey(["fraud", "model_candidate"])]
        assert job.execute_in_process(instance=instance, run_config=QUIET, asset_selection=candidate).success

    cli = ["--specs", str(specs), "--data-dir", str(data)]
    result = CliRunner().invoke(main, [*cli, "promote", "fraud", "2", "--reason", "server test"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, [*cli, "rollback", "fraud"])
    assert result.exit_code == 0, result.output
    assert registry.aliases("fraud") == {"champion": "1"}
    assert registry.version("fraud", "1").tags["promotion_gate"].startswith("pr_auc")
    # The artifacts went through the server: the registered model loads and scores from it.
    assert hasattr(registry.load_sklearn("fraud", "2"), "predict_proba")
