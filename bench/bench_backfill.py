"""Benchmark: a history backfilled as day ranges (`mlops materialize`), through the training set, and its memory.

Data: NannyML's public car loans (the reference file, and the analysis file joined to its labels: 100,000 loans from
2018-01-01 over 606 days), written as one CSV; `mlops new` guesses the spec (entity: the down payment as a segment,
a 1-day activity view, `label.feature_cutoff: previous_day`) and lays the events out as daily Parquet files. The
first `--days` (540: 89,183 loans) are materialized with `mlops_assets.app.runs.materialize`, as `mlops
materialize loans --days 540` does, in a fresh subprocess on a fresh Dagster instance:
1. the daily job over the range (ingest, feature view, their quarantine tables and checks, the online store's sync,
   the prediction log), split into runs by rows (one run here);
2. the training job: the point-in-time training set, then the model (candidate, evaluation, card, champion);
3. the bento.
"Through the training set" runs from the call to the training set step's success (Dagster's event timestamps);
days/s is the days over the daily job's time. Each Dagster instance is measured as given by `--instance`: `default`
is the settings `mlops init` writes for SQLite; `batched` adds `BatchedSqliteEventLogStorage` and
DAGSTER_EVENT_BATCH_SIZE (mlops_assets/defs/common/event_log.py): a range records one materialization per asset and
day, which Dagster's own SQLite storage writes one transaction (two databases) at a time.

Baseline, in the same run: bare polars computing the same training set from the same CSV, as a competent engineer
would write it: read, parse, a rolling window per entity for the view's aggregations, an as-of join of each loan to
its entity's last row before the start of its day, TTL applied. It is checked to equal the library's training set.

Memory: synthetic loans (the public rows resampled, `--memory-per-day` a day) over two range lengths
(`--memory-days`), each materialized (daily job only) in a fresh subprocess with `--memory-rows-per-run` rows a run;
the peak resident memory (VmHWM) of each. Split by size, the longer range runs more runs of the same size: its peak
must stay within 1.25x of the shorter one's. For contrast, the longer range is also run as a single run (unless
`--skip-single-run`: 50M events as one run would need about 30 GiB).

Targets: through the training set <= 30 s on each instance measured; the memory ratio <= 1.25.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import polars.testing

PIPELINE = "loans"
TARGET_SECONDS = 30.0
MEMORY_RATIO = 1.25
# What `batched` adds to the settings `mlops init` writes.
BATCHED_EVENT_LOG = (
    "event_log_storage:\n  module: mlops_assets.defs.common.event_log\n  class: BatchedSqliteEventLogStorage\n"
)


def public_loans() -> pl.DataFrame:
    """The 100,000 public car loans: the reference file, then the analysis file with its labels (repaid, as 1.0/0.0)."""
    from mlops_assets.examples.nannyml import dataset

    reference = dataset("synthetic_car_loan_reference")
    targets = dataset("synthetic_car_loan_analysis_target").with_columns(pl.col("repaid").cast(pl.Float64))
    analysis = dataset("synthetic_car_loan_analysis").join(targets, on="id")
    return pl.concat([reference, analysis.select(reference.columns)])


def new_project(root: Path, events: Path) -> Path:
    """`mlops new loans --from events` in `root`: specs/, data/landing/."""
    from mlops_assets.app.starter import new_pipeline

    new_pipeline(root / "specs", root / "data", PIPELINE, events)
    return root


def fresh_copy(template: Path, target: Path, batched: bool) -> dict[str, str]:
    """The project's specs and landing files (linked: they are only read) with an empty lake and a fresh Dagster
    instance; the environment its runs need."""
    from mlops_assets.settings import dagster_yaml

    shutil.copytree(template / "specs", target / "specs")
    (target / "data").mkdir()
    (target / "data" / "landing").symlink_to(template / "data" / "landing")
    home = target / ".dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(dagster_yaml("sqlite") + (BATCHED_EVENT_LOG if batched else ""))
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("DAGSTER_EVENT_BATCH_SIZE", None)
    if batched:
        from mlops_assets.defs.common.event_log import BATCH_SIZE, BATCH_SIZE_ENV

        env[BATCH_SIZE_ENV] = BATCH_SIZE
    return env


def child(project: Path, days: int, training: bool, rows_per_run: int | None) -> dict[str, object]:
    """Materialize `days` days of the project in this process; phase times (s since the call) and peak memory."""
    import dagster as dg

    from mlops_assets.app.runs import ROWS_PER_RUN, materialize
    from mlops_assets.app.workspace import Workspace
    from mlops_assets.defs import keys

    workspace = Workspace(str(project / "specs"), str(project / "data"))
    spec = workspace.spec(PIPELINE, with_model=False)
    assert workspace.definitions and workspace.instance  # loaded before the peak is reset: not the data's memory
    start_mib = _proc_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident memory, to the current RSS
    heard: dict[str, float] = {}
    started, cpu = time.time(), time.process_time()
    summary = materialize(
        workspace,
        PIPELINE,
        None,
        days,
        training=training,
        progress=lambda message: heard.setdefault(message.split(": ", 1)[1], time.time()),
        rows_per_run=rows_per_run or ROWS_PER_RUN,
    )
    ended = time.time()
    assert summary.ok, summary.failures
    instance = workspace.instance
    out: dict[str, object] = {
        "total": ended - started,
        "cpu": time.process_time() - cpu,
        "daily_runs": len(instance.get_runs(filters=dg.RunsFilter(job_name=keys.daily_job(spec)))),
        "start_mib": start_mib,
        "peak_mib": _proc_mib("VmHWM"),
        "daily": heard.get("building the point-in-time training set", ended) - started,
    }
    if training:
        (run,) = instance.get_runs(filters=dg.RunsFilter(job_name=keys.training_job(spec)))
        steps = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        done = next(e.timestamp for e in steps if e.step_key == f"{PIPELINE}__{keys.TRAINING_SET}")
        bento = heard["building the bento of the live models"]
        out |= {"through_training_set": done - started, "model": bento - done, "bento": ended - bento}
    return out


def _proc_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MiB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def run_child(project: Path, env: dict[str, str], days: int, training: bool, rows_per_run: int | None = None) -> dict:
    command = [sys.executable, __file__, "--child", str(project), "--days", str(days)]
    command += ["--training"] if training else []
    command += ["--child-rows-per-run", str(rows_per_run)] if rows_per_run else []
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({' '.join(command)}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bare_polars(csv: Path, specs: Path, days: int) -> pl.DataFrame:
    """The spec's training set by hand: read the CSV, roll each entity's window, join each loan to its entity's last
    row before its day started, null rows older than the TTL."""
    from mlops_assets.spec import load_specs, parse_duration

    (spec,) = load_specs(specs)
    ((view_name, view),) = spec.feature_views.items()
    (key,) = spec.entity.keys
    ts, label = spec.label.timestamp, spec.label.column
    (window,) = {w for agg in view.aggregations for w in agg.windows}
    functions = {"count": lambda c: pl.len(), "sum": pl.Expr.sum, "mean": pl.Expr.mean, "max": pl.Expr.max}
    aggregations = [
        functions[fn](pl.col(agg.column or "")).alias(name)
        for agg in view.aggregations
        for fn, name in zip(agg.functions, agg.feature_names(), strict=True)
    ]
    names = [e.meta.output_name() for e in aggregations]
    events = pl.read_csv(csv).with_columns(pl.col(ts).str.to_datetime(time_unit="us"))
    start = datetime.combine(spec.start_date, datetime.min.time())
    events = events.filter(pl.col(ts) < start + timedelta(days=days))
    features = (
        events.sort(key, ts)
        .rolling(index_column=ts, period=window, closed="right", group_by=key)
        .agg(aggregations)
        .unique([key, ts], keep="last")
        .rename({ts: "feature_timestamp"})
        .sort("feature_timestamp")
    )
    labels = events.select(key, ts, *spec.request_features, label).with_columns(
        pl.col(ts).dt.truncate("1d").alias("day_start")
    )
    joined = labels.sort("day_start").join_asof(
        features,
        left_on="day_start",
        right_on="feature_timestamp",
        by=key,
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,  # sorted by day_start above; polars cannot check it within groups
    )
    fresh = (pl.col(ts) - pl.col("feature_timestamp")) <= parse_duration(view.ttl)
    assert view_name
    return joined.select(key, ts, *spec.request_features, label, *[pl.when(fresh).then(n).alias(n) for n in names])


def synthetic_loans(public: pl.DataFrame, folder: Path, days: int, per_day: int) -> None:
    """`days` daily Parquet files of `per_day` loans each, resampled from the public rows, at seeded times."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = public.with_columns(pl.col("timestamp").str.to_datetime(time_unit="us")).drop("timestamp", "id")
    for offset in range(days):
        day = date(2018, 1, 1) + timedelta(days=offset)
        rng = np.random.default_rng(offset)
        start = np.datetime64(datetime.combine(day, datetime.min.time()), "us")
        times = start + np.sort(rng.integers(0, 86_400_000_000, per_day)).astype("timedelta64[us]")
        rows = columns.sample(per_day, with_replacement=True, seed=offset)
        ids = pl.int_range(offset * per_day, (offset + 1) * per_day, eager=True).alias("id")
        rows.with_columns(ids, pl.Series("timestamp", times)).select(public.columns).write_parquet(
            folder / f"{day}.parquet"
        )


