"""The `mlops` command: argument parsing and printing over the application layer (`mlops_assets.app`).

Heavy modules (Dagster, MLflow, BentoML, scikit-learn) are imported inside the commands that use them, so that
`mlops --help` and `check` answer at once, and `status` and `report` load MLflow's client only
(tests/unit/test_cli_imports.py holds them to it).
"""

from __future__ import annotations

import errno
import os
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from mlops_assets.settings import (
    DAGSTER_POSTGRES_ENV,
    LAKE_URI_ENV,
    MLFLOW_UI_ENV,
    MLFLOW_UI_PORT,
    ONLINE_STORE_ENV,
    TRACKING_URI_ENV,
    SettingError,
    redact,
    redact_secrets,
)
from mlops_assets.spec import SpecError, load_specs

if TYPE_CHECKING:
    from mlops_assets.app.runs import RunSummary
    from mlops_assets.app.workspace import Workspace
    from mlops_assets.core.pages import Page


def _fail(message: str) -> NoReturn:
    """The error in one line, with the passwords of service URLs and the object store's secrets masked."""
    for variable in (TRACKING_URI_ENV, ONLINE_STORE_ENV, DAGSTER_POSTGRES_ENV):
        message = redact(message, os.environ.get(variable, ""))
    click.secho(f"error: {redact_secrets(message)}", fg="red", err=True)
    sys.exit(1)


def _workspace(ctx: click.Context) -> Workspace:
    from mlops_assets.app.workspace import Workspace

    return Workspace(ctx.obj["specs"], ctx.obj["data_dir"], ctx.obj["debug"], ctx.obj["lake_uri"])


def print_summary(summary: RunSummary) -> None:
    for text, colour in summary.lines():
        click.secho(text, fg=colour)


# How `mlops --help` lists the commands: by what a person is doing. A command not listed here shows under "Other".
SECTIONS = {
    "Start": ("demo", "new", "check", "init"),
    "Run the pipeline": ("materialize", "score", "replay", "monitor"),
    "Models": ("status", "features", "promote", "rollback", "ab", "report", "reproduce"),
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
        from mlops_assets.app.workspace import AppError, UnknownPipeline

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except UnknownPipeline as exc:
            raise click.UsageError(str(exc), ctx) from None
        except AppError as exc:  # expected, and said in full: no traceback to offer
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _fail(str(exc))
        except Exception as exc:
            if ctx.params.get("debug") or (ctx.obj and ctx.obj.get("debug")):
                raise
            _fail(f"{_explained(exc)}\n(run again with --debug for the traceback)")


def _explained(exc: Exception) -> str:
    """What went wrong, in the words of the error, with what to do for the ones users meet."""
    from mlops_assets.core.ingest.paths import SourceDataError
    from mlops_assets.core.lake import TableNotFoundError
    from mlops_assets.core.object_store import ObjectStoreError

    if isinstance(exc, SpecError | SourceDataError | TableNotFoundError | SettingError | ObjectStoreError):
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
@click.option(
    "--lake-uri",
    envvar=LAKE_URI_ENV,
    help="s3://bucket/prefix holding the lake (landing files, Delta tables) instead of the data folder "
    f"(env {LAKE_URI_ENV}; credentials from AWS_* variables).",
)
@click.option("--debug", is_flag=True, help="Show the traceback of a failure.")
@click.pass_context
def main(ctx: click.Context, specs: str | None, data_dir: str, lake_uri: str | None, debug: bool) -> None:
    """Declarative MLOps on Dagster assets.

    Example: mlops demo    (generates the fraud example and materializes it end to end)
    """
    ctx.obj = {"specs": specs, "data_dir": data_dir, "lake_uri": lake_uri, "debug": debug}
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
    from mlops_assets.app.workspace import write_instance_settings

    settings = write_instance_settings(storage, force)
    click.echo(f"wrote {settings} ({storage})")
    if storage == "postgres":
        click.echo(f"set {DAGSTER_POSTGRES_ENV}=postgresql+psycopg2://user:password@host:5432/database first")
    click.echo(f"then, e.g.: DAGSTER_HOME={settings.parent} mlops materialize fraud --days 8")


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
    from mlops_assets.app.starter import StarterError, new_pipeline

    specs_dir = Path(ctx.obj["specs"] or "specs")
    try:
        made = new_pipeline(specs_dir, _workspace(ctx).lake, pipeline, events, force)
    except StarterError as exc:
        _fail(str(exc))
    click.echo(f"wrote {made.spec_file}, guessing:")
    for guess in made.guesses:
        click.echo(f"  - {guess}")
    click.echo(f"wrote {len(made.days)} daily files of {sum(made.days.values()):,} events to {made.landing}/")
    if made.timeless:
        click.secho(
            f"  {made.timeless} events have no event time: kept in {made.landing.parent}/events_without_a_time.parquet",
            fg="yellow",
        )
    first, span = min(made.days), (max(made.days) - min(made.days)).days + 1
    click.echo(
        f"next: mlops --specs {specs_dir} check, then mlops --specs {specs_dir} materialize {pipeline} "
        f"--start {first} --days {span}"
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
    workspace = _workspace(ctx)
    for spec in specs:
        views = ", ".join(spec.feature_views) or "none, request features only"
        click.echo(f"{spec.name}: ok ({len(spec.sources)} sources; feature views: {views})")
        if spec.model is not None:
            from mlops_assets.app.reports import daily_volume, window_advice
            from mlops_assets.app.workspace import AppError
            from mlops_assets.core.ingest.paths import SourceDataError

            try:  # advice from the files there are: a spec is valid whether or not they can be read
                advice = window_advice(daily_volume(workspace, spec), spec.monitoring)
            except (AppError, SourceDataError) as exc:
                advice = f"daily volume not checked: {exc}"
            if advice:
                click.secho(f"  note: {advice}", fg="yellow")


@main.command()
@click.argument("pipeline")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), help="First day (default: the spec's start_date).")
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True, help="Number of daily partitions.")
@click.option("--no-training", is_flag=True, help="Only ingest and compute features.")
@click.option(
    "--accept-definition-change",
    is_flag=True,
    help="Rebuild the days of the shared sources and views it reads under their changed definition (for every "
    "pipeline that reads them).",
)
@click.pass_context
def materialize(
    ctx: click.Context, pipeline: str, start: Any, days: int, no_training: bool, accept_definition_change: bool
) -> None:
    """Materialize a pipeline's daily partitions, then its training set.

    Example: mlops materialize fraud --start 2026-01-01 --days 14
    """
    from mlops_assets.app.runs import materialize as run

    def bar(chunks: list[tuple[date, date]]) -> Any:
        return click.progressbar(chunks, label=f"{pipeline}: ingest + features", show_pos=True)

    def each_chunk(chunks: list[tuple[date, date]]) -> Any:
        with bar(chunks) as progress:
            yield from progress

    first = start.date() if start else None
    summary = run(
        _workspace(ctx),
        pipeline,
        first,
        days,
        not no_training,
        click.echo,
        each_chunk,
        accept_definition_change=accept_definition_change,
    )
    print_summary(summary)
    if not summary.ok:
        sys.exit(1)


