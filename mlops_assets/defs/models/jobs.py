"""Housekeeping of the registry: archive versions that were never promoted, on a daily schedule."""

import dagster as dg

from mlops_assets.defs.common.resources import MlflowResource
from mlops_assets.defs.keys import retention_job
from mlops_assets.spec import PipelineSpec, parse_duration


def build_retention(spec: PipelineSpec) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    assert spec.promotion is not None
    older_than = parse_duration(spec.promotion.retention)

    @dg.op(
        name=f"{spec.name}__archive_stale_versions",
        description=f"Tags as archived, and removes the aliases of, versions of `{spec.name}` never promoted and "
        f"older than {spec.promotion.retention}; never the champion, the previous champion or the challenger.",
    )
    def archive_stale_versions(context: dg.OpExecutionContext, mlflow_store: MlflowResource) -> None:
        archived = mlflow_store.registry().archive_stale(spec.name, older_than)
        context.log.info(f"archived versions {archived or 'none'} of {spec.name}")

    @dg.job(name=retention_job(spec), description=archive_stale_versions.description)
    def retention() -> None:
        archive_stale_versions()

    schedule = dg.ScheduleDefinition(
        name=f"{spec.name}_retention_daily",
        job=retention,
        cron_schedule="0 3 * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily registry housekeeping at 03:00.",
    )
    return retention, schedule
