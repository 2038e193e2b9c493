"""The same project on services, configured by environment only: Dagster storage on PostgreSQL (dagster-postgres,
settings written by `mlops init`), the online store on Redis, the lake, MLflow's artifacts, the bento and the model
cards on S3-compatible object storage (moto's server, started here). Each test starts from a database, Redis keys and a
bucket of its own."""

import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.core.features.online import open_store
from mlops_assets.core.lake import location, scan_table
from tests.helpers import BODY, free_port, post, small_fraud_specs, stop, until, wait_for_http
from tests.services.s3 import S3Server

pytestmark = [pytest.mark.services, pytest.mark.slow]

SECRET = f"pw-{uuid.uuid4().hex[:10]}"  # trust auth ignores it; it must appear nowhere the run writes
REDIS_SECRET = f"redis-{uuid.uuid4().hex[:10]}"
API_KEY = f"key-{uuid.uuid4().hex[:10]}"
SESSION_TOKEN = f"session-{uuid.uuid4().hex[:10]}"  # temporary credentials: AWS_SESSION_TOKEN beside the secret key
SERVED_DAY = "2026-01-12"  # the last of the 12 materialized days


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


def readable_objects(s3: S3Server, bucket: str) -> Iterator[tuple[str, bytes]]:
    """Every object of the bucket as a reader finds its content: a bento's archive (tar.xz) by its files."""
    for key in s3.keys(bucket):
        content = s3.read(bucket, key)
        if key.endswith(".bento"):
            with tarfile.open(fileobj=io.BytesIO(content), mode="r:xz") as archive:
                for member in archive.getmembers():
                    if member.isfile() and (file := archive.extractfile(member)) is not None:
                        yield f"{key}!{member.name}", file.read()
        elif key.endswith(".parquet"):  # Delta's data files: compressed pages, read decoded
            yield key, pl.read_parquet(io.BytesIO(content)).write_csv().encode()
        else:
            yield key, content


