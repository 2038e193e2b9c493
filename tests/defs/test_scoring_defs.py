"""The scores asset in the graph: its lineage (the champion, the population's source, each feature view back to its
TTL), its checks, job and backfill policy, and a schedule that waits for the day's inputs."""

from __future__ import annotations

import contextvars
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.definitions import build_definitions
from mlops_assets.spec import BUILTIN_SPECS_DIR

SCORING = """
scoring:
  population: {source: transactions, carry: [transaction_id]}
  schedule: "0 3 * * *"
"""


@pytest.fixture
def scoring_defs(tmp_path: Path) -> dg.Definitions:
    """The built-in fraud example with a scoring section: each card transaction of a day scored."""
    specs = tmp_path / "specs"
    shutil.copytree(BUILTIN_SPECS_DIR, specs, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    fraud = specs / "fraud.yaml"
    fraud.write_text(fraud.read_text() + SCORING)
    return build_definitions(specs, str(tmp_path / "data"))


def test_scores_depend_on_the_champion_the_population_and_each_view_back_to_its_ttl(
    scoring_defs: dg.Definitions,
) -> None:
    graph = scoring_defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey(["fraud", "scores"]))
    deps = {dep.asset_key.to_user_string(): dep for dep in node.assets_def.specs_by_key[node.key].deps}
    assert set(deps) == {
        "fraud/champion",
        "fraud/raw_transactions",
        "fraud/customer_spend",
        "fraud/customer_velocity",
        "fraud/customer_channel_mix",
    }
    assert deps["fraud/customer_spend"].partition_mapping.start_offset == -30  # its TTL: 30d
    assert deps["fraud/raw_transactions"].partition_mapping.start_offset == 0  # rows: the day's own events
    assert deps["fraud/champion"].partition_mapping is None
    assert node.group_name == "fraud_scoring"
    assert sorted(c.name for c in node.check_keys) == ["score_drift", "score_nulls", "scored_rows"]
    assert node.backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
    job = scoring_defs.resolve_job_def("fraud_scoring")
    assert job.asset_layer.selected_asset_keys == {node.key}
    assert scoring_defs.resolve_schedule_def("fraud_scoring_schedule").cron_schedule == "0 3 * * *"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A persistent test instance entered in a context of its own (see tests/defs/test_schedules.py for why)."""
    own, manager = contextvars.copy_context(), dg.instance_for_test()
    yield own.run(manager.__enter__)
    own.run(manager.__exit__, None, None, None)


def test_the_schedule_scores_yesterday_once_its_population_and_features_are_in(
    scoring_defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    schedule = scoring_defs.resolve_schedule_def("fraud_scoring_schedule")

    def tick() -> dg.RunRequest | dg.SkipReason:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 2, 10, 3, tzinfo=UTC)
        )
        with context:
            result = contextvars.copy_context().run(schedule, context)
        assert isinstance(result, dg.RunRequest | dg.SkipReason)
        return result

    graph = scoring_defs.resolve_asset_graph()
    inputs = [k for k in graph.get(dg.AssetKey(["fraud", "scores"])).parent_keys if k.path[-1] != "champion"]
    skipped = tick()
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message is not None
    assert skipped.skip_message.startswith("2026-02-09: ") and "fraud/raw_transactions" in skipped.skip_message
    for key in inputs[:-1]:
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition="2026-02-09"))
    skipped = tick()
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message is not None
    assert inputs[-1].to_user_string() in skipped.skip_message
    instance.report_runless_asset_event(dg.AssetMaterialization(inputs[-1], partition="2026-02-09"))
    request = tick()
    assert isinstance(request, dg.RunRequest)
    assert (request.partition_key, request.run_key) == ("2026-02-09", "fraud_scoring:2026-02-09")
