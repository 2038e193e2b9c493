"""Train -> register -> promote -> rollback against a real MLflow tracking server backed by PostgreSQL, proxying
artifacts to S3-compatible object storage."""

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.core.models.registry import ModelRegistry
from mlops_assets.definitions import build_definitions
from tests.helpers import QUIET, free_port, wait_for_http
from tests.services.s3 import S3Server

pytestmark = [pytest.mark.services, pytest.mark.slow]


@dataclass(frozen=True)
class ProxyingServer:
    url: str
    s3: S3Server
    bucket: str


@pytest.fixture
def mlflow_server(postgres_database: str, s3: S3Server, tmp_path: Path) -> Iterator[ProxyingServer]:
    """`mlflow server` on loopback, its backend store a fresh PostgreSQL database, the artifacts it serves kept in a
    bucket of S3-compatible storage (moto's server): the recipe of docs/scaling.md, where only the server holds the
    object store's credentials."""
    bucket = s3.bucket()
    env = {**os.environ, **s3.env()}
    with _server(postgres_database, tmp_path, free_port(), f"s3://{bucket}/mlflow", env) as url:
        yield ProxyingServer(url, s3, bucket)


@contextlib.contextmanager
def _server(
    postgres_database: str, tmp_path: Path, port: int, artifacts: str | None = None, env: dict[str, str] | None = None
) -> Iterator[str]:
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
            artifacts or (tmp_path / "artifacts").as_uri(),
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
        env=env,
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
    lake: tuple[Path, Path], mlflow_server: ProxyingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs, data = lake
    # The clients (runs, CLI) have no credentials for the object store: the server proxies every artifact.
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    defs = build_definitions(specs, str(data), tracking_uri=mlflow_server.url)
    registry = ModelRegistry(mlflow_server.url)
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
    # The artifacts went through the server into the bucket: the registered model loads and scores from it.
    assert hasattr(registry.load_sklearn("fraud", "2"), "predict_proba")
    keys = mlflow_server.s3.keys(mlflow_server.bucket, "mlflow/")
    assert sum(k.endswith("/MLmodel") for k in keys) == 2 and any(k.endswith("/v1.md") for k in keys), keys
    assert registry.version("fraud", "2").source.startswith("models:/")
    assert registry.client.get_run(registry.version("fraud", "2").run_id).info.artifact_uri.startswith(
        "mlflow-artifacts:"
    )


SECRET = "s3cret-pw-91f2"  # in the tracking URL: the server ignores it; nothing the run writes may show it


def test_a_tracking_server_down_at_training_time_fails_clearly_and_the_retry_succeeds(
    lake: tuple[Path, Path], postgres_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs, data = lake
    port = free_port()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once: Dagster's retry policy retries
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    tracking = f"http://mlops:{SECRET}@127.0.0.1:{port}"
    defs = build_definitions(specs, str(data), tracking_uri=tracking)
    job = defs.resolve_job_def("fraud_training")
    with dg.instance_for_test() as instance:
        results: list[dg.ExecuteInProcessResult] = []
        run = threading.Thread(
            target=lambda: results.append(
                job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)
            )
        )
        run.start()
        retried: list[dg.EventLogEntry] = []
        deadline = time.monotonic() + 120
        while not retried and time.monotonic() < deadline:  # the server is down: the candidate's step fails
            time.sleep(0.5)
            retried = [
                e
                for r in instance.get_runs()
                for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
            ]
        assert retried, "the step never failed"
        with _server(postgres_database, tmp_path, port):  # the server comes back; the retry goes through
            run.join(timeout=240)
            (result,) = results
            assert result.success
            logs = repr(instance.all_logs(result.run_id))
            registry = ModelRegistry(tracking)
            # One version, registered whole by the successful attempt; the champion's files load.
            versions = registry.client.search_model_versions("name='fraud'")
            assert [v.version for v in versions] == ["1"] and registry.aliases("fraud") == {"champion": "1"}
            assert registry.load_sklearn("fraud", "1") is not None
            run_record = registry.client.get_run(versions[0].run_id)
            recorded = repr((run_record.data.params, run_record.data.tags, versions[0].tags))
    failure = retried[0].dagster_event.step_retry_data.error  # type: ignore[union-attr]
    assert retried[0].step_key == "fraud__model_candidate"
    assert f"MLflow at http://mlops:***@127.0.0.1:{port} failed while logging the candidate" in str(failure)
    # The password is in none of the run's events, the materializations' metadata, or what MLflow recorded.
    assert SECRET not in logs and SECRET not in str(failure) and SECRET not in recorded
