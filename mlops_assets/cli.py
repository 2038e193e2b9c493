"""The `mlops` command: validate specs, materialize pipelines on the embedded defaults, open the UI."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import click

from mlops_assets.settings import (
    DAGSTER_POSTGRES_ENV,
    MLFLOW_UI_ENV,
    MLFLOW_UI_PORT,
    ONLINE_STORE_ENV,
    TRACKING_URI_ENV,
    card_path,
    dagster_postgres_problem,
    dagster_yaml,
    drift_report_path,
    mlflow_settings,
    mlflow_ui_url,
    redact,
)
from mlops_assets.spec import SpecError, load_spec, load_specs

DAGSTER_HOME_DIR = ".dagster_home"
CHUNK_DAYS = 10


@dataclass
class RunSummary:
    """What a person wants to read after a materialization: rows and check verdicts per asset."""

    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    checks: dict[str, list[tuple[bool, str, str]]] = field(default_factory=lambda: defaultdict(list))
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

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
        for failure in result.get_step_failure_events():
            self.failures.append(f"{failure.step_key}: {step_error(failure.step_failure_data.error)}")
        for skipped in result.get_step_skipped_events():
            self.failures.append(f"{skipped.step_key}: skipped (a blocking check upstream failed)")


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


def _instance() -> Any:
    """The project-local Dagster instance that `mlops ui` (and `dagster dev` with DAGSTER_HOME) opens."""
    import dagster as dg

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(DAGSTER_HOME_DIR).resolve())))
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        # Embedded default: SQLite storage in this folder; no telemetry (the machine may have no network).
        settings.write_text(dagster_yaml("sqlite"))
    problem = dagster_postgres_problem(settings.read_text(), os.environ.get(DAGSTER_POSTGRES_ENV))
    if problem:
        _fail(f"{settings}: {problem}")
    return dg.DagsterInstance.get()


def _quiet_run_config() -> dict[str, Any]:
    """Dagster's console log of a run: silent, since the CLI summarizes the run itself (failed steps included);
    with --debug, its warnings and errors, tracebacks included."""
    context = click.get_current_context(silent=True)
    debug = bool(context and context.find_root().obj and context.find_root().obj.get("debug"))
    return {"loggers": {"console": {"config": {"log_level": "WARNING" if debug else "CRITICAL"}}}}


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


def materialize_pipeline(
    pipeline: str, start: date | None, days: int, specs_dir: str | None, data_dir: str, training: bool = True
) -> RunSummary:
    """Run the daily job over `days` partitions (in chunks, with progress) and then the training job."""
    from mlops_assets.definitions import build_definitions
    from mlops_assets.defs.keys import daily_job, training_job

    specs = {s.name: s for s in load_specs(specs_dir)}
    if pipeline not in specs:
        raise click.UsageError(f"unknown pipeline {pipeline!r}; the specs declare {sorted(specs)}")
    spec = specs[pipeline]
    start = start or spec.start_date
    if start < spec.start_date:
        raise click.UsageError(f"--start {start} is before the pipeline's start_date {spec.start_date}")
    defs = build_definitions(specs_dir, data_dir)
    instance = _instance()
    summary = RunSummary()
    chunks = [(start + timedelta(days=i), min(CHUNK_DAYS, days - i)) for i in range(0, days, CHUNK_DAYS)]
    daily = defs.resolve_job_def(daily_job(spec))
    with click.progressbar(chunks, label=f"{pipeline}: ingest + features", show_pos=True) as bar:
        for first, length in bar:
            last = first + timedelta(days=length - 1)
            result = daily.execute_in_process(
                instance=instance,
                run_config=_quiet_run_config(),
                tags={
                    "dagster/asset_partition_range_start": first.isoformat(),
                    "dagster/asset_partition_range_end": last.isoformat(),
                },
                raise_on_error=False,
            )
            summary.add(result)
            if not result.success:
                return summary
    if training:
        click.echo(f"{pipeline}: building the point-in-time training set")
        result = defs.resolve_job_def(training_job(spec)).execute_in_process(
            instance=instance, run_config=_quiet_run_config(), raise_on_error=False
        )
        summary.add(result)
        if result.success and spec.model:
            click.echo(f"{pipeline}: building the bento of the live models")
            summary.add(build_bento_run(specs_dir, data_dir, spec))
    return summary


def build_bento_run(specs_dir: str | None, data_dir: str, spec: Any) -> Any:
    """Run the pipeline's bento job (a no-op when the live models, specs and code have not changed)."""
    from mlops_assets.definitions import build_definitions
    from mlops_assets.defs.keys import bento_job

    defs = build_definitions(specs_dir, data_dir)
    return defs.resolve_job_def(bento_job(spec)).execute_in_process(
        instance=_instance(), run_config=_quiet_run_config(), raise_on_error=False
    )


