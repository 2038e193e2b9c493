"""Daily schedules: yesterday's partition, once the day is complete and its data is there."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg

from mlops_assets.core.ingest.files import source_files
from mlops_assets.core.ingest.paths import day_pattern
from mlops_assets.core.lake import Location
from mlops_assets.defs.common.resources import LakeResource
from mlops_assets.spec import PipelineSpec


def missing_source_files(spec: PipelineSpec, data_dir: Location, day: date) -> list[str]:
    """The sources that read one file set per day (a '{date}' in their path) and have no file for `day` yet, each
    with the pattern it looked for. A generator source writes its own day, so it is never missing."""
    return [
        f"sources.{name} ({day_pattern(source, data_dir, day)})"
        for name, source in spec.sources.items()
        if name in spec.sources_of(spec.name)  # what its daily job ingests (a shared source: its namespace's job)
        and source.generator is None
        and "{date}" in source.path
        and not source_files(source, data_dir, day)
    ]


def daily_schedule(
    job_name: str, cron: str, spec: PipelineSpec, ingested: dg.AssetKey | None = None
) -> dg.ScheduleDefinition:
    """Run `job_name` for the previous day's partition at `cron` (UTC); the run key makes each day run once.

    A day whose source files are not there yet is skipped, never failed, with the files it waited for in the skip
    reason; so is a day whose `ingested` asset (what the job reads from the daily job) has no partition yet.
    """

    @dg.schedule(
        name=f"{job_name}_schedule",
        job_name=job_name,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every day at {cron} (cron, UTC): `{job_name}` for the day that just ended, once its source "
        "files are there (skipped, saying which are missing, until then).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext, lake: LakeResource) -> dg.RunRequest | dg.SkipReason:
        assert context.scheduled_execution_time is not None
        day = (context.scheduled_execution_time - timedelta(days=1)).date()
        missing = missing_source_files(spec, lake.root, day)
        # What a person runs for the day once its data is there (`mlops monitor` ingests the day, then grades it).
        then = (
            f"mlops monitor {spec.name} --day {day}"
            if ingested is not None
            else f"mlops materialize {spec.name} --start {day} --days 1 --no-training"
        )
        if missing:
            return dg.SkipReason(f"{day}: no files yet for {'; '.join(missing)}; once they are there: {then}")
        if ingested is not None and day.isoformat() not in context.instance.get_materialized_partitions(ingested):
            return dg.SkipReason(
                f"{day}: {ingested.to_user_string()} has no partition {day} yet (the daily job has not ingested the "
                f"day); once it has: {then}"
            )
        return dg.RunRequest(run_key=f"{job_name}:{day}", partition_key=day.isoformat())

    return _schedule
