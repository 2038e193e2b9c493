"""The same project on services, configured by environment only: Dagster storage on PostgreSQL (dagster-postgres,
settings written by `mlops init`), the online store on Redis, the lake in object storage (moto's S3 server). Each
test starts from a database, Redis keys and a bucket of its own."""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.core.features.online import open_store
from tests.helpers import (
    BODY,
    S3_SECRET,
    S3_TOKEN,
    free_port,
    post,
    s3_objects,
    small_fraud_specs,
    stop,
    wait_for_http,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

SECRET = f"pw-{uuid.uuid4().hex[:10]}"  # trust auth ignores it; it must appear nowhere the run writes
REDIS_SECRET = f"redis-{uuid.uuid4().hex[:10]}"
API_KEY = f"key-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_with_password(redis_url: str) -> Iterator[str]:
    """The test's Redis database behind a Redis user of its own with a password (removed afterwards)."""
    import redis

    user = f"mlops_{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(user, enabled=True, passwords=[f"+{REDIS_SECRET}"], keys=["*"], commands=["+@all"])
    try:
        yield redis_url.replace("redis://", f"redis://{user}:{REDIS_SECRET}@")
    finally:
        admin.acl_deluser(user)
        admin.close()


def readable_outputs(*roots: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file under `roots` as a reader finds its content: Parquet (Delta tables, prediction log batches) decoded
    to CSV, since their pages are compressed; everything else (SQLite databases, logs, YAML, cards) as it is."""
    for path in sorted(p for root in roots for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            yield path, pl.read_parquet(path).write_csv().encode()
        else:
            yield path, path.read_bytes()


def bucket_contents(uri: str) -> Iterator[tuple[str, bytes]]:
    """Every object under an s3://bucket/prefix, as `readable_outputs` reads a file."""
    import boto3

    client, bucket = boto3.client("s3"), uri.removeprefix("s3://").partition("/")[0]
    for key in s3_objects(uri):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        yield key, pl.read_parquet(body).write_csv().encode() if key.endswith(".parquet") else body


def test_a_whole_run_on_postgres_storage_and_a_redis_online_store_leaks_no_secret(
    postgres_database: str,
    redis_with_password: str,
    s3_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ingest, features, training, the gate, the bento and its serving, all on services whose URLs carry passwords,
    the lake in a bucket reached with a secret key and a session token, behind an API key: none of the secrets is
    in any output (CLI, server log, Dagster's database, files, the bucket's objects)."""
    home, data = tmp_path / "home", tmp_path / "data"
    specs = small_fraud_specs(tmp_path / "specs")
    with_password = postgres_database.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MLOPS_DAGSTER_POSTGRES_URL", with_password)
    monkeypatch.setenv("MLOPS_ONLINE_STORE_URL", redis_with_password)
    monkeypatch.setenv("MLOPS_API_KEY", API_KEY)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLOPS_LAKE_URI", s3_lake)
    secrets = (SECRET, REDIS_SECRET, API_KEY, S3_SECRET, S3_TOKEN)

    result = CliRunner().invoke(main, ["init", "--storage", "postgres"])
    assert result.exit_code == 0, result.output
    settings = (home / "dagster.yaml").read_text()
    assert "env: MLOPS_DAGSTER_POSTGRES_URL" in settings and SECRET not in settings
    again = CliRunner().invoke(main, ["init", "--storage", "postgres"])
    assert again.exit_code == 1 and "--force replaces it" in again.output

    cli = ["--specs", str(specs), "--data-dir", str(data)]
    materialize = [*cli, "materialize", "fraud", "--days", "12"]
    # A plain postgresql:// URL would reach SQLAlchemy's psycopg 3 driver, which dagster-postgres cannot use.
    refused = CliRunner().invoke(main, materialize)
    assert refused.exit_code == 1 and "must start with postgresql+psycopg2://" in refused.output
    outputs = [refused.output]
    monkeypatch.setenv("MLOPS_DAGSTER_POSTGRES_URL", with_password.replace("postgresql://", "postgresql+psycopg2://"))
    # A bucket that is not there: said before anything runs, the credentials not in the sentence.
    no_bucket = CliRunner().invoke(main, ["--lake-uri", "s3://no-such-bucket-here/lake", *materialize])
    assert no_bucket.exit_code == 1 and "bucket 'no-such-bucket-here' does not exist" in no_bucket.output
    outputs.append(no_bucket.output)
    result = CliRunner().invoke(main, materialize)
    assert result.exit_code == 0, result.output
    outputs += [result.output, CliRunner().invoke(main, [*cli, "status", "--json"]).output]

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs()
        assert len(runs) == 3 and all(run.is_success for run in runs)  # one daily run, training, bento
        online = instance.get_latest_materialization_event(dg.AssetKey(["fraud", "online", "customer_spend"]))
        assert online is not None and instance.get_latest_materialization_event(dg.AssetKey(["fraud", "bento"]))
    # The online rows went to Redis, nothing to the embedded SQLite store.
    store = open_store(redis_with_password)
    assert store.watermark("fraud", "customer_spend") is not None
    assert not (data / "online.db").exists()
    assert not (data / "lake").exists() and s3_objects(f"{s3_lake}/lake/fraud/training_set/")  # the lake is there

    # The bento served on the same services: a right key and a wrong one.
    port, log = free_port(), tmp_path / "serve.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlops_assets.cli", *cli, "serve", "fraud", "--port", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/readyz", server, log)
        assert post(f"{url}/predict", {"request": BODY}, key=API_KEY)[0] == 200
        assert post(f"{url}/predict", {"request": BODY}, key=f"{API_KEY}-wrong")[0] == 401
    finally:
        stop(server)
    outputs.append(log.read_text())

    for output in outputs:
        assert not [s for s in secrets if s in output], output[-3000:]
    dump = subprocess.run(
        ["pg_dump", "--data-only", postgres_database], capture_output=True, text=True, check=True
    ).stdout
    assert "fraud/training_set" in dump  # the run's events are there, with their metadata: grep them
    assert not [s for s in secrets if s in dump]
    leaks = [(str(path), s) for path, content in readable_outputs(data, home) for s in secrets if s.encode() in content]
    assert not leaks
    assert not [(key, s) for key, content in bucket_contents(s3_lake) for s in secrets if s.encode() in content]
