"""Backfills as ranges of days: one run of a range writes the tables day-by-day runs write, and a backfill launched
from the UI runs each layer of the graph as one run of its range."""

import logging
import time
from pathlib import Path

import dagster as dg
import pytest

# No public API runs an asset backfill: these are the steps of Dagster's backfill daemon (dagster is pinned exactly).
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration

from mlops_assets.app.runs import materialize
from mlops_assets.app.workspace import Workspace
from mlops_assets.definitions import build_definitions
from tests.helpers import lake_tables, small_fraud_specs

pytestmark = pytest.mark.integration

DAYS = 5
RANGE_START, RANGE_END = "2026-03-01", "2026-03-02"


def _materialized(root: Path, specs: Path, monkeypatch: pytest.MonkeyPatch, rows_per_run: int) -> tuple[dict, int]:
    """The lake after `materialize` of the first days, runs of at most `rows_per_run` rows; and its daily runs."""
    monkeypatch.setenv("DAGSTER_HOME", str(root / "home"))
    workspace = Workspace(str(specs), str(root / "data"))
    summary = materialize(workspace, "fraud", None, DAYS, training=False, rows_per_run=rows_per_run)
    assert summary.ok, summary.failures
    runs = workspace.instance.get_runs(filters=dg.RunsFilter(job_name="fraud_daily"))
    return lake_tables(root / "data"), len(runs)


def test_a_range_in_one_run_writes_the_tables_of_a_run_per_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = small_fraud_specs(tmp_path / "specs")
    together, runs = _materialized(tmp_path / "range", specs, monkeypatch, rows_per_run=10_000_000)
    day_by_day, days = _materialized(tmp_path / "days", specs, monkeypatch, rows_per_run=1)
    assert (runs, days) == (1, DAYS)
    assert together == day_by_day
    assert {"lake/fraud/raw_transactions", "lake/fraud/customer_spend_quarantine"} <= set(together)


def test_a_backfill_from_the_ui_runs_each_layer_as_one_run_of_its_range(shop: tuple[Path, Path]) -> None:
    """The backfill daemon's own iterations (what 'Launch backfill' in the UI starts), each run it launches executed
    in this process, until the backfill is done."""
    specs, data = shop
    location = specs.parent / "backfill_location.py"
    built = f"build_definitions({str(specs)!r}, {str(data)!r})"
    location.write_text(f"from mlops_assets.definitions import build_definitions\ndefs = {built}\n")
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=str(location), attribute="defs"))
    daily = build_definitions(specs, str(data)).resolve_job_def("shop_daily")
    synchronous = {
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
        "run_launcher": {
            "module": "dagster._core.launcher.sync_in_memory_run_launcher",
            "class": "SyncInMemoryRunLauncher",
        },
    }
    with (
        dg.instance_for_test(overrides=synchronous) as instance,
        create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as context,
    ):
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="days",
            asset_graph=context.create_request_context().asset_graph,
            partition_names=[RANGE_START, RANGE_END],
            asset_selection=sorted(daily.asset_layer.selected_asset_keys),
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)
        for _ in range(10):
            list(execute_backfill_iteration(context, logging.getLogger(__name__)))
            if instance.get_backfill("days").status != BulkActionStatus.REQUESTED:
                break
        assert instance.get_backfill("days").status == BulkActionStatus.COMPLETED_SUCCESS
        runs = instance.get_runs()

    assert all(run.is_success for run in runs)
    # No run of a single day: each run of partitioned assets is a range; the online store's sync runs after them.
    assert all("dagster/partition" not in r.tags for r in runs)
    ranges = {
        frozenset(k.to_user_string() for k in r.asset_selection or ()): (
            r.tags.get("dagster/asset_partition_range_start"),
            r.tags.get("dagster/asset_partition_range_end"),
        )
        for r in runs
    }
    assert ranges == {
        # The day's sources and the prediction log: the days asked for, in one run.
        frozenset(
            {"shop/raw_orders", "shop/raw_orders_quarantine", "shop/raw_returns", "shop/raw_returns_quarantine"}
            | {"shop/prediction_log"}
        ): (RANGE_START, RANGE_END),
        # The feature view once its source is in: also the day after, whose 1-day windows read the last day.
        frozenset({"shop/user_orders", "shop/user_orders_quarantine"}): (RANGE_START, "2026-03-03"),
        frozenset({"shop/online/user_orders"}): (None, None),
    }
