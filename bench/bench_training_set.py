"""Benchmark: point-in-time training set build (`mlops_assets.core.training.training_set.point_in_time_join`).

Scales: 2M label events x 3M rows per feature view, and 10M x 10M; each with one and with three feature views of
10 features, 100k entities over 60 days (seeded numpy, in memory). Labels and views are shuffled: whatever sorting
a variant needs is inside the time measured. Half of the labels are predictions at the instant of one of the entity's
feature rows, so the cutoffs `at` (inclusive) and `before` (strict) differ; both are timed.

Variants, on the same in-memory frames:
- library: `point_in_time_join` on LazyFrames over them: join, TTL nulling, missing/stale/null counts, duplicate
  check, rows ordered by (prediction time, keys).
- DuckDB (the target): the same work in one query, as a competent user writes it: the polars frames registered
  with DuckDB (Arrow, no copy), one `ASOF LEFT JOIN` per view (`>=` for `at`, `>` for `before`), each feature nulled
  when its row is older than the TTL, `ORDER BY` (prediction time, keys), fetched as a polars frame; the missing and
  stale counts from each view's matched feature time, fetched with the rows. Its memory_limit is 6 GB (see
  `run_duckdb`).
- polars (for information): the bare join a user writes by hand, `labels.sort(time).join_asof(view.sort(time),
  by=keys, strategy="backward", allow_exact_matches=inclusive)` per view, without TTL nulling, counts or final order.

Before anything is timed, the library's rows and counts are checked against both baselines (polars' with the TTL
nulling applied). Times are the best of `--repeat` runs, variants interleaved. Peak memory: each variant runs once
per scale and view count in a fresh subprocess (`--child`), which reports its peak RSS as bench_features.py does
(VmHWM: the whole process, input included, and the peak while joining alone).

Target: library <= 1.0x DuckDB at every scale, view count and cutoff.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta

import duckdb
import numpy as np
import polars as pl
from bench_features import _proc_kib, _reset_peak, gib, timed
from polars.testing import assert_frame_equal

from mlops_assets.core.features.views import FEATURE_TIMESTAMP
from mlops_assets.core.training.training_set import ViewInput, point_in_time_join

KEY = "customer_id"
PREDICTION_TS = "transaction_ts"
LABEL_TS = "confirmed_at"
TTL = timedelta(days=7)  # short enough that some joined rows are stale, so the nulling does real work
SCALES = ((2_000_000, 3_000_000), (10_000_000, 10_000_000))
QUICK = (200_000, 300_000)
MAX_RATIO = 1.0  # library time / DuckDB time
DUCKDB_MEMORY = "6GB"

Views = dict[str, pl.DataFrame]
# A variant's rows and its (missing, stale) counts per view; polars' bare join has no counts.
Result = tuple[pl.DataFrame, dict[str, int] | None, dict[str, int] | None]


def generate(
    labels: int, feature_rows: int, views: int, entities: int, days: int, seed: int
) -> tuple[pl.DataFrame, Views]:
    """Shuffled labels and `views` shuffled views of `feature_rows` rows each (view_0's features v0_f00...)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64)
    span_us = days * 86_400 * 10**6
    ids = pl.Series(KEY, [f"c{i:07d}" for i in range(entities)])
    # Unevenly active entities (lognormal rates), as customers are.
    weights = np.cumsum(rng.lognormal(0.0, 1.0, entities))
    draw_entities = lambda n: np.searchsorted(weights, rng.random(n) * weights[-1])  # noqa: E731
    frames, first_entities, first_times = {}, np.empty(0), np.empty(0)
    for v in range(views):
        entity, ts = draw_entities(feature_rows), start + rng.integers(0, span_us, feature_rows)
        if not v:
            first_entities, first_times = entity, ts
        features = {
            f"v{v}_f{i:02d}": np.where(rng.random(feature_rows) < 0.01, np.nan, rng.standard_normal(feature_rows))
            for i in range(10)
        }
        frame = pl.DataFrame(
            {KEY: ids.gather(entity), FEATURE_TIMESTAMP: pl.Series(ts).cast(pl.Datetime("us")), **features}
        )
        frames[f"view_{v}"] = frame.fill_nan(None).sample(fraction=1.0, shuffle=True, seed=seed + 1 + v)
    at_event = rng.choice(feature_rows, labels // 2, replace=labels // 2 > feature_rows)
    l_entity = np.concatenate([first_entities[at_event], draw_entities(labels - labels // 2)])
    l_ts = np.concatenate([first_times[at_event], start + rng.integers(0, span_us, labels - labels // 2)])
    label_frame = pl.DataFrame(
        {
            "label_id": np.arange(labels, dtype=np.int64),
            KEY: ids.gather(l_entity),
            PREDICTION_TS: pl.Series(l_ts).cast(pl.Datetime("us")),
            LABEL_TS: pl.Series(l_ts + rng.integers(3_600, 30 * 86_400, labels) * 10**6).cast(pl.Datetime("us")),
            "amount": rng.lognormal(3.5, 1.2, labels),
            "is_fraud": (rng.random(labels) < 0.01).astype(np.int8),
        }
    )
    return label_frame.sample(fraction=1.0, shuffle=True, seed=seed), frames


# --- The variants ----------------------------------------------------------------------------------------


def run_library(labels: pl.DataFrame, views: Views, inclusive: bool) -> Result:
    out, stats = point_in_time_join(
        labels.lazy(),
        {name: ViewInput(frame.lazy(), TTL) for name, frame in views.items()},
        keys=[KEY],
        prediction_timestamp=PREDICTION_TS,
        label_timestamp=LABEL_TS,
        inclusive=inclusive,
    )
    return out, stats.missing, stats.stale


def duckdb_query(views: Views, inclusive: bool) -> str:
    """One query for every view: ASOF LEFT JOINs, features nulled past the TTL, each view's matched time kept."""
    cutoff = ">=" if inclusive else ">"
    ttl_us = TTL // timedelta(microseconds=1)
    columns, joins = [], []
    for name, frame in views.items():
        fresh = f"{name}.{FEATURE_TIMESTAMP} >= l.{PREDICTION_TS} - to_microseconds({ttl_us})"
        columns += [f"CASE WHEN {fresh} THEN {name}.{f} END AS {f}" for f in frame.columns[2:]]
        columns.append(f"{name}.{FEATURE_TIMESTAMP} AS __ts_{name}")
        joins.append(
            f"ASOF LEFT JOIN {name} ON l.{KEY} = {name}.{KEY} AND l.{PREDICTION_TS} {cutoff} {name}.{FEATURE_TIMESTAMP}"
        )
    return f"SELECT l.*, {', '.join(columns)} FROM labels AS l {' '.join(joins)} ORDER BY l.{PREDICTION_TS}, l.{KEY}"


def run_duckdb(labels: pl.DataFrame, views: Views, inclusive: bool) -> Result:
    with duckdb.connect() as con:
        # Its default (80% of RAM) let the 10M x 10M join of three views reach 21 GB on a 23 GB machine shared with
        # other work; with this limit it peaked at 13 GB and ran no slower.
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        con.register("labels", labels)
        for name, frame in views.items():
            con.register(name, frame)
        out = con.sql(duckdb_query(views, inclusive)).pl()
    return out.drop(f"__ts_{name}" for name in views), *counts(out, views)


def counts(joined: pl.DataFrame, views: Views) -> tuple[dict[str, int], dict[str, int]]:
    """(missing, stale) per view, from each view's matched feature time `__ts_<view>`."""
    row = joined.select(
        *[pl.col(f"__ts_{name}").null_count().alias(f"missing {name}") for name in views],
        *[(pl.col(PREDICTION_TS) - pl.col(f"__ts_{name}") > TTL).sum().alias(f"stale {name}") for name in views],
    ).row(0, named=True)
    return {name: row[f"missing {name}"] for name in views}, {name: row[f"stale {name}"] for name in views}


def run_polars(labels: pl.DataFrame, views: Views, inclusive: bool) -> Result:
    joined = labels.sort(PREDICTION_TS)
    for name, frame in views.items():
        joined = joined.join_asof(
            frame.rename({FEATURE_TIMESTAMP: f"__ts_{name}"}).sort(f"__ts_{name}"),
            left_on=PREDICTION_TS,
            right_on=f"__ts_{name}",
            by=KEY,
            strategy="backward",
            allow_exact_matches=inclusive,
            check_sortedness=False,
        )
    return joined, None, None


VARIANTS: dict[str, Callable[[pl.DataFrame, Views, bool], Result]] = {
    "library": run_library,
    "DuckDB": run_duckdb,
    "polars": run_polars,
}


def check(library: Result, name: str, other: Result, views: Views) -> None:
    """The library's rows and counts equal a baseline's (polars' once its stale features are nulled)."""
    rows, missing, stale = other
    if missing is None or stale is None:
        missing, stale = counts(rows, views)
        rows = rows.with_columns(
            pl.when(pl.col(PREDICTION_TS) - pl.col(f"__ts_{view}") <= TTL).then(pl.col(frame.columns[2:]))
            for view, frame in views.items()
        ).drop(f"__ts_{view}" for view in views)
    try:
        assert_frame_equal(library[0].sort("label_id"), rows.sort("label_id"))
        assert (library[1], library[2]) == (missing, stale), f"counts {library[1:]} != {(missing, stale)}"
    except AssertionError as exc:
        raise AssertionError(f"library != {name}: {exc}") from None


# --- Measurement -----------------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    """Run one variant once in this fresh process (cutoff at); print its time and peak memory as one JSON line."""
    labels, views = generate(args.labels, args.feature_rows, args.child_views, args.entities, args.days, args.seed)
    input_rss, generation_peak = _proc_kib("VmRSS") * 1024, _proc_kib("VmHWM") * 1024
    reset = _reset_peak()
    t0 = time.perf_counter()
    out = VARIANTS[args.child](labels, views, True)[0]
    seconds = time.perf_counter() - t0
    compute_peak = _proc_kib("VmHWM") * 1024 if reset else None
    peak = max(generation_peak, compute_peak or 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    report = {"seconds": seconds, "input_rss": input_rss, "compute_peak_rss": compute_peak, "process_peak_rss": peak}
    print(json.dumps(report | {"rows": out.height}))


def measure_memory(args: argparse.Namespace, labels: int, feature_rows: int, views: int) -> dict[str, dict]:
    scale = ["--labels", str(labels), "--feature-rows", str(feature_rows), "--entities", str(args.entities)]
    reports = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--child", variant, "--child-views", str(views), *scale]
        proc = subprocess.run(
            [*command, "--days", str(args.days), "--seed", str(args.seed)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory run of {variant} ({views} views) failed:\n{proc.stderr}")
        reports[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    return reports


def scale_name(labels: int, feature_rows: int) -> str:
    return f"{labels / 1e6:g}M x {feature_rows / 1e6:g}M"


def time_variants(
    labels: pl.DataFrame, views: Views, inclusive: bool, repeat: int
) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU seconds) of each run of each variant, interleaved; the first runs' results checked to agree."""
    runs: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    for rep in range(repeat):
        library: Result | None = None
        for variant, run in VARIANTS.items():
            wall, cpu, result = timed(lambda run=run: run(labels, views, inclusive))
            runs[variant].append((wall, cpu))
            if rep == 0 and library is None:
                library = result
            elif rep == 0 and library is not None:
                check(library, variant, result, views)
            del result  # at most two results in memory at once
    return runs


Row = tuple[str, int, str, str, list[tuple[float, float]], dict[str, float]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, help="one scale: this many labels (with --feature-rows)")
    parser.add_argument("--feature-rows", type=int, help="one scale: this many rows per view")
    parser.add_argument("--quick", action="store_true", help=f"one scale of {scale_name(*QUICK)}, 10k entities")
    parser.add_argument("--views", default="1,3", help="view counts to run, comma-separated")
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per variant; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-memory", action="store_true", help="no subprocess peak-memory runs")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--child-views", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.quick:
        (args.labels, args.feature_rows), args.entities = QUICK, 10_000
    scales = [(args.labels, args.feature_rows)] if args.labels and args.feature_rows else list(SCALES)
    view_counts = [int(v) for v in args.views.split(",")]

    started = time.perf_counter()
    print(
        f"polars {pl.__version__} ({pl.thread_pool_size()} threads), DuckDB {duckdb.__version__}; "
        f"{args.entities:,} entities, {args.days} days, shuffled input; best of {args.repeat}, variants interleaved"
    )
    rows: list[Row] = []
    for labels_n, feature_n in scales:
        name = scale_name(labels_n, feature_n)
        # Before this process holds the scale's frames: the subprocesses have the memory to themselves.
        memory = {n: {} if args.skip_memory else measure_memory(args, labels_n, feature_n, n) for n in view_counts}
        t0 = time.perf_counter()
        labels, views = generate(labels_n, feature_n, max(view_counts), args.entities, args.days, args.seed)
        print(f"{name}: generated in {time.perf_counter() - t0:.0f}s")
        for n_views in view_counts:
            for inclusive in (True, False):
                cutoff = "at" if inclusive else "before"
                runs = time_variants(labels, dict(list(views.items())[:n_views]), inclusive, args.repeat)
                print(f"  {n_views} view(s), cutoff {cutoff}: checked library == DuckDB == polars + TTL nulling")
                for variant, measured in runs.items():
                    rows.append((name, n_views, cutoff, variant, measured, memory[n_views].get(variant, {})))

    print()
    print(
        f"{'scale':<10} {'views':>5} {'cutoff':<6} {'variant':<8} {'best s':>7} {'median s':>8} {'cpu s':>6} ", end=""
    )
    print(f"{'vs DuckDB':>9} {'peak GiB':>8}")
    best = {row[:4]: min(row[4]) for row in rows}  # (wall, cpu) of the fastest run
    for scale, n_views, cutoff, variant, measured, peak in rows:
        wall, cpu = best[(scale, n_views, cutoff, variant)]
        ratio = wall / best[(scale, n_views, cutoff, "DuckDB")][0]
        median = statistics.median(w for w, _ in measured)
        print(f"{scale:<11} {n_views:>5} {cutoff:<6} {variant:<8} {wall:7.2f} {median:8.2f} {cpu:6.1f} ", end="")
        print(f"{ratio:8.2f}x {gib(peak.get('process_peak_rss')):>8} {gib(peak.get('compute_peak_rss')):>8}")
    print("(peak GiB: peak RSS of a fresh process running the variant once at cutoff at, data generation included;")
    print(" joining: its peak while the variant ran, the input frames included)")
    print()
    for scale, n_views, cutoff, variant, *_ in rows:
        if variant == "library":
            lib, duck = best[(scale, n_views, cutoff, "library")][0], best[(scale, n_views, cutoff, "DuckDB")][0]
            print(
                f"{'PASS' if lib / duck <= MAX_RATIO else 'FAIL'}: {scale}, {n_views} view(s), cutoff {cutoff}: "
                f"library <= {MAX_RATIO:.1f}x DuckDB ({lib / duck:.2f}x: {lib:.2f}s against {duck:.2f}s)"
            )
    print(f"wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