def _version(meta: dict[str, Any]) -> str:
    return str(meta.get("model_version") or meta.get("candidate_version") or meta.get("version") or "?")


def print_summary(summary: RunSummary) -> None:
    width = max((len(k) for k in summary.metadata), default=10) + 2
    for key, meta in summary.metadata.items():
        verdicts = summary.checks.get(key, [])
        worst = next((v for v in verdicts if not v[0] and v[1] == "ERROR"), None) or next(
            (v for v in verdicts if not v[0]), None
        )
        check = "" if not verdicts else ("checks passed" if worst is None else f"{worst[1]}: {worst[2]}")
        colour = "green" if worst is None else ("red" if worst[1] == "ERROR" else "yellow")
        if key in summary.rows:
            fact = f"{summary.rows[key]:>10,} rows"
        elif "entities_written" in meta:
            fact = f"{meta['entities_written']:>10,} entities synced"
        elif "labelled_predictions" in meta:
            fact = f"{meta['labelled_predictions']:>10,} labelled predictions"
        elif "bento_tag" in meta:
            fact = f"{meta['bento_tag']} ({'built' if meta['rebuilt'] else 'unchanged'})"
        else:
            fact = f"version {_version(meta):>4}"
        click.echo(f"  {key:<{width}}{fact}  " + click.style(check, fg=colour))
    for key, meta in summary.metadata.items():
        if key.endswith("/training_set"):
            click.echo(
                "  training set: "
                + (f"label rate {meta['label_rate']:.2%}, " if "label_rate" in meta else "")  # binary only
                + f"predictions "
                f"{meta['first_prediction']} .. {meta['last_prediction']}, Delta version {meta['delta_version']}"
            )
        if key.endswith("/champion"):
            click.echo(
                f"  champion: version {meta['version']} ({meta['reason']}; previous: {meta['previous'] or 'none'})"
            )
    for failure in summary.failures:
        click.secho(f"  FAILED {failure}", fg="red")


# How `mlops --help` lists the commands: by what a person is doing. A command not listed here shows under "Other".
SECTIONS = {
    "Start": ("demo", "new", "check", "init"),
    "Run the pipeline": ("materialize", "replay", "monitor"),
    "Models": ("status", "promote", "rollback", "report"),
    "Serve and look": ("serve", "ui", "mlflow"),
}


