"""Fixtures shared by several test folders: a small user pipeline on CSV files, the small fraud lake, that lake
served over HTTP, and fresh databases of the local services. Helpers are in tests/helpers.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.definitions import build_definitions
from mlops_assets.settings import MLFLOW_UI_ENV
from tests.helpers import (
    DAYS,
    ORDERS,
    QUIET,
    RETURNS,
    S3_SECRET,
    S3_TOKEN,
    SERVER_START_SECONDS,
    SMALL_SPEC,
    Demo,
    Served,
    free_port,
    require_service,
    service_missing,
    small_fraud_specs,
    write_day_files,
)
from tests.services.s3 import S3Server


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, Path]:
    """(specs folder, data folder) of a tiny CSV pipeline with one bad day of orders."""
    specs, data = tmp_path / "specs", tmp_path / "data"
    specs.mkdir()
    (specs / "shop.yaml").write_text(SMALL_SPEC)
    write_day_files(data, "orders", ORDERS)
    write_day_files(data, "returns", RETURNS)
    return specs, data


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(specs, data) with 16 days ingested and their features computed."""
    root = tmp_path_factory.mktemp("lake")
    specs, data = small_fraud_specs(root / "specs"), root / "data"
    defs = build_definitions(specs, str(data))
    with dg.instance_for_test() as instance:
        tags = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[1]}
        assert (
            defs.resolve_job_def("fraud_daily")
            .execute_in_process(instance=instance, tags=tags, run_config=QUIET)
            .success
        )
    return specs, data


@contextlib.contextmanager
def _fresh_database() -> Iterator[str]:
    require_service("PostgreSQL", 5432)
    import psycopg

    name = f"mlops_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database on the local server, dropped afterwards."""
    with _fresh_database() as url:
        yield url


@pytest.fixture
def mlflow_database() -> Iterator[str]:
    """Another fresh database, for an MLflow store beside Dagster's (both have a `runs` table)."""
    with _fresh_database() as url:
        yield url


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of its own (flushed before and after): the online store's keys never mix with others'."""
    require_service("Redis", 6379)
    import redis

    # Databases 9-11 for one pytest-xdist worker, 12-14 for the other: parallel tests never flush each other's.
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")) % 2
    url = f"redis://127.0.0.1:6379/{9 + 3 * worker + uuid.uuid4().int % 3}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A RabbitMQ virtual host of its own (deleted afterwards, with its queues): tasks never reach other workers."""
    require_service("RabbitMQ", 5672)
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        service_missing("rabbitmqctl is not on PATH: no virtual host of its own can be made for the test")
    vhost = f"mlops_test_{uuid.uuid4().hex[:12]}"
    subprocess.run([rabbitmqctl, "add_vhost", vhost], check=True, capture_output=True)
    try:
        subprocess.run(
            [rabbitmqctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True, capture_output=True
        )
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([rabbitmqctl, "delete_vhost", vhost], check=True, capture_output=True)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, once per session (a real HTTP endpoint with conditional writes, as S3 has)."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        service_missing(f"{server} is missing: install the test extra (moto[server])")
    port, log = free_port(), tmp_path_factory.mktemp("moto") / "moto.log"
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto's S3 server never answered on {url}: {log.read_text()[-3000:]}") from None
            time.sleep(0.05)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def s3(s3_endpoint: str) -> S3Server:
    """The session's S3 server as the object-storage tests address it (buckets of their own, AWS's variables): one
    server for every test, so no client cached in the process ever points at a server that is gone."""
    return S3Server(s3_endpoint)


@pytest.fixture
def s3_lake(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """s3://BUCKET/lake in a bucket of its own on the session's S3 server, the standard AWS variables set for it
    (this process and the ones it starts): the code under test knows only that it is S3."""
    aws = {
        "AWS_ACCESS_KEY_ID": "AKIAMLOPSTEST",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_SESSION_TOKEN": S3_TOKEN,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",  # delta-rs refuses a plain-HTTP endpoint without it
    }
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLOPS_LAKE_URI", raising=False)
    import boto3

    bucket = f"mlops-{uuid.uuid4().hex[:16]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/lake"


@pytest.fixture(scope="session")
def served(lake: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Served:
    """A champion, its bento and the online store synced; the spec re-reads the aliases every second."""
    specs, lake_data = lake
    home = tmp_path_factory.mktemp("home")
    shutil.copytree(specs, home / "specs")
    data = home / "data"  # a copy: the session's lake stays as the tests that read it expect
    shutil.copytree(lake_data, data)
    spec_file = home / "specs" / "fraud.yaml"
    spec_file.write_text(spec_file.read_text().replace("refresh_seconds: 10", "refresh_seconds: 1"))
    tracking = f"sqlite:///{home / 'mlflow.db'}"  # a registry of its own: other tests promote in the shared one
    defs = build_definitions(home / "specs", str(data), tracking_uri=tracking)
    with dg.DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def("fraud_training").execute_in_process(instance=instance, run_config=QUIET).success
        tags = {"dagster/asset_partition_range_start": DAYS[1], "dagster/asset_partition_range_end": DAYS[1]}
        daily = defs.resolve_job_def("fraud_daily")
        assert daily.execute_in_process(instance=instance, tags=tags, run_config=QUIET).success
        assert defs.resolve_job_def("fraud_bento").execute_in_process(instance=instance, run_config=QUIET).success
    return Served(home / "specs", data, home, tracking)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`mlops demo` at a small scale in a folder of its own, once per session (the story and the UI tests only read
    it: they share an xdist group); the MLflow links it records point at `mlflow_port`."""
    root, mlflow_port = tmp_path_factory.mktemp("demo"), free_port()
    with pytest.MonkeyPatch.context() as env:
        env.chdir(root)
        env.setenv("DAGSTER_HOME", str(root / "dagster"))
        env.setenv(MLFLOW_UI_ENV, f"http://127.0.0.1:{mlflow_port}")
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.delenv("MLOPS_ONLINE_STORE_URL", raising=False)
        (root / "dagster").mkdir()
        options = ["--days", "20", "--story-days", "12", "--customers", "300", "--transactions-per-day", "1500"]
        result = CliRunner().invoke(main, ["--data-dir", "data", "demo", *options, "--sample", "600"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        yield Demo(root, result.output, mlflow_port)