def readable_outputs(*roots: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file under `roots` as a reader finds its content: Parquet (Delta tables, prediction log batches) decoded
    to CSV, since their pages are compressed; everything else (SQLite databases, logs, YAML, cards) as it is."""
    for path in sorted(p for root in roots for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            yield path, pl.read_parquet(path).write_csv().encode()
        else:
            yield path, path.read_bytes()


def test_a_whole_run_on_postgres_storage_a_redis_online_store_and_object_storage_leaks_no_secret(
    postgres_database: str, redis_with_password: str, s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest, features, training, the gate, the bento and its serving on a second host that shares no disk with
    the first, its prediction log written to the bucket and graded on the first host (ingested, a drift report), all
    on services whose URLs carry passwords, object storage reached with temporary AWS credentials, and behind an API
    key: none of the secrets is in any output (CLI, server log, Dagster's database, files, objects)."""
    home, data = tmp_path / "home", tmp_path / "data"
    # Replays allowed: a request of a materialized day is answered and logged under that day, for it to be graded.
    specs = small_fraud_specs(
        tmp_path / "specs", **{"  online_timeout_ms: 100": "  online_timeout_ms: 100\n  allow_replay: true"}
    )
    with_password = postgres_database.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")
    bucket = s3.bucket()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MLOPS_DAGSTER_POSTGRES_URL", with_password)
    monkeypatch.setenv("MLOPS_ONLINE_STORE_URL", redis_with_password)
    monkeypatch.setenv("MLOPS_API_KEY", API_KEY)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name, value in s3.env(session_token=SESSION_TOKEN).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLOPS_ARTIFACT_URI", f"s3://{bucket}/mlflow")
    monkeypatch.setenv("MLOPS_BENTO_URI", f"s3://{bucket}/bentos")
    monkeypatch.setenv("MLOPS_REPORTS_URI", f"s3://{bucket}/pages")
    monkeypatch.setenv("MLOPS_LAKE_URI", f"s3://{bucket}/lake")  # the landing files and Delta tables too
    secrets = (SECRET, REDIS_SECRET, API_KEY, s3.secret, SESSION_TOKEN)

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
    result = CliRunner().invoke(main, materialize)
    assert result.exit_code == 0, result.output
    outputs += [result.output, CliRunner().invoke(main, [*cli, "status", "--json"]).output]

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs()
        assert len(runs) == 3 and all(run.is_success for run in runs)  # one daily run, training, bento
        online = instance.get_latest_materialization_event(dg.AssetKey(["fraud", "online", "customer_spend"]))
        assert online is not None and instance.get_latest_materialization_event(dg.AssetKey(["fraud", "bento"]))
        card = instance.get_latest_materialization_event(dg.AssetKey(["fraud", "model_card"]))
        bento = instance.get_latest_materialization_event(dg.AssetKey(["fraud", "bento"]))
        assert card is not None and card.asset_materialization is not None
        assert bento is not None and bento.asset_materialization is not None
        card_metadata = {k: getattr(v, "value", v) for k, v in card.asset_materialization.metadata.items()}
        exported = bento.asset_materialization.metadata["exported_to"].value
    # The online rows went to Redis, nothing to the embedded SQLite store.
    store = open_store(redis_with_password)
    assert store.watermark("fraud", "customer_spend") is not None
    assert not (data / "online.db").exists()
    # The model's artifacts, the bento and the card are in the bucket, none of them in the data folder.
    keys = s3.keys(bucket)
    assert any(k.startswith("mlflow/fraud/") and k.endswith("/MLmodel") for k in keys), keys
    assert {"pages/model_cards/fraud/v1.md", "pages/model_cards/fraud/v1.html"} <= set(keys)
    assert str(exported).startswith(f"s3://{bucket}/bentos/fraud/mlops_fraud-") and exported.split("/", 3)[3] in keys
    assert not (data / "mlartifacts").exists() and not (data / "model_cards").exists()
    # Temporary credentials: a presigned link would carry the session token, so the card has none, and says why.
    assert card_metadata["model_card_uri"] == f"s3://{bucket}/pages/model_cards/fraud/v1.html"
    assert "model_card" not in card_metadata and "credentials are temporary" in card_metadata["model_card_link"]

    # The bento served on a second host: its own data folder and BentoML home, the specs copied, no registry; it
    # pulls the bento from the bucket and reads the online store on Redis. A right key and a wrong one.
    host = tmp_path / "host_b"
    shutil.copytree(specs, host / "specs")
    port, log = free_port(), tmp_path / "serve.log"
    serve = ["serve", "fraud", "--port", str(port), "--bento", exported]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlops_assets.cli", "--specs", "specs", "--data-dir", "data", *serve],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k not in ("BENTOML_HOME", "DAGSTER_HOME")},
        cwd=host,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/readyz", server, log)
        assert post(f"{url}/predict", {"request": BODY}, key=API_KEY)[0] == 200
        assert post(f"{url}/models", {}, key=API_KEY) == (200, {"pipeline": "fraud", "champion": "1"})
        assert post(f"{url}/predict", {"request": BODY}, key=f"{API_KEY}-wrong")[0] == 401
        # A request of a materialized day: its record is filed under that day, in the bucket beside the lake.
        served = {**BODY, "timestamp": f"{SERVED_DAY}T23:00:00Z", "request_id": "served-day"}
        status, answer = post(f"{url}/predict", {"request": served}, key=API_KEY)
        assert status == 200, answer
        batches = f"lake/prediction_log/fraud/{SERVED_DAY}/"
        until(lambda: any(k.startswith(batches) for k in s3.keys(bucket)), what="the log batch in the bucket")
    finally:
        stop(server)
    outputs.append(log.read_text())
    assert "no model registry here" in outputs[-1]
    assert (host / "data" / "bentoml" / "bentos" / "mlops_fraud").is_dir() and not (
        host / "data" / "mlflow.db"
    ).exists()
    assert not (host / "data" / "prediction_log").exists()  # the log went to the bucket only

    # The first host grades the served day: the log ingested from the bucket, its drift report written there.
    graded = CliRunner().invoke(main, [*cli, "monitor", "fraud", "--day", SERVED_DAY])
    outputs.append(graded.output)
    assert f"pages/reports/fraud/drift/{SERVED_DAY}.html" in graded.output, graded.output
    logged = scan_table(location(f"s3://{bucket}/lake/lake/fraud/prediction_log"), [SERVED_DAY]).collect()
    assert logged["request_id"].to_list() == ["served-day"] and logged["model_version"].to_list() == ["1"]
    assert f"pages/reports/fraud/drift/{SERVED_DAY}.html" in s3.keys(bucket)
    assert not (data / "prediction_log").exists()

    for output in outputs:
        assert not [s for s in secrets if s in output], output[-3000:]
    dump = subprocess.run(
        ["pg_dump", "--data-only", postgres_database], capture_output=True, text=True, check=True
    ).stdout
    assert "fraud/training_set" in dump  # the run's events are there, with their metadata: grep them
    assert not [s for s in secrets if s in dump]
    files = readable_outputs(data, home, host)
    leaks = [(str(path), s) for path, content in files for s in secrets if s.encode() in content]
    leaks += [(key, s) for key, content in readable_objects(s3, bucket) for s in secrets if s.encode() in content]
    assert not leaks