class _Commands(click.Group):
    """The `mlops` group: an expected failure (a bad spec or file, a service out of reach) is a message and exit 1;
    its traceback, and that of anything unexpected, only with --debug. `--help` lists the commands by SECTIONS."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        ordered = [name for names in SECTIONS.values() for name in names if name in self.commands]
        return ordered + sorted(set(self.commands) - set(ordered))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed: set[str] = set()
        for section, names in [*SECTIONS.items(), ("Other", tuple(sorted(self.commands)))]:
            rows = [(n, self.commands[n].get_short_help_str(100)) for n in names if n in self.commands]
            rows = [(n, text) for n, text in rows if n not in listed]
            listed.update(n for n, _ in rows)
            if rows:
                with formatter.section(section):
                    formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:
            if ctx.params.get("debug") or (ctx.obj and ctx.obj.get("debug")):
                raise
            message = _explained(exc)
            for variable in (TRACKING_URI_ENV, ONLINE_STORE_ENV, DAGSTER_POSTGRES_ENV):
                message = redact(message, os.environ.get(variable, ""))
            _fail(f"{message}\n(run again with --debug for the traceback)")


def _explained(exc: Exception) -> str:
    """What went wrong, in the words of the error, with what to do for the ones users meet."""
    from mlops_assets.core.ingest.files import SourceDataError
    from mlops_assets.core.lake import TableNotFoundError

    if isinstance(exc, SpecError | SourceDataError | TableNotFoundError):
        return str(exc)
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        return f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"{exc.strerror or exc}: the port is taken; choose another with --port"
    if type(exc).__module__.startswith("bentoml"):
        return f"BentoML could not start the service: {exc}"
    if isinstance(exc, ConnectionError | OSError) or type(exc).__name__ in ("OperationalError", "MlflowException"):
        return (
            f"{type(exc).__name__}: {exc}\na service did not answer: check MLFLOW_TRACKING_URI, "
            "MLOPS_ONLINE_STORE_URL and MLOPS_DAGSTER_POSTGRES_URL (unset, the embedded defaults are used)"
        )
    return f"unexpected {type(exc).__name__}: {exc}"


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--specs",
    envvar="MLOPS_SPECS_DIR",
    type=click.Path(file_okay=False),
    help="Folder of pipeline specs (env MLOPS_SPECS_DIR; default: the built-in examples).",
)
@click.option(
    "--data-dir", envvar="MLOPS_DATA_DIR", default="data", show_default=True, help="Data folder (env MLOPS_DATA_DIR)."
)
@click.option("--debug", is_flag=True, help="Show the traceback of a failure.")
@click.pass_context
def main(ctx: click.Context, specs: str | None, data_dir: str, debug: bool) -> None:
    """Declarative MLOps on Dagster assets.

    Example: mlops demo    (generates the fraud example and materializes it end to end)
    """
    ctx.obj = {"specs": specs, "data_dir": data_dir, "debug": debug}
    # The CLI prints its own progress; MLflow's download bars would interleave with it.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@main.command()
@click.option(
    "--storage",
    type=click.Choice(["sqlite", "postgres"]),
    default="sqlite",
    show_default=True,
    help=f"Where Dagster keeps runs, events and schedules (postgres: the URL is read from {DAGSTER_POSTGRES_ENV}).",
)
@click.option("--force", is_flag=True, help="Replace an existing dagster.yaml.")
def init(storage: str, force: bool) -> None:
    """Write the Dagster instance settings ($DAGSTER_HOME/dagster.yaml, default ./.dagster_home).

    MLflow and the online store need no file: set MLFLOW_TRACKING_URI and MLOPS_ONLINE_STORE_URL.

    Example: mlops init --storage postgres; then set MLOPS_DAGSTER_POSTGRES_URL=postgresql+psycopg2://u:pw@db/dagster
    """
    home = Path(os.environ.get("DAGSTER_HOME", DAGSTER_HOME_DIR)).resolve()
    settings = home / "dagster.yaml"
    if settings.exists() and not force:
        _fail(f"{settings} exists; --force replaces it")
    home.mkdir(parents=True, exist_ok=True)
    settings.write_text(dagster_yaml(storage))
    click.echo(f"wrote {settings} ({storage})")
    if storage == "postgres":
        click.echo(f"set {DAGSTER_POSTGRES_ENV}=postgresql+psycopg2://user:password@host:5432/database first")
    click.echo(f"then, e.g.: DAGSTER_HOME={home} mlops materialize fraud --days 8")


@main.command()
@click.argument("pipeline")
@click.option(
    "--from",
    "events",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A Parquet or CSV file of events, one row per event, with its label.",
)
@click.option("--force", is_flag=True, help="Replace an existing spec of that name.")
@click.pass_context
def new(ctx: click.Context, pipeline: str, events: Path, force: bool) -> None:
    """Write a starter spec for PIPELINE guessed from an event file, and lay its events out as daily files.

    Entity key, event time, label, column types, value constraints and a feature view are guessed; each guess is
    listed, with its evidence, at the top of the spec for you to check.

    Example: mlops --specs specs new shop --from orders.parquet
    """
    from mlops_assets.app.starter import StarterError, guess_spec, read_events, render, write_days

    specs_dir = Path(ctx.obj["specs"] or "specs")
    target = specs_dir / f"{pipeline}.yaml"
    if target.exists() and not force:
        _fail(f"{target} exists; --force replaces it")
    try:
        frame = read_events(events)
        starter = guess_spec(pipeline, frame, events)
    except StarterError as exc:
        _fail(str(exc))
    landing = Path(ctx.obj["data_dir"]) / "landing" / pipeline / "events"
    days, timeless = write_days(frame, starter.event_timestamp, landing)
    specs_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(render(starter, events))
    load_spec(target)  # what it wrote must be a valid spec
    click.echo(f"wrote {target}, guessing:")
    for guess in starter.guesses:
        click.echo(f"  - {guess}")
    click.echo(f"wrote {len(days)} daily files of {sum(days.values()):,} events to {landing}/")
    if timeless:
        click.secho(
            f"  {timeless} events have no event time: kept in {landing.parent}/events_without_a_time.parquet",
            fg="yellow",
        )
    span = (max(days) - min(days)).days + 1
    click.echo(
        f"next: mlops --specs {specs_dir} check, then mlops --specs {specs_dir} materialize {pipeline} "
        f"--start {min(days)} --days {span}"
    )


@main.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate every spec of the specs folder and print precise errors.

    Example: mlops --specs my_specs/ check
    """
    try:
        specs = load_specs(ctx.obj["specs"])
    except SpecError as exc:
        _fail(str(exc))
    for spec in specs:
        views = ", ".join(spec.feature_views)
        click.echo(f"{spec.name}: ok ({len(spec.sources)} sources; feature views: {views})")