@main.command()
@click.argument("pipeline")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First day to score.")
@click.option("--days", type=click.IntRange(min=1), default=1, show_default=True, help="Number of days.")
@click.pass_context
def score(ctx: click.Context, pipeline: str, start: Any, days: int) -> None:
    """Batch-score days of the pipeline's `scoring.population`, each day by the version that was champion at its end.

    Example: mlops score loans --start 2018-01-10 --days 3
    """
    from mlops_assets.app.runs import score as run

    summary = run(_workspace(ctx), pipeline, start.date(), days)
    print_summary(summary)
    if not summary.ok:
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
    story = Story(_workspace(ctx), click.echo)
    log = story.run(days, story_days, customers, transactions_per_day, sample, port)
    click.secho("\nWhat happened", bold=True)
    for day, text in log.events:
        click.echo(f"  {day}  {text}")
    aliases = story.workspace.registry.aliases("fraud")
    click.echo(f"\nLive now: {', '.join(f'{a} version {v}' for a, v in sorted(aliases.items()))}.")
    home = os.environ.get("DAGSTER_HOME", ".dagster_home")
    click.echo(f"Every run, check result and drift report is in the Dagster instance at {home}:")
    click.echo(f"  mlops --specs {story.specs} ui   then open http://127.0.0.1:3000 -> Assets -> fraud/drift_report")
    click.echo("  (its `report` link opens the HTML report), fraud/champion (the production history), Automation (the")
    click.echo("  retraining sensor); `mlops mlflow` serves the MLflow pages the assets link to.")
    click.echo(f"  Serve the current bento:  mlops --specs {story.specs} serve fraud")


