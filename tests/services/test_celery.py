"""The asset graph on the dagster-celery executor: two worker processes started here, RabbitMQ as broker (a virtual
host of its own), Redis as result backend (a database of its own), Dagster storage on PostgreSQL. Steps land on both
workers, and the Delta tables, the registry and the online store end up exactly as a run with the in-process
executor leaves them: with a data folder the workers share, and with none (the lake in object storage, MLflow on
PostgreSQL with its artifacts in the bucket, the online store on Redis)."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest

from mlops_assets.core.features.online import open_store
from mlops_assets.core.models.registry import ModelRegistry
from mlops_assets.settings import dagster_yaml
from tests.helpers import (
    SERVER_START_SECONDS,
    kill_server,
    lake_tables,
    s3_lake_tables,
    s3_objects,
    small_fraud_specs,
    until,
)

# One worker runs the whole file: its module fixtures (a served bento, a materialized run) are set up once.
pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.xdist_group("celery")]

ROOT = Path(__file__).resolve().parents[2]
DAYS = ("2026-01-01", "2026-01-09")
PARTITIONS = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[1]}
VIEWS = ("customer_spend", "customer_velocity", "customer_channel_mix")


def _run(job: str, env: dict[str, str], tags: dict[str, str] | None = None) -> None:
    command = [sys.executable, "-m", "dagster", "job", "execute", "-f", str(ROOT / "definitions.py"), "-j", job]
    result = subprocess.run(
        [*command, *(["--tags", json.dumps(tags)] if tags else [])],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _environment(tmp_path: Path, name: str, specs: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / f"{name}_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_", "DAGSTER_"))}
    return {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # `celery` for dagster-celery
        "DAGSTER_HOME": str(home),
        "MLOPS_SPECS_DIR": str(specs),
        "MLOPS_DATA_DIR": str(tmp_path / f"{name}_data"),
        **extra,
    }


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(specs, data folder) after the daily and the training job with the in-process executor: the reference."""
    tmp_path = tmp_path_factory.mktemp("in_process")
    specs = small_fraud_specs(tmp_path / "specs")
    local = _environment(tmp_path, "local", specs)
    (Path(local["DAGSTER_HOME"]) / "dagster.yaml").write_text(dagster_yaml("sqlite"))
    for job, tags in (("fraud_daily", PARTITIONS), ("fraud_training", None)):
        _run(job, local, tags)
    return specs, Path(local["MLOPS_DATA_DIR"])