@main.command()
@click.argument("pipeline")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), help="First day (default: the spec's start_date).")
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True, help="Number of daily partitions.")
@click.option("--no-training", is_flag=True, help="Only ingest and compute features.")
@click.pass_context
def materialize(ctx: click.Context, pipeline: str, start: Any, days: int, no_training: bool) -> None:
    """Materialize a pipeline's daily partitions, then its training set.

    Example: mlops materialize fraud --start 2026-01-01 --days 14
    """
    first = start.date() if start else None
    try:
        summary = materialize_pipeline(pipeline, first, days, ctx.obj["specs"], ctx.obj["data_dir"], not no_training)
    except SpecError as exc:
        _fail(str(exc))
    print_summary(summary)
    if summary.failures:
        sys.exit(1)


@main.command()
@click.option("--days", type=click.IntRange(min=8), default=30, show_default=True, help="Days before the first model.")
@click.option("--story-days", type=click.IntRange(min=1), default=18, show_default=True, help="Days served after it.")
@click.option("--customers", type=click.IntRange(min=10), default=5000, show_default=True)
@click.option("--transactions-per-day", type=click.IntRange(min=100), default=10000, show_default=True)
@click.option("--sample", type=click.IntRange(min=10), default=1500, show_default=True, help="Requests replayed a day.")
@click.option("--port", type=int, default=0, help="Port of the live bento (default: a free one).")
@click.pass_context
def demo(
    ctx: click.Context, days: int, story_days: int, customers: int, transactions_per_day: int, sample: int, port: int
) -> None:
    """The whole lifecycle on the built-in example, narrated: data, a first model served from its bento, live traffic
    day after day, drift, retraining, shadow, promotion only if it wins, a rollback, and a summary.

    Example: mlops demo     (a few minutes; --customers 300 --transactions-per-day 1500 for a quick one)
    """
    import socket

    from mlops_assets.demo.story import Story

    if not port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    story = Story(Path(ctx.obj["data_dir"]).resolve(), _instance(), click.echo)
    log = story.run(days, story_days, customers, transactions_per_day, sample, port)
    click.secho("\nWhat happened", bold=True)
    for day, text in log.events:
        click.echo(f"  {day}  {text}")
    aliases = story.registry.aliases("fraud")
    click.echo(f"\nLive now: {', '.join(f'{a} version {v}' for a, v in sorted(aliases.items()))}.")
    home = os.environ.get("DAGSTER_HOME", DAGSTER_HOME_DIR)
    click.echo(f"Every run, check result and drift report is in the Dagster instance at {home}:")
    click.echo(f"  mlops --specs {story.specs} ui   then open http://127.0.0.1:3000 -> Assets -> fraud/drift_report")
    click.echo("  (its `report` link opens the HTML report), fraud/champion (the production history), Automation (the")
    click.echo("  retraining sensor); `mlops mlflow` serves the MLflow pages the assets link to.")
    click.echo(f"  Serve the current bento:  mlops --specs {story.specs} serve fraud")


