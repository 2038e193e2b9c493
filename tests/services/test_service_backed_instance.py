"""The same project on services, configured by environment only: Dagster storage on PostgreSQL (dagster-postgres,
settings written by `mlops init`), the online store on Redis. Each test starts from a database and Redis keys of
its own."""

import uuid
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.online import open_store
from tests.conftest import small_fraud_specs

pytestmark = [pytest.mark.services, pytest.mark.slow]

SECRET = f"pw-{uuid.uuid4().hex[:10]}"  # trust auth ignores it; it must appear nowhere the run writes


def test_the_daily_job_on_postgres_storage_and_a_redis_online_store(
    postgres_database: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    specs = small_fraud_specs(tmp_path / "specs")
    with_password = postgres_database.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MLOPS_DAGSTER_POSTGRES_URL", with_password)
    monkeypatch.setenv("MLOPS_ONLINE_STORE_URL", redis_url)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    result = CliRunner().invoke(main, ["init", "--storage", "postgres"])
    assert result.exit_code == 0, result.output
    settings = (home / "dagster.yaml").read_text()
    assert "env: MLOPS_DAGSTER_POSTGRES_URL" in settings and SECRET not in settings
    again = CliRunner().invoke(main, ["init", "--storage", "postgres"])
    assert again.exit_code == 1 and "--force replaces it" in again.output

    cli = ["--specs", str(specs), "--data-dir", str(data)]
    materialize = [*cli, "materialize", "fraud", "--days", "3", "--no-training"]
    # A plain postgresql:// URL would reach SQLAlchemy's psycopg 3 driver, which dagster-postgres cannot use.
    refused = CliRunner().invoke(main, materialize)
    assert refused.exit_code == 1 and "must start with postgresql+psycopg2://" in refused.output
    assert SECRET not in refused.output
    monkeypatch.setenv("MLOPS_DAGSTER_POSTGRES_URL", with_password.replace("postgresql://", "postgresql+psycopg2://"))
    result = CliRunner().invoke(main, materialize)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        (run,) = instance.get_runs()
        assert run.is_success
        events = instance.all_logs(run.run_id)
        assert SECRET not in repr(events)
        online = instance.get_latest_materialization_event(dg.AssetKey(["fraud", "online", "customer_spend"]))
        assert online is not None
    # The online rows went to Redis, nothing to the embedded SQLite store.
    store = open_store(redis_url)
    assert store.watermark("fraud", "customer_spend") is not None
    assert not (data / "online.db").exists()
