"""The scores' daily schedule: the day that just ended, once its population and its feature views are in."""

from datetime import timedelta

import dagster as dg

from mlops_assets.defs.keys import feature_key, raw_key, scoring_job
from mlops_assets.spec import PipelineSpec


def build_scoring_schedule(spec: PipelineSpec) -> dg.ScheduleDefinition:
    """At `scoring.schedule` (cron, UTC): score yesterday; a day whose inputs are not materialized yet is skipped,
    naming them, never failed. The run key makes each day run once."""
    assert spec.scoring is not None
    scoring, job = spec.scoring, scoring_job(spec)
    inputs = [raw_key(spec, scoring.population.source), *(feature_key(spec, view) for view in spec.feature_views)]

    @dg.schedule(
        name=f"{job}_schedule",
        job_name=job,
        cron_schedule=scoring.schedule,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"At {scoring.schedule} (cron, UTC): the scores of the day that just ended, once its population "
        "and feature views are materialized (skipped, saying which are missing, until then).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        assert context.scheduled_execution_time is not None
        day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
        missing = [k.to_user_string() for k in inputs if day not in context.instance.get_materialized_partitions(k)]
        if missing:
            return dg.SkipReason(
                f"{day}: {', '.join(missing)} have no partition {day} yet; once they have: the job {job} for {day}"
            )
        return dg.RunRequest(run_key=f"{job}:{day}", partition_key=day)

    return _schedule
