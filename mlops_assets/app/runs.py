"""Running a pipeline's jobs as a person asks for them (materialize days, grade a served day, build the bento), and
what the runs did, summarized for reading."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mlops_assets.app.workspace import AppError, Workspace
from mlops_assets.core.ingest.files import day_rows
from mlops_assets.defs import keys
from mlops_assets.settings import drift_report_page
from mlops_assets.spec import PipelineSpec

# Source rows per run of the daily job: a range of days holding more is split into runs of whole days (each one
# Delta commit per table), so that a run's memory follows this, not the length of the history (bench_backfill.py).
ROWS_PER_RUN = 5_000_000


@dataclass
class RunSummary:
    """What a person wants to read after runs: rows and check verdicts per asset, and what failed."""

    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    checks: dict[str, list[tuple[bool, str, str]]] = field(default_factory=lambda: defaultdict(list))
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)  # the names of the checks that did not pass

    @classmethod
    def of(cls, *results: Any) -> RunSummary:
        summary = cls()
        for result in results:
            summary.add(result)
        return summary

    @property
    def ok(self) -> bool:
        return not self.failures

    def add(self, result: Any) -> None:
        # A run over a range of days records one materialization per day, all with the run's metadata.
        latest = {
            e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()
        }
        for key, metadata in latest.items():
            meta = {k: getattr(v, "value", v) for k, v in metadata.items()}
            if "dagster/row_count" in meta:
                self.rows[key] += int(meta["dagster/row_count"])
            self.metadata[key] = meta
        for evaluation in result.get_asset_check_evaluations():
            severity = evaluation.severity.value if not evaluation.passed else "OK"
            self.checks[evaluation.asset_key.to_user_string()].append(
                (evaluation.passed, severity, evaluation.description or "")
            )
            if not evaluation.passed:
                self.failed_checks.append(evaluation.check_name)
        for failure in result.get_step_failure_events():
            self.failures.append(f"{failure.step_key}: {step_error(failure.step_failure_data.error)}")
        for skipped in result.get_step_skipped_events():
            self.failures.append(f"{skipped.step_key}: skipped (a blocking check upstream failed)")

    def lines(self) -> list[tuple[str, str | None]]:
        """The summary as lines of text, each with the colour it deserves (green, yellow, red or none)."""
        out: list[tuple[str, str | None]] = []
        width = max((len(k) for k in self.metadata), default=10) + 2
        for key, meta in self.metadata.items():
            verdicts = self.checks.get(key, [])
            worst = next((v for v in verdicts if not v[0] and v[1] == "ERROR"), None) or next(
                (v for v in verdicts if not v[0]), None
            )
            check = "" if not verdicts else ("checks passed" if worst is None else f"{worst[1]}: {worst[2]}")
            colour = "green" if worst is None else ("red" if worst[1] == "ERROR" else "yellow")
            out.append((f"  {key:<{width}}{_fact(key, meta, self.rows)}  {check}", colour if check else None))
        for key, meta in self.metadata.items():
            if key.endswith(f"/{keys.TRAINING_SET}"):
                rate = f"label rate {meta['label_rate']:.2%}, " if "label_rate" in meta else ""  # binary only
                out.append(
                    (
                        f"  training set: {rate}predictions {meta['first_prediction']} .. {meta['last_prediction']}, "
                        f"Delta version {meta['delta_version']}",
                        None,
                    )
                )
            if key.endswith("/champion"):
                previous = meta["previous"] or "none"
                out.append((f"  champion: version {meta['version']} ({meta['reason']}; previous: {previous})", None))
        out += [(f"  FAILED {failure}", "red") for failure in self.failures]
        return out


def _fact(key: str, meta: dict[str, Any], rows: dict[str, int]) -> str:
    if key in rows:
        return f"{rows[key]:>10,} rows"
    if "entities_written" in meta:
        return f"{meta['entities_written']:>10,} entities synced"
    if "labelled_predictions" in meta:
        return f"{meta['labelled_predictions']:>10,} labelled predictions"
    if "bento_tag" in meta:
        return f"{meta['bento_tag']} ({'built' if meta['rebuilt'] else 'unchanged'})"
    version = meta.get("model_version") or meta.get("candidate_version") or meta.get("version") or "?"
    return f"version {version!s:>4}"


# Dagster's wrappers around the exception of a step's own code: the cause is what a person needs to read.
_DAGSTER_WRAPPERS = ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError")


def step_error(error: Any, max_lines: int = 3) -> str:
    """A failed step's error as a person reads it: the step code's exception (not Dagster's wrapper around it), its
    first lines, no traceback (`--debug` prints Dagster's log with it)."""
    if error is None:
        return "failed"
    while error.cls_name in _DAGSTER_WRAPPERS and error.cause is not None:
        error = error.cause
    text = error.message.strip()
    qualified, colon, rest = text.partition(": ")
    if colon and qualified.rpartition(".")[2] == error.cls_name:  # "module.Class: message" -> "Class: message"
        text = rest if error.cls_name == "Failure" else f"{error.cls_name}: {rest}"  # a Failure is its message
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n      ".join(lines[:max_lines]) + (" [...]" if len(lines) > max_lines else "")


def chunks(start: date, rows: Sequence[int], limit: int = ROWS_PER_RUN) -> list[tuple[date, date]]:
    """The days from `start` (`rows[i]` rows on the i-th) as (first, last) ranges of whole days, each holding at most
    `limit` rows, or one day that alone holds more."""
    ranges: list[tuple[date, date]] = []
    first, held = 0, 0
    for i, n in enumerate(rows):
        if i > first and held + n > limit:
            ranges.append((start + timedelta(days=first), start + timedelta(days=i - 1)))
            first, held = i, 0
        held += n
    return [*ranges, (start + timedelta(days=first), start + timedelta(days=len(rows) - 1))] if rows else ranges


def materialize(
    workspace: Workspace,
    pipeline: str,
    start: date | None,
    days: int,
    training: bool = True,
    progress: Callable[[str], None] = lambda _: None,
    each_chunk: Callable[[list[tuple[date, date]]], Any] = iter,
    rows_per_run: int = ROWS_PER_RUN,
    accept_definition_change: bool = False,
) -> RunSummary:
    """The daily job over `days` partitions, then the training job and the bento.

    The days run as one range (one run, one Delta commit per table), split into consecutive ranges of at most
    `rows_per_run` rows of source files. `each_chunk` wraps the ranges' iteration (a progress bar); `progress` hears
    what comes next. Shared namespaces the pipeline reads run first, for the days they lack (`run_shared`)."""
    spec = workspace.spec(pipeline, with_model=False)
    start = start or spec.start_date
    if start < spec.start_date:
        raise AppError(f"--start {start} is before the pipeline's start_date {spec.start_date}")
    rows = [day_rows(spec, workspace.lake, start + timedelta(days=i)) for i in range(days)]
    summary = RunSummary()
    for days_range in each_chunk(chunks(start, rows, rows_per_run)):
        if not run_shared(workspace, spec, days_range, summary, accept_definition_change):
            return summary
        result = workspace.run(keys.daily_job(spec), days=days_range)
        summary.add(result)
        if not result.success:
            return summary
    if training:
        progress(f"{pipeline}: building the point-in-time training set")
        result = workspace.run(keys.training_job(spec))
        summary.add(result)
        if result.success and spec.model:
            progress(f"{pipeline}: building the bento of the live models")
            summary.add(build_bento(workspace, spec))
    return summary


def check_verdict(workspace: Workspace, job: str, what: str) -> tuple[dict[str, Any], str]:
    """Run a job whose asset carries one check: that check's metadata (as values) and description. A step that
    failed before its check is an AppError saying why (`what` failed: ...)."""
    result = workspace.run(job)
    checks = result.get_asset_check_evaluations()
    if not checks:  # the step failed before its check: the run says why
        raise AppError(f"{what} failed: {'; '.join(RunSummary.of(result).failures)}")
    return {k: getattr(v, "value", v) for k, v in checks[0].metadata.items()}, checks[0].description or ""


def missing_ranges(first: date, last: date, present: set[str]) -> list[tuple[date, date]]:
    """The days from `first` to `last` not in `present` (ISO days), as consecutive (first, last) ranges."""
    ranges: list[tuple[date, date]] = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        if day.isoformat() in present:
            continue
        if ranges and ranges[-1][1] == day - timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def recorded_definition(workspace: Workspace, key: Any) -> str | None:
    """The definition hash a shared asset's latest materialization recorded (None: none yet)."""
    from mlops_assets.defs.common.shared import DEFINITION_HASH

    event = workspace.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return getattr(event.asset_materialization.metadata.get(DEFINITION_HASH), "value", None)


def run_shared(
    workspace: Workspace, spec: PipelineSpec, days: tuple[date, date], summary: RunSummary, accept: bool = False
) -> bool:
    """Run the daily job of each shared namespace `spec` reads, for the days of `days` one of its partitioned assets
    lacks (all of them when `accept`ing a definition change): a day another pipeline already materialized is not
    ingested or computed again. False when a run failed (its failure is in `summary`)."""
    for namespace in spec.namespaces():
        shared = spec.in_namespace(namespace)
        owned = {keys.raw_key(shared, s): shared.code_version("sources", s) for s in shared.sources_of(namespace)}
        owned |= {
            keys.feature_key(shared, v): shared.code_version("feature_views", v) for v in shared.views_of(namespace)
        }
        present = set.intersection(*(workspace.instance.get_materialized_partitions(k) for k in owned))
        # Written under another definition: the days are run again, so that its guard refuses (or, accepted, applies)
        # the change rather than a pipeline reading tables that no longer follow the spec.
        changed = any(recorded_definition(workspace, key) not in (None, version) for key, version in owned.items())
        tags = {keys.ACCEPT_DEFINITION_TAG: "true"} if accept else None
        for missing in [days] if accept or changed else missing_ranges(*days, present):
            result = workspace.run(keys.daily_job(shared), days=missing, tags=tags)
            summary.add(result)
            if not result.success:
                return False
    return True


def build_bento(workspace: Workspace, spec: PipelineSpec) -> Any:
    """Run the pipeline's bento job (a no-op when the live models, specs and code have not changed)."""
    return workspace.run(keys.bento_job(spec))


@dataclass(frozen=True)
class Graded:
    summary: RunSummary
    report: str | None  # the drift report's link (a file URL, a presigned URL), when one was written


def grade_day(workspace: Workspace, pipeline: str, day: date) -> Graded:
    """A served day ingested (raw data, features, prediction log), then its drift report and performance."""
    spec = workspace.spec(pipeline)
    summary = RunSummary()
    if not run_shared(workspace, spec, (day, day), summary):
        return Graded(summary, None)
    for job in (keys.daily_job(spec), keys.monitoring_job(spec)):
        result = workspace.run(job, partition=day)
        summary.add(result)
        if not result.success:
            break
    key = drift_report_page(spec.name, day.isoformat())
    if not workspace.pages.exists(key):
        return Graded(summary, None)
    report = workspace.pages.page(key)
    return Graded(summary, report.url or f"{report.location} ({report.no_link})")


def score(workspace: Workspace, pipeline: str, start: date, days: int) -> RunSummary:
    """The scores of `days` days from `start`, a run per day (each day has its own champion and its own checks);
    stops at the first day that fails (a day before any champion, a population that cannot be read)."""
    spec = workspace.spec(pipeline)
    if spec.scoring is None:
        raise AppError(f"pipeline {pipeline!r} declares no 'scoring' section: nothing to score")
    if start < spec.start_date:
        raise AppError(f"--start {start} is before the pipeline's start_date {spec.start_date}")
    last, today = start + timedelta(days=days - 1), datetime.now(UTC).date()
    if last > today:
        raise AppError(
            f"--start {start} --days {days} reaches {last}, after today ({today}, UTC): a day is scored from the "
            "day it begins (today's scores are replaced by each re-run)"
        )
    summary = RunSummary()
    for i in range(days):
        result = workspace.run(keys.scoring_job(spec), partition=start + timedelta(days=i))
        summary.add(result)
        if not result.success:
            break
    return summary
