"""The daily schedules never fail a day that has no data yet: they skip it, saying which files they waited for."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.definitions import build_definitions
from mlops_assets.defs.common.resources import LakeResource
from mlops_assets.defs.common.schedules import daily_schedule
from mlops_assets.spec import PipelineSpec, load_specs


def _tick(
    schedule: dg.ScheduleDefinition, data: Path, at: str, instance: dg.DagsterInstance
) -> dg.RunRequest | dg.SkipReason:
    """What the schedule decides at `at` (UTC), as the daemon would evaluate it."""
    context = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=datetime.fromisoformat(at).replace(tzinfo=UTC),
        resources={"lake": LakeResource(data_dir=str(data))},
    )
    with context:
        result = contextvars.copy_context().run(schedule, context)  # the instance it opens: see `instance`
    assert isinstance(result, dg.RunRequest | dg.SkipReason), result
    return result


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A persistent test instance (a schedule's context needs one), entered in a context of its own: dagster 1.13.27
    leaves an entered instance as the process's defs-state storage after it is closed, and a later test loading
    Definitions would find it disposed."""
    own, manager = contextvars.copy_context(), dg.instance_for_test()
    yield own.run(manager.__enter__)
    own.run(manager.__exit__, None, None, None)


@pytest.fixture
def shop_spec(shop: tuple[Path, Path]) -> PipelineSpec:
    (spec,) = load_specs(shop[0])
    return spec


def test_a_day_with_its_files_runs_once_by_its_run_key(
    shop: tuple[Path, Path], shop_spec: PipelineSpec, instance: dg.DagsterInstance
) -> None:
    schedule = build_definitions(shop[0], str(shop[1])).resolve_schedule_def("shop_daily_schedule")
    request = _tick(schedule, shop[1], "2026-03-03T00:30:00", instance)
    assert isinstance(request, dg.RunRequest)
    assert (request.partition_key, request.run_key) == ("2026-03-02", "shop_daily:2026-03-02")


def test_a_day_without_its_files_is_skipped_naming_each_missing_file(
    shop: tuple[Path, Path], shop_spec: PipelineSpec, instance: dg.DagsterInstance
) -> None:
    _, data = shop
    schedule = daily_schedule("shop_daily", "30 0 * * *", shop_spec)
    skipped = _tick(schedule, data, "2026-03-04T00:30:00", instance)
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message is not None
    assert skipped.skip_message.startswith("2026-03-03: no files yet for ")
    assert f"sources.orders ({data / 'landing/orders/2026-03-03.csv'})" in skipped.skip_message
    assert f"sources.returns ({data / 'landing/returns/2026-03-03.csv'})" in skipped.skip_message
    assert "mlops materialize shop --start 2026-03-03 --days 1" in skipped.skip_message

    (data / "landing/orders/2026-03-03.csv").write_text("user_id,amount,channel,ts\n")  # one source arrived
    skipped = _tick(schedule, data, "2026-03-04T00:30:00", instance)
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message is not None
    assert "sources.returns" in skipped.skip_message and "sources.orders" not in skipped.skip_message

    (data / "landing/returns/2026-03-03.csv").write_text("user_id,ordered_at,amount,returned,returned_at\n")
    assert isinstance(_tick(schedule, data, "2026-03-04T00:30:00", instance), dg.RunRequest)


def test_the_monitoring_schedule_waits_for_the_day_to_be_ingested(
    shop: tuple[Path, Path], shop_spec: PipelineSpec, instance: dg.DagsterInstance
) -> None:
    _, data = shop
    log = dg.AssetKey(["shop", "prediction_log"])
    schedule = daily_schedule("shop_monitoring", "30 1 * * *", shop_spec, ingested=log)
    skipped = _tick(schedule, data, "2026-03-03T01:30:00", instance)
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message is not None
    assert "shop/prediction_log has no partition 2026-03-02 yet" in skipped.skip_message
    assert "mlops monitor shop --day 2026-03-02" in skipped.skip_message
    instance.report_runless_asset_event(dg.AssetMaterialization(log, partition="2026-03-02"))
    request = _tick(schedule, data, "2026-03-03T01:30:00", instance)
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2026-03-02"


def test_a_generator_source_writes_its_own_day_so_it_is_never_waited_for(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions(data_dir=str(tmp_path))
    request = _tick(defs.resolve_schedule_def("fraud_daily_schedule"), tmp_path, "2026-02-10T00:30:00", instance)
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2026-02-09"
    skipped = _tick(defs.resolve_schedule_def("fraud_monitoring_schedule"), tmp_path, "2026-02-10T01:30:00", instance)
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message is not None
    assert "fraud/prediction_log has no partition 2026-02-09 yet" in skipped.skip_message
    assert list(tmp_path.iterdir()) == []  # deciding wrote nothing