def _changed(pipeline: str, change: Any, refresh_seconds: float) -> None:
    event = change.event
    click.echo(f"{pipeline}: champion is now version {event.version} (was {event.previous or 'none'}): {event.reason}")
    click.echo(f"{pipeline}: a running service answers with it within {refresh_seconds:g} s")
    if change.bento_failed:
        _fail(f"the champion moved, but rebuilding the bento failed: {'; '.join(change.bento.failures)}")


@main.command()
@click.argument("pipeline")
@click.argument("version", required=False)
@click.option("--reason", help="Why, in words: recorded in the champion history (required with VERSION).")
@click.option(
    "--from-shadow", is_flag=True, help="Promote the challenger only if it beats the champion on labelled live traffic."
)
@click.option("--from-ab", is_flag=True, help="Promote the challenger only if it won the running A/B experiment.")
@click.pass_context
def promote(
    ctx: click.Context, pipeline: str, version: str | None, reason: str | None, from_shadow: bool, from_ab: bool
) -> None:
    """Make a registered version the champion (recorded in the champion history).

    With --from-shadow, the challenger's logged shadow (or canary) scores and the champion's are evaluated on the
    live requests whose labels have arrived, and the promotion gate decides. With --from-ab, the running A/B
    experiment's sequential test decides (a decided experiment ends; one still collecting goes on).

    Examples: mlops promote fraud 3 --reason "reviewed"      mlops promote fraud --from-shadow
    mlops promote fraud --from-ab
    """
    from mlops_assets.app import champion

    workspace = _workspace(ctx)
    spec = workspace.spec(pipeline)
    if from_shadow + from_ab + bool(version) != 1:
        raise click.UsageError("give one of VERSION (with --reason), --from-shadow or --from-ab")
    if from_ab:
        from mlops_assets.app import ab

        decided, change = ab.promote_if_won(workspace, spec, champion.actor("cli"))
        if change is None:
            ended = "" if decided.decision == "keep_collecting" else f"; experiment {decided.experiment} ended"
            _fail(f"the challenger of {spec.name!r} stays challenger ({decided.decision}): {decided.reason}{ended}")
        _changed(spec.name, change, spec.serving.refresh_seconds)
        return
    if version:
        if not reason:
            raise click.UsageError("--reason is required: it is recorded in the champion history")
        change = champion.promote(workspace, spec, version, f"manual promotion: {reason}", champion.actor("cli"))
    else:
        verdict, won = champion.promote_if_won(workspace, spec, champion.actor("cli"))
        if won is None:
            _fail(f"the challenger of {spec.name!r} stays challenger ({verdict.outcome}): {verdict.reasons}")
        change = won
    _changed(spec.name, change, spec.serving.refresh_seconds)


@main.group("ab")
def ab_group() -> None:
    """A/B experiments (serving.rollout: ab): start one between the champion and the challenger, or stop it.

    Its decision is the `PIPELINE/ab_test` asset; `mlops promote PIPELINE --from-ab` acts on it.

    Example: mlops ab start fraud
    """


@ab_group.command("start")
@click.argument("pipeline")
@click.pass_context
def ab_start(ctx: click.Context, pipeline: str) -> None:
    """Start the A/B experiment of the champion against the challenger (refused while one runs).

    Example: mlops ab start fraud
    """
    from mlops_assets.app import ab
    from mlops_assets.app.champion import actor
    from mlops_assets.core.monitoring.ab import design, rows_at_most

    workspace = _workspace(ctx)
    spec = workspace.spec(pipeline)
    experiment = ab.start(workspace, spec, actor("cli"))
    test = spec.serving.ab_test
    assert test is not None, "checked by ab.start"
    plan = design(test.minimum_detectable_effect, test.alpha, test.power, test.looks)
    click.echo(f"{spec.name}: started {experiment.describe()}")
    click.echo(
        f"{spec.name}: {test.metric_name}, a difference of {test.minimum_detectable_effect} at alpha {test.alpha} "
        f"with power {test.power}, {test.looks} looks (boundaries |z| {', '.join(f'{b:.2f}' for b in plan.boundaries)})"
    )
    most = rows_at_most(spec, plan)
    click.echo(
        f"{spec.name}: at most {most:,.0f} labelled rows (a rate's variance is at most 1/4); `mlops promote "
        f"{spec.name} --from-ab` reports the progress"
        if most is not None
        else f"{spec.name}: the planned rows follow from the variance of the first labelled rows; `mlops promote "
        f"{spec.name} --from-ab` reports them and the progress"
    )