def _model_spec(ctx: click.Context, pipeline: str) -> Any:
    try:
        specs = {s.name: s for s in load_specs(ctx.obj["specs"])}
    except SpecError as exc:
        _fail(str(exc))
    if pipeline not in specs:
        raise click.UsageError(f"unknown pipeline {pipeline!r}; the specs declare {sorted(specs)}")
    if specs[pipeline].model is None:
        raise click.UsageError(f"pipeline {pipeline!r} declares no model")
    return specs[pipeline]


def _registry(ctx: click.Context) -> Any:
    from mlops_assets.defs.common.resources import mlflow_resource

    return mlflow_resource(ctx.obj["data_dir"]).registry()


def _record_champion(ctx: click.Context, spec: Any, change: str, **kwargs: Any) -> None:
    """Change the champion through the registry and record it as a champion materialization, as the asset does."""
    from mlops_assets.core.models.registry import RegistryError
    from mlops_assets.defs.models.assets import record_champion_change

    registry = _registry(ctx)
    user = os.environ.get("USER", "unknown")
    try:
        if change == "promote":
            event = registry.promote(
                spec.name, kwargs["version"], f"manual promotion: {kwargs['reason']}", f"cli ({user})"
            )
        else:
            event = registry.rollback(spec.name, f"cli ({user})")
    except RegistryError as exc:
        _fail(str(exc))
    record_champion_change(_instance(), registry, spec, Path(ctx.obj["data_dir"]).resolve(), event)
    click.echo(f"{spec.name}: champion is now version {event.version} (was {event.previous or 'none'}): {event.reason}")
    click.echo(f"{spec.name}: a running service answers with it within {spec.serving.refresh_seconds:g} s")
    result = build_bento_run(ctx.obj["specs"], ctx.obj["data_dir"], spec)
    if not result.success:
        summary = RunSummary()
        summary.add(result)
        _fail(f"the champion moved, but rebuilding the bento failed: {'; '.join(summary.failures) or 'see --debug'}")


@main.command()
@click.argument("pipeline")
@click.argument("version", required=False)
@click.option("--reason", help="Why, in words: recorded in the champion history (required with VERSION).")
@click.option(
    "--from-shadow", is_flag=True, help="Promote the challenger only if it beats the champion on labelled live traffic."
)
@click.pass_context
def promote(ctx: click.Context, pipeline: str, version: str | None, reason: str | None, from_shadow: bool) -> None:
    """Make a registered version the champion (recorded in the champion history).

    With --from-shadow, the challenger's logged shadow (or canary) scores and the champion's are evaluated on the
    live requests whose labels have arrived, and the promotion gate decides.

    Examples: mlops promote fraud 3 --reason "reviewed"      mlops promote fraud --from-shadow
    """
    spec = _model_spec(ctx, pipeline)
    if from_shadow == bool(version):
        raise click.UsageError("give either VERSION (with --reason) or --from-shadow")
    if version:
        if not reason:
            raise click.UsageError("--reason is required: it is recorded in the champion history")
        _record_champion(ctx, spec, "promote", version=version, reason=reason)
        return
    gate = _shadow_gate(ctx, spec)
    _record_champion(ctx, spec, "promote", version=gate["version"], reason=f"shadow comparison: {gate['reasons']}")