def verdict(passed: bool, text: str) -> str:
    return f"{'PASS' if passed else 'FAIL'} {text}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=540, help="days of the public history to materialize")
    parser.add_argument("--instance", choices=["both", "default", "batched"], default="both")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for the bare polars baseline")
    parser.add_argument("--memory-per-day", type=int, default=100_000)
    parser.add_argument("--memory-days", default="20,80", help="two range lengths, shorter first")
    parser.add_argument("--memory-rows-per-run", type=int, default=2_000_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--skip-single-run", action="store_true", help="not the longer range as one run (50M events would not fit)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="160 days, the batched instance only, memory at a twentieth of the scale"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--training", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-rows-per-run", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.days, args.training, args.child_rows_per_run)))
        return 0
    if args.quick:  # at least the 150 days a 30-day holdout needs (mlops new's guess)
        args.days, args.instance, args.memory_per_day, args.memory_rows_per_run = 160, "batched", 5_000, 100_000

    verdicts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_backfill_") as tmp:
        root = Path(tmp)
        public = public_loans()
        csv = root / "loans.csv"
        public.write_csv(csv)
        template = new_project(root / "template", csv)
        print(f"{public.height:,} public loans, {args.days} days materialized from {csv.name}; {os.cpu_count()} cores")

        results = {}
        variants = ["default", "batched"] if args.instance == "both" else [args.instance]
        for variant in variants:
            project = root / variant
            results[variant] = run_child(project, fresh_copy(template, project, variant == "batched"), args.days, True)
        library = pl.read_delta(str(root / variants[0] / "data" / "lake" / PIPELINE / "training_set"))

        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            baseline = bare_polars(csv, template / "specs", args.days)
            timings.append(time.perf_counter() - started)
        polars_s = min(timings)
        ordered = [library.columns[0], "timestamp"]
        polars.testing.assert_frame_equal(
            library.sort("timestamp", *ordered[:1]),
            baseline.select(library.columns).sort("timestamp", *ordered[:1]),
            check_dtypes=False,  # the lake stores the count as Int32 (Delta has no unsigned types)
        )
        print(f"bare polars: {polars_s:.2f}s (best of {args.repeat}), {baseline.height:,} rows, equal to the library's")
        print()
        print(
            f"{'instance':<9} {'daily s':>8} {'days/s':>7} {'runs':>5} {'to training set s':>18} {'x polars':>9} "
            f"{'model s':>8} {'bento s':>8} {'total s':>8} {'cpu s':>6} {'peak MiB':>9}"
        )
        for variant, r in results.items():
            ratio = r["through_training_set"] / polars_s
            print(
                f"{variant:<9} {r['daily']:>8.1f} {args.days / r['daily']:>7.1f} {r['daily_runs']:>5} "
                f"{r['through_training_set']:>18.1f} {ratio:>9.0f} {r['model']:>8.1f} {r['bento']:>8.1f} "
                f"{r['total']:>8.1f} {r['cpu']:>6.1f} {r['peak_mib']:>9.0f}"
            )
            verdicts.append(
                verdict(
                    r["through_training_set"] <= TARGET_SECONDS,
                    f"{args.days} days through the training set on the {variant} instance: "
                    f"{r['through_training_set']:.1f}s (target <= {TARGET_SECONDS:.0f}s)",
                )
            )

        if not args.skip_memory:
            short, long = (int(d) for d in args.memory_days.split(","))
            print()
            print(
                f"memory: {args.memory_per_day:,} synthetic loans a day, runs of at most "
                f"{args.memory_rows_per_run:,} rows, daily job only, batched instance"
            )
            synthetic = root / "synthetic"
            shutil.copytree(template / "specs", synthetic / "specs")
            synthetic_loans(public, synthetic / "data" / "landing" / PIPELINE / "events", long, args.memory_per_day)
            cases = [(short, args.memory_rows_per_run), (long, args.memory_rows_per_run)]
            if not args.skip_single_run:
                cases.append((long, long * args.memory_per_day))
            grown = []  # MiB over the process's memory when materialize was called
            header = f"{'days':>5} {'events':>12} {'runs':>5} {'wall s':>7} {'start MiB':>10} {'peak MiB':>9}"
            print(f"{header} {'grown MiB':>10}")
            for days, limit in cases:
                project = root / f"memory_{days}_{limit}"
                r = run_child(project, fresh_copy(synthetic, project, True), days, False, limit)
                grown.append(r["peak_mib"] - r["start_mib"])
                print(
                    f"{days:>5} {days * args.memory_per_day:>12,} {r['daily_runs']:>5} {r['total']:>7.1f} "
                    f"{r['start_mib']:>10.0f} {r['peak_mib']:>9.0f} {grown[-1]:>10.0f}"
                )
            growth = grown[1] / grown[0]
            verdicts.append(
                verdict(
                    growth <= MEMORY_RATIO,
                    f"memory grown by {long} days split by size within {MEMORY_RATIO}x of {short} days': "
                    f"{growth:.2f}x" + (f" (as one run: {grown[2] / grown[0]:.2f}x)" if len(grown) > 2 else ""),
                )
            )
    print()
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