def _on_two_workers(
    tmp_path: Path, celery: dict[str, str], rabbitmq_url: str, redis_url: str, worker_env: dict[str, dict[str, str]]
) -> set[str]:
    """The daily and the training job on two Celery workers (each with `worker_env[name]` over `celery`): the hosts
    their steps ran on."""
    (Path(celery["DAGSTER_HOME"]) / "dagster.yaml").write_text(dagster_yaml("postgres"))
    with _instance(celery):  # Dagster's tables, created once here: two workers creating them together, one dies
        pass
    settings = tmp_path / "celery.yaml"
    settings.write_text(f"execution:\n  config:\n    broker: {rabbitmq_url}\n    backend: {redis_url}\n")
    workers = []
    for name, env in worker_env.items():
        command = ["dagster-celery", "worker", "start", "-A", "dagster_celery.app", "-y", str(settings), "-n", name]
        workers.append(
            subprocess.Popen(
                [str(Path(sys.executable).with_name(command[0])), *command[1:], "--", "--concurrency=1"],
                env={**celery, **env},
                cwd=env.get("MLOPS_DATA_DIR", ROOT),
                stdout=(tmp_path / f"{name}.log").open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        for name, worker in zip(worker_env, workers, strict=True):  # else the first to connect takes every step
            log = tmp_path / f"{name}.log"
            until(
                lambda log=log, worker=worker: " ready." in log.read_text() or worker.poll() is not None,
                SERVER_START_SECONDS,
                f"celery worker {name} ready",
            )
            assert worker.poll() is None, log.read_text()[-3000:]
        for job, tags in (("fraud_daily", PARTITIONS), ("fraud_training", None)):
            _run(job, celery, tags)
    finally:
        for worker in workers:
            kill_server(worker)

    with _instance(celery) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.is_success for r in runs)
        engine = [e for r in runs for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
        hosts = {
            str(e.dagster_event.engine_event_data.metadata["Celery worker"].value)  # type: ignore[union-attr]
            for e in engine
            if "in celery worker" in (e.message or "")
        }
    return {h.split("@")[0] for h in hosts}


@contextmanager
def _instance(celery: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    """The runs' Dagster instance (its storage on PostgreSQL), opened in this process."""
    with (
        mock.patch.dict(os.environ, {"MLOPS_DAGSTER_POSTGRES_URL": celery["MLOPS_DAGSTER_POSTGRES_URL"]}),
        dg.DagsterInstance.from_config(celery["DAGSTER_HOME"]) as instance,
    ):
        yield instance


def _celery_environment(
    tmp_path: Path, name: str, specs: Path, postgres: str, broker: str, backend: str, **extra: str
) -> dict[str, str]:
    """`_environment` for runs on the celery executor, Dagster's storage on PostgreSQL."""
    return _environment(
        tmp_path,
        name,
        specs,
        MLOPS_EXECUTOR="celery",
        MLOPS_CELERY_BROKER=broker,
        MLOPS_CELERY_BACKEND=backend,
        MLOPS_DAGSTER_POSTGRES_URL=postgres.replace("postgresql://", "postgresql+psycopg2://"),
        **extra,
    )


def test_the_graph_on_celery_workers_ends_as_it_does_in_process(
    in_process: tuple[Path, Path], postgres_database: str, rabbitmq_url: str, redis_url: str, tmp_path: Path
) -> None:
    specs, local_data = in_process
    celery = _celery_environment(tmp_path, "celery", specs, postgres_database, rabbitmq_url, redis_url)
    hosts = _on_two_workers(tmp_path, celery, rabbitmq_url, redis_url, {"worker_a": {}, "worker_b": {}})
    assert hosts == {"worker_a", "worker_b"}  # steps landed on both workers

    celery_data = Path(celery["MLOPS_DATA_DIR"])
    assert lake_tables(celery_data) == lake_tables(local_data)
    registries = [ModelRegistry(f"sqlite:///{d / 'mlflow.db'}") for d in (local_data, celery_data)]
    assert [r.aliases("fraud") for r in registries] == [{"champion": "1"}, {"champion": "1"}]
    metrics = [r.version_metrics("fraud", "1") for r in registries]
    assert metrics[0] == metrics[1]
    stores = [open_store(str(d / "online.db")) for d in (local_data, celery_data)]
    for view in VIEWS:
        assert stores[0].watermark("fraud", view) == stores[1].watermark("fraud", view)


def test_the_graph_on_celery_workers_sharing_no_folder_ends_as_it_does_in_process(
    in_process: tuple[Path, Path],
    postgres_database: str,
    mlflow_database: str,
    rabbitmq_url: str,
    redis_url: str,
    s3_lake: str,
    tmp_path: Path,
) -> None:
    """Each worker (and the process launching the runs) with an empty working and data folder of its own: the lake
    in the bucket, MLflow's store on PostgreSQL with the experiment's artifacts in the bucket, the online store on
    Redis. What one worker writes, the other reads from there; the result equals the in-process run's."""
    specs, local_data = in_process
    tracking = mlflow_database.replace("postgresql://", "postgresql+psycopg2://")
    bucket = s3_lake.removeprefix("s3://").partition("/")[0]
    # The experiment keeps its artifacts in the bucket (created here, before any worker opens the store).
    ModelRegistry(tracking).client.create_experiment("fraud", artifact_location=f"s3://{bucket}/mlflow/fraud")
    celery = _celery_environment(
        tmp_path,
        "launcher",
        specs,
        postgres_database,
        rabbitmq_url,
        redis_url,
        MLOPS_LAKE_URI=s3_lake,
        MLOPS_ONLINE_STORE_URL=redis_url,
        MLFLOW_TRACKING_URI=tracking,
    )
    folders = {name: tmp_path / f"{name}_data" for name in ("launcher", "worker_a", "worker_b")}
    for folder in folders.values():
        folder.mkdir()
    own = {name: {"MLOPS_DATA_DIR": str(folders[name])} for name in ("worker_a", "worker_b")}
    assert _on_two_workers(tmp_path, celery, rabbitmq_url, redis_url, own) == {"worker_a", "worker_b"}

    assert s3_lake_tables(s3_lake) == lake_tables(local_data)
    model_files = [k for k in s3_objects(f"s3://{bucket}/mlflow/fraud/") if k.endswith("/MLmodel")]
    assert model_files  # the registered model's files are in the bucket, where any worker reads them
    registries = [ModelRegistry(f"sqlite:///{local_data / 'mlflow.db'}"), ModelRegistry(tracking)]
    assert [r.aliases("fraud") for r in registries] == [{"champion": "1"}, {"champion": "1"}]
    assert registries[0].version_metrics("fraud", "1") == registries[1].version_metrics("fraud", "1")
    stores = [open_store(str(local_data / "online.db")), open_store(redis_url)]
    for view in VIEWS:
        assert stores[0].watermark("fraud", view) == stores[1].watermark("fraud", view)
    # Nothing on any machine's disk: the lake, the reports, the registry and the online store are all elsewhere.
    assert [p for folder in folders.values() for p in folder.rglob("*")] == []
    assert s3_objects(f"{s3_lake}/model_cards/fraud/v1.md")  # the card, written by whichever worker ran its step