def _shadow_gate(ctx: click.Context, spec: Any) -> dict[str, str]:
    """Run the shadow evaluation asset; the challenger's version and the gate's reasons if it passed, else exit 1."""
    from mlops_assets.definitions import build_definitions
    from mlops_assets.defs.keys import shadow_job

    defs = build_definitions(ctx.obj["specs"], ctx.obj["data_dir"])
    result = defs.resolve_job_def(shadow_job(spec)).execute_in_process(
        instance=_instance(), run_config=_quiet_run_config(), raise_on_error=False
    )
    checks = result.get_asset_check_evaluations()
    if checks and not checks[0].passed:  # a failed blocking check also fails the run: its evidence says why
        _fail(f"the challenger of {spec.name!r} stays challenger: {checks[0].description}")
    summary = RunSummary()
    summary.add(result)
    if summary.failures or not checks:
        _fail(f"the shadow evaluation of {spec.name!r} failed: {'; '.join(summary.failures)}")
    meta = {k: getattr(v, "value", v) for k, v in checks[0].metadata.items()}
    return {"version": str(meta["challenger_version"]), "reasons": checks[0].description or ""}


@main.command()
@click.argument("pipeline")
@click.pass_context
def rollback(ctx: click.Context, pipeline: str) -> None:
    """Move the champion back to the version it replaced (recorded as a rollback).

    Example: mlops rollback fraud
    """
    _record_champion(ctx, _model_spec(ctx, pipeline), "rollback")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Per pipeline: champion and challenger versions, since when, and their key metrics.

    Example: mlops status --json
    """
    import json

    try:
        specs = [s for s in load_specs(ctx.obj["specs"]) if s.model is not None]
    except SpecError as exc:
        _fail(str(exc))
    registry = _registry(ctx)
    report = {spec.name: registry.status(spec.name, spec.model.metrics) for spec in specs}  # type: ignore[union-attr]
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for name, models in report.items():
        click.echo(f"{name}:")
        if not models:
            click.echo("  no champion yet: materialize its training job (mlops materialize)")
        for alias, info in models.items():
            figures = ", ".join(f"{k} {v:.4f}" for k, v in info["metrics"].items() if v is not None)
            click.echo(f"  {alias:<10} version {info['version']:<4} since {info['since']}  {figures}")


@main.command()
@click.argument("pipeline")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), required=True, help="The day of events to send.")
@click.option("--sample", type=click.IntRange(min=1), help="Send a seeded sample of this many (default: all).")
@click.option("--url", default="http://127.0.0.1:3001", show_default=True, help="Where `mlops serve` listens.")
@click.pass_context
def replay(ctx: click.Context, pipeline: str, day: Any, sample: int | None, url: str) -> None:
    """Send a day of past events to the served pipeline as live requests, each at its own time.

    Needs `serving.allow_replay: true` in the spec, and the service at --url must serve PIPELINE. Then `mlops monitor`
    grades the day.

    Example: mlops replay flights --day 2013-03-02 --sample 500
    """
    from mlops_assets.core.serving.replay import ReplayError, check_pipeline, replay_requests, send

    spec = _model_spec(ctx, pipeline)
    if not spec.serving.allow_replay:
        _fail(
            f"serving.allow_replay is off in {pipeline}'s spec, so the service would file past requests under today: "
            "set it to true (and restart `mlops serve`) to replay"
        )
    try:
        key = os.environ.get(spec.serving.api_key_env)
        check_pipeline(url, spec.name, key)
        requests = replay_requests(spec, Path(ctx.obj["data_dir"]), day.date(), sample)
        summary = send(url, requests, key)
    except ReplayError as exc:
        _fail(str(exc))
    versions = ", ".join(f"{n:,} by version {v}" for v, n in sorted(summary.versions.items()))
    click.echo(f"{day.date()}: {summary.sent:,} requests answered ({versions}); {summary.degraded:,} degraded")


@main.command()
@click.argument("pipeline")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), required=True, help="The served day to grade.")
@click.pass_context
def monitor(ctx: click.Context, pipeline: str, day: Any) -> None:
    """Grade a served day: ingest it (raw data, features, prediction log), then its drift report and performance.

    Example: mlops monitor flights --day 2013-03-02
    """
    from mlops_assets.definitions import build_definitions
    from mlops_assets.defs.keys import daily_job, monitoring_job

    spec = _model_spec(ctx, pipeline)
    defs = build_definitions(ctx.obj["specs"], ctx.obj["data_dir"])
    instance, summary = _instance(), RunSummary()
    for job in (daily_job(spec), monitoring_job(spec)):
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance,
            partition_key=day.date().isoformat(),
            run_config=_quiet_run_config(),
            raise_on_error=False,
        )
        summary.add(result)
        if not result.success:
            break
    print_summary(summary)
    report = drift_report_path(Path(ctx.obj["data_dir"]).resolve(), spec.name, day.date().isoformat())
    if report.exists():
        click.echo(f"drift report: {report.as_uri()}")
    if summary.failures:
        sys.exit(1)


@main.command()
@click.argument("pipeline")
@click.option("--open", "open_them", is_flag=True, help="Open them in the browser or viewer.")
@click.pass_context
def report(ctx: click.Context, pipeline: str, open_them: bool) -> None:
    """Print where the latest drift report and the champion's model card are (file URLs a browser opens).

    Example: mlops report fraud --open
    """
    spec = _model_spec(ctx, pipeline)
    data = Path(ctx.obj["data_dir"]).resolve()
    drift = sorted(drift_report_path(data, spec.name, "*").parent.glob("*.html"))
    cards = sorted(card_path(data, spec.name, "*").parent.glob("v*.md"), key=lambda p: int(p.stem[1:]))
    champion = _registry(ctx).aliases(spec.name).get("champion")
    card = next((c for c in cards if c.stem == f"v{champion}"), cards[-1] if cards else None)
    if card is not None and card.with_suffix(".html").exists():
        card = card.with_suffix(".html")  # the page a browser shows; the markdown is beside it
    found = {"drift report": drift[-1] if drift else None, "model card": card}
    for what, path in found.items():
        if path is None:
            click.echo(f"{what}: none yet (materialize {'the monitoring job' if 'drift' in what else 'training'})")
        else:
            version = f" (version {path.stem[1:]}{', champion' if path.stem == f'v{champion}' else ''})"
            click.echo(f"{what}: {path.as_uri()}{version if what == 'model card' else ''}")
            if open_them:
                click.launch(str(path))
    if not any(found.values()):
        sys.exit(1)


def port_problem(host: str, port: int) -> str | None:
    """Why nothing could listen on host:port (taken, or an address not of this machine), or None when it is free.
    Checked before a server starts, so that a second server fails with a sentence and leaves the first alone."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: a closing port is free
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is in use (another server listens there): stop it, or choose another --port"
                )
            return f"cannot listen on {host}:{port} ({exc.strerror or exc}): check --host and --port"
    return None


