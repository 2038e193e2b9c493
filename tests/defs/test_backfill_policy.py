"""A backfill of days launched from the UI runs each range in one run: what Dagster needs of the daily assets."""

from pathlib import Path

import dagster as dg

from mlops_assets.definitions import build_definitions
from tests.helpers import SMALL_SPEC


def test_every_daily_partitioned_asset_backfills_a_range_in_one_run(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(SMALL_SPEC)
    for defs in (build_definitions(), build_definitions(tmp_path, str(tmp_path / "data"))):
        graph = defs.resolve_asset_graph()
        daily = [job for job in defs.jobs or [] if job.name.endswith("_daily")]
        assert daily
        for job in daily:
            nodes = [graph.get(key) for key in job.selection.resolve(graph)]
            partitioned = [node for node in nodes if node.partitions_def is not None]
            assert partitioned, job.name
            # One run for a whole range, and one partitioning: the backfill daemon groups such assets into one run.
            assert {node.backfill_policy for node in partitioned} == {dg.BackfillPolicy.single_run()}, job.name
            assert len({node.partitions_def for node in partitioned}) == 1, job.name