@ab_group.command("stop")
@click.argument("pipeline")
@click.option("--reason", required=True, help="Why it stops without a decision: kept with its record.")
@click.pass_context
def ab_stop(ctx: click.Context, pipeline: str, reason: str) -> None:
    """Stop the running A/B experiment without a decision.

    Example: mlops ab stop fraud --reason "wrong challenger"
    """
    from mlops_assets.app import ab
    from mlops_assets.app.champion import actor

    workspace = _workspace(ctx)
    ended = ab.stop(workspace, workspace.spec(pipeline), reason, actor("cli"))
    click.echo(f"{pipeline}: {ended.describe()} stopped ({reason})")


@main.command()
@click.argument("pipeline")
@click.pass_context
def rollback(ctx: click.Context, pipeline: str) -> None:
    """Move the champion back to the version it replaced (recorded as a rollback).

    Example: mlops rollback fraud
    """
    from mlops_assets.app import champion

    workspace = _workspace(ctx)
    spec = workspace.spec(pipeline)
    _changed(spec.name, champion.rollback(workspace, spec, champion.actor("cli")), spec.serving.refresh_seconds)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Per pipeline: champion and challenger versions, since when, and their key metrics.

    Example: mlops status --json
    """
    import json

    from mlops_assets.app.reports import status as live

    report = live(_workspace(ctx))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for name, models in report.items():
        click.echo(f"{name}:")
        if not models:
            click.echo("  no champion yet: materialize its training job (mlops materialize)")
        for alias, info in models.items():
            figures = ", ".join(f"{k} {v:.4f}" for k, v in info["metrics"].items() if v is not None)
            recorded = [f"{tag.replace('_', ' ')} {info[tag]}" for tag in ("trained_by", "approved_by") if tag in info]
            line = f"  {alias:<10} version {info['version']:<4} since {info['since']}  {figures}"
            click.echo(f"{line}  ({', '.join(recorded)})" if recorded else line)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def features(ctx: click.Context, as_json: bool) -> None:
    """Every feature view once per table: the pipelines that read it (a shared view: all of them), rows, days
    written and the last day.

    Example: mlops features --json
    """
    import json
    from dataclasses import asdict

    from mlops_assets.app.reports import feature_views

    facts = feature_views(_workspace(ctx))
    if as_json:
        click.echo(json.dumps([asdict(f) for f in facts], indent=2))
        return
    width = max((len(f.key) for f in facts), default=10) + 2
    for f in facts:
        through = f"through {f.fresh_through}" if f.fresh_through else "not materialized yet"
        click.echo(
            f"{f.key:<{width}}per {f.entity}  {f.rows:>10,} rows  {f.days:>4} days  {through}  "
            f"read by {', '.join(f.users)}"
        )


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

    workspace = _workspace(ctx)
    spec = workspace.spec(pipeline)
    if not spec.serving.allow_replay:
        _fail(
            f"serving.allow_replay is off in {pipeline}'s spec, so the service would file past requests under today: "
            "set it to true (and restart `mlops serve`) to replay"
        )
    try:
        key = os.environ.get(spec.serving.api_key_env)
        check_pipeline(url, spec.name, key)
        summary = send(url, replay_requests(spec, workspace.lake, day.date(), sample), key)
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
    from mlops_assets.app.runs import grade_day

    graded = grade_day(_workspace(ctx), pipeline, day.date())
    print_summary(graded.summary)
    if graded.report:
        click.echo(f"drift report: {graded.report}")
    if not graded.summary.ok:
        sys.exit(1)


@main.command()
@click.argument("pipeline")
@click.option("--open", "open_them", is_flag=True, help="Open them in the browser or viewer.")
@click.pass_context
def report(ctx: click.Context, pipeline: str, open_them: bool) -> None:
    """Print where the latest drift report and the champion's model card are (file URLs a browser opens).

    Example: mlops report fraud --open
    """
    from mlops_assets.app.reports import latest_reports

    found = latest_reports(_workspace(ctx), pipeline)
    if found.drift_report is None:
        click.echo("drift report: none yet (materialize the monitoring job)")
    else:
        click.echo(f"drift report: {_page(found.drift_report)}")
    if found.model_card is None:
        click.echo("model card: none yet (materialize training)")
    else:
        live = ", champion" if found.card_version == found.champion else ""
        click.echo(f"model card: {_page(found.model_card, f'version {found.card_version}{live}')}")
    for page in (found.drift_report, found.model_card):
        if open_them and page is not None and page.url is not None:
            click.launch(page.url)
    if found.drift_report is None and found.model_card is None:
        sys.exit(1)


def _page(page: Page, what: str = "") -> str:
    """A page as `mlops report` shows it: what a browser opens (a file URL, a presigned link and until when), or,
    on object storage without a link, where it is and why there is none."""
    if not page.remote:
        return f"{page.url} ({what})" if what else str(page.url)
    notes = [what] if what else []
    if page.url is not None:
        expires = page.expires.isoformat(timespec="minutes") if page.expires else "?"
        return f"{page.url}\n  ({', '.join([*notes, f'{page.location}, the link works until {expires}'])})"
    return f"{page.location} ({', '.join([*notes, str(page.no_link)])})"


@main.command()
@click.argument("pipeline")
@click.argument("version")
@click.pass_context
def reproduce(ctx: click.Context, pipeline: str, version: str) -> None:
    """Rebuild VERSION's training set from the Delta versions it recorded, retrain it with its recorded spec and seed
    in a scratch registry, and compare the two models on its frozen holdout: identical, or the largest difference and
    what changed since (packages, code, spec). Writes nothing to the project. Exit code 1 when not identical.

    Example: mlops reproduce fraud 3
    """
    from mlops_assets.app.reproduce import reproduce as run

    found = run(_workspace(ctx), pipeline, version)
    training = "identical" if found.training_set_equal else "DIFFERENT from the recorded one"
    click.echo(f"{pipeline} version {version}: training set rebuilt, {found.training_rows:,} rows, {training}")
    if found.identical:
        click.echo(f"retrained model: identical outputs on the {found.holdout_rows:,} holdout rows")
    else:
        click.echo(
            f"retrained model: outputs differ on the {found.holdout_rows:,} holdout rows, largest difference "
            f"{found.largest_difference:g}"
        )
    for what, (then, now) in found.changed.items():
        click.echo(f"  changed since: {what}: {then} -> {now}")
    if not found.identical:
        sys.exit(1)


@main.command()
@click.argument("pipeline")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3001, show_default=True)
@click.option("--from-source", is_flag=True, help="Serve this checkout's code and the registry's models, not a bento.")
@click.option(
    "--bento",
    metavar="URI",
    help="Serve the bento archived at URI (s3://..., as the bento asset exports it with MLOPS_BENTO_URI, or a file), "
    "imported first into this data folder's BentoML home.",
)
@click.pass_context
def serve(ctx: click.Context, pipeline: str, host: str, port: int, from_source: bool, bento: str | None) -> None:
    """Serve the pipeline's latest bento over HTTP: POST /predict and /predict_batch, /docs.json, /livez, /metrics.

    Binds to 127.0.0.1 unless --host says otherwise (--host 0.0.0.0 for every interface). Each serve process keeps
    its metrics in a folder of its own (data/serving/PIPELINE/metrics/), so pipelines served side by side never mix.
    With --bento, a host that shares no disk with the one that built it serves the bento from object storage (it
    follows the registry's aliases when MLFLOW_TRACKING_URI names one, else serves the versions it carries).

    Example: mlops serve fraud --port 3001
    """
    from mlops_assets.app.serve import serve as run

    run(_workspace(ctx), pipeline, host, port, from_source, bento)


@main.command()
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 exposes the UI on every interface.")
@click.pass_context
def ui(ctx: click.Context, port: int, host: str) -> None:
    """Open the Dagster UI (webserver and daemon, `dagster dev`) on the project-local instance, for these specs and
    this data folder: asset graph, checks, runs, the retraining sensor and the schedules.

    Example: mlops --specs specs ui --port 3000     then open http://127.0.0.1:3000
    """
    from mlops_assets.app.serve import dagster_ui

    dagster_ui(_workspace(ctx), host, port)


@main.command("mlflow")
@click.option("--port", default=MLFLOW_UI_PORT, show_default=True, help=f"Another port needs {MLFLOW_UI_ENV} set.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.pass_context
def mlflow_ui(ctx: click.Context, port: int, host: str) -> None:
    """Open MLflow's UI on the embedded store: the mlflow_run and mlflow_model_version links of the Dagster UI
    open here. With a tracking server, it prints the server's address instead.

    Example: mlops mlflow     then open http://127.0.0.1:5000
    """
    from mlops_assets.app.serve import mlflow_ui as run

    if (elsewhere := run(_workspace(ctx), host, port)) is not None:
        click.echo(elsewhere)


if __name__ == "__main__":  # `python -m mlops_assets.cli`, as the tests run it
    main()