def _require_port(host: str, port: int) -> None:
    problem = port_problem(host, port)
    if problem:
        _fail(problem)


def metrics_folder(data_dir: Path, pipeline: str, port: int) -> Path:
    """This `mlops serve` process's own Prometheus multiprocess folder, created empty:
    <data>/serving/<pipeline>/metrics/<host>-<port>-<pid>. Folders left by serve processes of this machine that are
    gone (killed) are removed; those of running ones are never touched, so no other server changes their /metrics."""
    root = data_dir / "serving" / pipeline / "metrics"
    machine = socket.gethostname()
    for folder in root.glob(f"{machine}-*-*"):
        pid = folder.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    mine = root / f"{machine}-{port}-{os.getpid()}"
    shutil.rmtree(mine, ignore_errors=True)  # a pid reused from a killed server
    mine.mkdir(parents=True)
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _serve_bentoml(target: str, host: str, port: int, env: dict[str, str], metrics: Path) -> None:
    """`bentoml serve TARGET` in this process (it becomes BentoML's arbiter; the workers inherit `env`), with the
    Prometheus folder of this process. BentoML 1.4 would use BENTOML_HOME/prometheus_multiproc_dir and empty it at
    every start, so a second server of the same home, even one that fails, would wipe a running one's metrics."""
    os.environ.update(env)  # before BentoML reads its configuration
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml_cli.cli import cli as bentoml_cli

    BentoMLContainer.bentoml_home.set(env["BENTOML_HOME"])
    BentoMLContainer.prometheus_multiproc_dir.set(str(metrics))
    args = ["serve", target, "--host", host, "--port", str(port)]
    try:
        bentoml_cli.main(args, prog_name="bentoml", standalone_mode=False)
    except click.ClickException as exc:  # BentoML's own start-up failure (its CLI wraps it), say in its words
        context = click.get_current_context(silent=True)
        if exc.__cause__ is not None and context is not None and context.find_root().obj.get("debug"):
            raise exc.__cause__ from None
        _fail(f"BentoML could not start {target}: {exc.__cause__ or click.unstyle(exc.format_message())}")


