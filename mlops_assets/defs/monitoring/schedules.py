"""Daily schedules: yesterday's partition, once the day is complete."""

from datetime import timedelta

import dagster as dg


def daily_schedule(job_name: str, cron: str) -> dg.ScheduleDefinition:
    """Run `job_name` for the previous day's partition at `cron` (UTC); the run key makes each day run once."""

    @dg.schedule(
        name=f"{job_name}_schedule",
        job_name=job_name,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every day at {cron} (cron, UTC): `{job_name}` for the day that just ended.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        assert context.scheduled_execution_time is not None
        day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
        return dg.RunRequest(run_key=f"{job_name}:{day}", partition_key=day)

    return _schedule
