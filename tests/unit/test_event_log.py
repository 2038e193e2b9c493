"""The batched SQLite event log records a range run exactly as Dagster's own storage does, a batch at a time."""

import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from mlops_assets.defs.common.event_log import BATCH_SIZE, BATCH_SIZE_ENV, BatchedSqliteEventLogStorage
from mlops_assets.settings import dagster_yaml
from tests.helpers import QUIET

DAYS = 40
PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-01-01")
KEYS = [dg.AssetKey("raw"), dg.AssetKey("features")]


def _definitions(fail: bool = False) -> dg.Definitions:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.asset(key=KEYS[0], partitions_def=PARTITIONS, backfill_policy=dg.BackfillPolicy.single_run())
        def raw(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})

        @dg.asset(key=KEYS[1], deps=[raw], partitions_def=PARTITIONS, backfill_policy=dg.BackfillPolicy.single_run())
        def features() -> dg.MaterializeResult:
            if fail:
                raise RuntimeError("the feature step fails")
            return dg.MaterializeResult(metadata={"rows": 1})

    return dg.Definitions(assets=[raw, features], jobs=[dg.define_asset_job("daily", selection=KEYS)])


@pytest.fixture(params=["dagster", "batched"])
def instance(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A Dagster instance on files as `mlops init` writes it (the batched event log), or with Dagster's own."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    settings = dagster_yaml("sqlite")
    assert "class: BatchedSqliteEventLogStorage" in settings
    if request.param == "batched":
        monkeypatch.setenv(BATCH_SIZE_ENV, BATCH_SIZE)
    else:
        settings = settings.partition("event_log_storage:")[0]
        monkeypatch.delenv(BATCH_SIZE_ENV, raising=False)
    (tmp_path / "dagster.yaml").write_text(settings)
    with dg.DagsterInstance.get() as instance:
        yield instance


def _run(instance: dg.DagsterInstance, fail: bool = False) -> dg.ExecuteInProcessResult:
    tags = {"dagster/asset_partition_range_start": "2026-01-01", "dagster/asset_partition_range_end": "2026-02-09"}
    job = _definitions(fail).resolve_job_def("daily")
    return job.execute_in_process(instance=instance, tags=tags, run_config=QUIET, raise_on_error=False)


def _status(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[list[str], list[str]]:
    cached = get_and_update_asset_status_cache_value(instance, key, PARTITIONS)
    assert cached is not None
    return (
        sorted(cached.deserialize_materialized_partition_subsets(PARTITIONS).get_partition_keys()),
        sorted(cached.deserialize_failed_partition_subsets(PARTITIONS).get_partition_keys()),
    )


def test_a_range_run_is_recorded_day_by_day_whichever_storage(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_one_by_one: list[str] = []
    storage = type(instance.event_log_storage)
    original = storage.store_event

    def spy(self: BatchedSqliteEventLogStorage, event: EventLogEntry) -> None:
        if event.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            stored_one_by_one.append(event.dagster_event_type.value)
        original(self, event)

    monkeypatch.setattr(storage, "store_event", spy)
    result = _run(instance)
    assert result.success
    days = [f"2026-01-{d:02d}" for d in range(1, 32)] + [f"2026-02-{d:02d}" for d in range(1, 10)]
    for key in KEYS:
        assert _status(instance, key) == (days, [])
        records = instance.fetch_materializations(key, limit=100).records
        assert sorted(r.partition_key for r in records) == days
        assert instance.get_latest_materialization_event(key).dagster_event.partition == days[-1]
        (record,) = instance.get_asset_records([key])
        assert record.asset_entry.last_run_id == result.run_id
        assert record.asset_entry.last_materialization_record.partition_key == days[-1]
    assert records[0].asset_materialization.metadata["rows"] == dg.IntMetadataValue(1)
    # Dagster's storage writes each of the 80 materializations on its own; the batched one none of them.
    batched = isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
    assert len(stored_one_by_one) == (0 if batched else DAYS * len(KEYS))


def test_the_days_of_a_failed_range_run_are_marked_failed_whichever_storage(instance: dg.DagsterInstance) -> None:
    assert not _run(instance, fail=True).success
    materialized, failed = _status(instance, KEYS[1])
    assert materialized == [] and len(failed) == DAYS
    assert len(_status(instance, KEYS[0])[0]) == DAYS