@main.command()
@click.argument("pipeline")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3001, show_default=True)
@click.option("--from-source", is_flag=True, help="Serve this checkout's code and the registry's models, not a bento.")
@click.pass_context
def serve(ctx: click.Context, pipeline: str, host: str, port: int, from_source: bool) -> None:
    """Serve the pipeline's latest bento over HTTP: POST /predict and /predict_batch, /docs.json, /livez, /metrics.

    Binds to 127.0.0.1 unless --host says otherwise (--host 0.0.0.0 for every interface). Each serve process keeps
    its metrics in a folder of its own (data/serving/PIPELINE/metrics/), so pipelines served side by side never mix.

    Example: mlops serve fraud --port 3001
    """
    from mlops_assets.core.serving.bundle import SERVICE, bento_name

    _model_spec(ctx, pipeline)
    data_dir = Path(ctx.obj["data_dir"]).resolve()
    env = {"MLOPS_DATA_DIR": str(data_dir), "BENTOML_HOME": os.environ.get("BENTOML_HOME", str(data_dir / "bentoml"))}
    target = f"{bento_name(pipeline)}:latest"
    if from_source:
        target, env["MLOPS_PIPELINE"] = SERVICE, pipeline
        if ctx.obj["specs"]:
            env["MLOPS_SPECS_DIR"] = str(Path(ctx.obj["specs"]).resolve())
    elif not (Path(env["BENTOML_HOME"]) / "bentos" / bento_name(pipeline) / "latest").exists():
        _fail(f"no bento of {pipeline!r} in {env['BENTOML_HOME']}: `mlops materialize {pipeline}` builds one")
    _require_port(host, port)
    metrics = metrics_folder(data_dir, pipeline, port)
    try:
        _serve_bentoml(target, host, port, env, metrics)
    finally:
        shutil.rmtree(metrics, ignore_errors=True)


@main.command()
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 exposes the UI on every interface.")
@click.pass_context
def ui(ctx: click.Context, port: int, host: str) -> None:
    """Open the Dagster UI (webserver and daemon, `dagster dev`) on the project-local instance, for these specs and
    this data folder: asset graph, checks, runs, the retraining sensor and the schedules.

    Example: mlops --specs specs ui --port 3000     then open http://127.0.0.1:3000
    """
    _instance()
    _require_port(host, port)
    env = {**os.environ, "MLOPS_DATA_DIR": str(Path(ctx.obj["data_dir"]).resolve())}
    if ctx.obj["specs"]:
        env["MLOPS_SPECS_DIR"] = str(Path(ctx.obj["specs"]).resolve())
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-m", "mlops_assets.code_location", "-h", host, "-p", str(port)]
    os.execve(str(dagster), command, env)


@main.command("mlflow")
@click.option("--port", default=MLFLOW_UI_PORT, show_default=True, help=f"Another port needs {MLFLOW_UI_ENV} set.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.pass_context
def mlflow_ui(ctx: click.Context, port: int, host: str) -> None:
    """Open MLflow's UI on the embedded store: the mlflow_run and mlflow_model_version links of the Dagster UI
    open here. With a tracking server, it prints the server's address instead.

    Example: mlops mlflow     then open http://127.0.0.1:5000
    """
    uri, artifact_root = mlflow_settings(ctx.obj["data_dir"])
    if not artifact_root:  # a tracking server keeps its own artifacts: it is the UI
        click.echo(f"MLflow runs as a server ({TRACKING_URI_ENV}): open {mlflow_ui_url(uri)}")
        return
    _require_port(host, port)
    mlflow = Path(sys.executable).with_name("mlflow")
    os.execv(str(mlflow), [str(mlflow), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)])


if __name__ == "__main__":  # `python -m mlops_assets.cli`, as the tests run it
    main()
