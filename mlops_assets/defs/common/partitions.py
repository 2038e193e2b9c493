"""Daily partitions, one definition per pipeline so its raw and feature assets run together over a range."""

import math
from datetime import date, timedelta

import dagster as dg

from mlops_assets.spec import PipelineSpec


def daily_partitions(spec: PipelineSpec) -> dg.DailyPartitionsDefinition:
    """From the spec's start date through today: today's partition is partial, and re-running it replaces it."""
    return dg.DailyPartitionsDefinition(start_date=spec.start_date.isoformat(), end_offset=1)


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The days a run covers: one partition, or a whole range when a backfill runs as a single run."""
    window = context.partition_time_window
    start, end = window.start.date(), window.end.date()
    return [start + timedelta(days=i) for i in range((end - start).days)]


def lookback_days(delta: timedelta) -> int:
    return math.ceil(delta / timedelta(days=1))


SINGLE_RUN = dg.BackfillPolicy.single_run()
