"""Benchmark: feature view computation (`mlops_assets.core.features.views.compute_features`) of the fraud example.

Default scale: 10M card transactions of 100k customers over 60 days (seeded numpy, in memory), the views
`customer_spend` and `customer_velocity` of `mlops_assets/examples/shared/card_transactions.yaml`, each computed
and collected on its own, as its asset does (`mlops_assets.core.features.views.collect`). The library gets the events as
a LazyFrame over the in-memory frame.

Baseline: `hand_written_spend` / `hand_written_velocity` below, the straightforward polars a user would write for
the same features: sort by (customer, time), one `rolling(..., group_by=customer)` per window, stacked side by
side, one row kept per customer and instant; built on the LazyFrame and collected once, as the library's query
is (polars 2 collects on its streaming engine by default). `--eager` also times the same code run on
DataFrames step by step (polars' in-memory engine), for information. Before anything is timed, every variant is
checked against a brute-force reference (self-join of events, filter by window, group_by) on a sample of
customers, and the full outputs are compared with the library's.

Peak memory: each variant also runs once per view in a fresh subprocess (`--child`; a view's asset runs in a
step, hence a process, of its own), which reports its peak RSS (Linux VmHWM: the larger of the peak while the
input was generated and the peak while the view was computed, the counter being reset through
/proc/self/clear_refs in between; ru_maxrss/RUSAGE_CHILDREN read the same counter, so after that reset they
would miss the generation peak) and the peak while the view is computed alone.

Targets, per view: library time <= 1.5x the baseline (best of `--repeat`, interleaved), and the library's peak
RSS (whole process, input included) < 4 GiB.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from mlops_assets.core.features.views import FEATURE_TIMESTAMP, KNOWN_AT, collect, compute_features
from mlops_assets.spec import PipelineSpec, load_specs, parse_duration

VIEWS = ("customer_spend", "customer_velocity")
KEY, TS, CREATED = "customer_id", "ts", "ingested_at"

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

MAX_RATIO = 1.5  # library time / baseline time, per view
MAX_PEAK_BYTES = 4 * 1024**3

CATEGORIES = [f"mcc_{i:02d}" for i in range(20)]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "BR", "IN"]


# --- Data ------------------------------------------------------------------------------------------------


def generate(events: int, entities: int, days: int, seed: int) -> pl.DataFrame:
    """Transactions in time order (as read from daily partitions), with nulls, late arrivals and same-instant ties."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64)
    # Unevenly active customers (lognormal rates): a few have ~1000 events, most ~100.
    weights = np.cumsum(rng.lognormal(0.0, 1.0, entities))
    entity = np.searchsorted(weights, rng.random(events) * weights[-1])
    # Whole minutes, so window edges (an event exactly 1h/1d/7d/30d before another) occur and get checked.
    ts = start + rng.integers(0, days * 1_440, events) * 60 * 10**6
    # 1% of events happen at the same instant as another event of the same customer (split payments).
    tied = rng.choice(events, events // 50, replace=False)
    first, second = tied[0::2], tied[1::2]
    entity[second], ts[second] = entity[first], ts[first]
    order = np.argsort(ts, kind="stable")
    entity, ts = entity[order], ts[order]
    # Mostly ingested within minutes; 1% arrive days late (backfills), which is what known_at tracks.
    delay_s = rng.exponential(300.0, events) + (rng.random(events) < 0.01) * rng.integers(86_400, 5 * 86_400, events)
    amount = rng.lognormal(3.5, 1.2, events)
    amount[rng.random(events) < 0.02] = np.nan
    ids = pl.Series([f"c{i:07d}" for i in range(entities)])
    categories = pl.Series([*CATEGORIES, None])  # the last index is a null
    countries = pl.Series([*COUNTRIES, None])
    return pl.DataFrame(
        {
            KEY: ids.gather(entity),
            TS: pl.Series(ts).cast(pl.Datetime("us")),
            CREATED: pl.Series(ts + (delay_s * 1e6).astype(np.int64)).cast(pl.Datetime("us")),
            "amount": pl.Series(amount).fill_nan(None),
            "merchant_category": categories.gather(
                np.where(rng.random(events) < 0.01, len(CATEGORIES), rng.integers(0, len(CATEGORIES), events))
            ),
            "country": countries.gather(
                np.where(rng.random(events) < 0.03, len(COUNTRIES), rng.integers(0, len(COUNTRIES), events))
            ),
        }
    )


def fraud_spec() -> PipelineSpec:
    return next(s for s in load_specs() if s.name == "fraud")


# --- The variants ----------------------------------------------------------------------------------------


def run_library(spec: PipelineSpec, view: str, events: pl.DataFrame) -> pl.DataFrame:
    return collect(compute_features(spec, view, events.lazy()))


def _stack_windows(events: Frame, windows: dict[str, list[pl.Expr]]) -> Frame:
    # maintain_order: a stable sort, so `last` among same-instant events is the one that came last.
    ordered = events.sort(KEY, TS, maintain_order=True)
    parts = [
        ordered.rolling(TS, period=period, group_by=KEY, closed="right").agg(aggs) for period, aggs in windows.items()
    ]
    wide = pl.concat([parts[0], *(p.drop(KEY, TS) for p in parts[1:])], how="horizontal")
    # Events at the same instant have the same windows, hence identical rows: keep one.
    return wide.unique([KEY, TS], keep="last", maintain_order=True).rename({TS: FEATURE_TIMESTAMP})


def hand_written_spend(events: Frame) -> Frame:
    amount = pl.col("amount")
    return _stack_windows(
        events,
        {
            "30d": [
                amount.sum().alias("amount_sum_30d"),
                amount.mean().alias("amount_mean_30d"),
                amount.max().alias("amount_max_30d"),
                amount.std().alias("amount_std_30d"),
                amount.min().alias("amount_min_30d"),
                amount.last().alias("amount_last"),
                pl.col(CREATED).max().alias(KNOWN_AT),
            ],
            **{
                w: [
                    amount.sum().alias(f"amount_sum_{w}"),
                    amount.mean().alias(f"amount_mean_{w}"),
                    amount.max().alias(f"amount_max_{w}"),
                ]
                for w in ("1h", "1d", "7d")
            },
        },
    )


def hand_written_velocity(events: Frame) -> Frame:
    def distinct(column: str, window: str) -> pl.Expr:
        return pl.col(column).drop_nulls().n_unique().alias(f"{column}_n_unique_{window}")

    return _stack_windows(
        events,
        {
            "7d": [
                pl.len().alias("count_7d"),
                distinct("merchant_category", "7d"),
                distinct("country", "7d"),
                pl.col(CREATED).max().alias(KNOWN_AT),
            ],
            "1d": [pl.len().alias("count_1d"), distinct("merchant_category", "1d"), distinct("country", "1d")],
            "1h": [pl.len().alias("count_1h")],
        },
    )


HAND_WRITTEN = {"customer_spend": hand_written_spend, "customer_velocity": hand_written_velocity}


def run_baseline(spec: PipelineSpec, view: str, events: pl.DataFrame) -> pl.DataFrame:
    return HAND_WRITTEN[view](events.lazy()).collect()


def run_eager(spec: PipelineSpec, view: str, events: pl.DataFrame) -> pl.DataFrame:
    # The same code on DataFrames: each step runs on its own, on polars' in-memory engine.
    return HAND_WRITTEN[view](events)


VARIANTS: dict[str, Callable[[PipelineSpec, str, pl.DataFrame], pl.DataFrame]] = {
    "library": run_library,
    "baseline": run_baseline,
    "eager": run_eager,
}


def active_variants(args: argparse.Namespace) -> list[str]:
    return ["library", "baseline", *(["eager"] if args.eager else [])]


# --- Verification ----------------------------------------------------------------------------------------


def brute_force(spec: PipelineSpec, view_name: str, events: pl.DataFrame) -> pl.DataFrame:
    """Each feature straight from its definition: per customer and instant t, the events in (t - w, t]."""
    view = spec.feature_views[view_name]
    longest = view.lookback_delta
    indexed = events.with_row_index("__row").rename({TS: "__event_ts"})
    pairs = (
        events.select(KEY, TS)
        .unique()
        .join(indexed, on=KEY)
        .filter((pl.col("__event_ts") <= pl.col(TS)) & (pl.col("__event_ts") > pl.col(TS) - longest))
    )

    def in_window(window: str) -> pl.Expr:
        return pl.col("__event_ts") > pl.col(TS) - parse_duration(window)

    def aggregate(fn: str, column: str | None, window: str) -> pl.Expr:
        if fn == "count":
            return in_window(window).sum()
        if fn == "last":  # the latest event <= t, the same in every window; ties: the one that came last
            return pl.col(column).sort_by("__event_ts", "__row").last()
        values = pl.col(column).filter(in_window(window))
        return values.drop_nulls().n_unique() if fn == "n_unique" else getattr(values, fn)()

    aggs = [pl.col(CREATED).max().alias(KNOWN_AT)]
    for agg in view.aggregations:
        names = iter(agg.feature_names())
        for fn in agg.functions:
            for window in [max(agg.windows, key=parse_duration)] if fn == "last" else agg.windows:
                aggs.append(aggregate(fn, agg.column, window).alias(next(names)))
    return pairs.group_by(KEY, TS).agg(aggs).rename({TS: FEATURE_TIMESTAMP}).sort(KEY, FEATURE_TIMESTAMP)


def assert_same(actual: pl.DataFrame, expected: pl.DataFrame, what: str) -> None:
    try:
        assert_frame_equal(
            actual,
            expected,
            check_column_order=False,
            check_dtypes=False,
            check_exact=False,
            rel_tol=1e-9,
            abs_tol=1e-6,
        )
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None


def verify_sample(spec: PipelineSpec, events: pl.DataFrame, customers: int, seed: int, variants: list[str]) -> None:
    chosen = events.select(pl.col(KEY).unique().sort().sample(customers, seed=seed))
    sample = events.filter(pl.col(KEY).is_in(chosen[KEY].implode()))
    for view in VIEWS:
        reference = brute_force(spec, view, sample)
        for name in variants:
            assert_same(
                VARIANTS[name](spec, view, sample).sort(KEY, FEATURE_TIMESTAMP),
                reference,
                f"{view} {name} vs brute force",
            )
        checked = " == ".join([*variants, "brute force"])
        print(f"verified {view}: {checked} on {customers} customers ({sample.height:,} events)")


# --- Measurement -----------------------------------------------------------------------------------------


def _proc_kib(field: str) -> int:
    """A memory figure of this process (VmRSS, VmHWM) in KiB, from /proc (Linux)."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match is not None, field
    return int(match.group(1))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(args: argparse.Namespace) -> None:
    """Run one variant on one view once in this fresh process; print its time and peak memory as one JSON line."""
    spec = fraud_spec()
    events = generate(args.events, args.entities, args.days, args.seed)
    gc.collect()
    input_rss, generation_peak = _proc_kib("VmRSS") * 1024, _proc_kib("VmHWM") * 1024
    reset = _reset_peak()
    t0 = time.perf_counter()
    result = VARIANTS[args.child](spec, args.child_view, events)
    seconds = time.perf_counter() - t0
    # After the reset, VmHWM (and ru_maxrss, which reads the same counter) cover the computation only.
    compute_peak = _proc_kib("VmHWM") * 1024 if reset else None
    report = {
        "seconds": seconds,
        "input_rss": input_rss,
        "compute_peak_rss": compute_peak,
        "process_peak_rss": max(
            generation_peak, compute_peak or 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        ),
        "rows": result.height,
    }
    print(json.dumps(report))


def measure_memory(args: argparse.Namespace) -> dict[tuple[str, str], dict]:
    """Per (variant, view), a process of its own, as each feature view's asset runs in a step of its own."""
    scale = ["--events", str(args.events), "--entities", str(args.entities), "--days", str(args.days)]
    reports = {}
    for view in VIEWS:
        for variant in active_variants(args):
            command = [sys.executable, __file__, "--child", variant, "--child-view", view, *scale]
            proc = subprocess.run([*command, "--seed", str(args.seed)], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"memory run of {variant} {view} failed:\n{proc.stderr}")
            reports[(variant, view)] = json.loads(proc.stdout.strip().splitlines()[-1])
    return reports


def timed(fn: Callable[[], pl.DataFrame]) -> tuple[float, float, pl.DataFrame]:
    """(wall seconds, CPU seconds of all threads, result)."""
    gc.collect()
    cpu0, t0 = os.times(), time.perf_counter()
    result = fn()
    wall, cpu1 = time.perf_counter() - t0, os.times()
    return wall, (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), result


def gib(n: float | None) -> str:
    return "   n/a" if n is None else f"{n / 1024**3:6.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per variant and view; the best counts")
    parser.add_argument("--sample-customers", type=int, default=300, help="customers in the brute-force check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-memory", action="store_true", help="no subprocess peak-memory runs")
    parser.add_argument("--eager", action="store_true", help="also time the hand-written code run eagerly (info)")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--child-view", choices=VIEWS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    started = time.perf_counter()
    memory = {} if args.skip_memory else measure_memory(args)

    spec = fraud_spec()
    t0 = time.perf_counter()
    events = generate(args.events, args.entities, args.days, args.seed)
    print(
        f"features: {args.events:,} events, {args.entities:,} customers, {args.days} days "
        f"(input {events.estimated_size() / 1024**3:.2f} GiB), generated in {time.perf_counter() - t0:.1f}s"
    )
    print(f"polars {pl.__version__}, {pl.thread_pool_size()} threads, best of {args.repeat}, variants interleaved")
    variants = active_variants(args)
    verify_sample(spec, events, args.sample_customers, args.seed, variants)

    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for rep in range(args.repeat):
        for view in VIEWS:
            results = {}
            for name in variants:
                run = VARIANTS[name]
                wall, cpu, results[name] = timed(lambda run=run, view=view: run(spec, view, events))
                runs.setdefault((view, name), []).append((wall, cpu))
                if rep > 0:
                    del results[name]
            if rep == 0:
                for name in variants[1:]:
                    assert_same(results["library"], results[name], f"{view} library vs {name}, full data")
                print(f"verified {view}: {' == '.join(variants)} on all {results['library'].height:,} rows")
            del results

    print()
    print(f"{'view':<18} {'variant':<9} {'best s':>7} {'median s':>9} {'cpu s':>6} {'ratio':>6} {'peak GiB':>9}")
    ratios = {}
    for view in VIEWS:
        base_best = min(w for w, _ in runs[(view, "baseline")])
        for name in variants:
            walls = [w for w, _ in runs[(view, name)]]
            best_cpu = min(runs[(view, name)])[1]
            peak = memory.get((name, view), {}).get("process_peak_rss")
            print(
                f"{view:<18} {name:<9} {min(walls):7.2f} {statistics.median(walls):9.2f} {best_cpu:6.1f} "
                f"{min(walls) / base_best:5.2f}x {gib(peak):>9}"
            )
        ratios[view] = min(w for w, _ in runs[(view, "library")]) / base_best
        paired = [lib[0] / base[0] for lib, base in zip(runs[(view, "library")], runs[(view, "baseline")], strict=True)]
        print(f"{'':<18} (median of paired library/baseline ratios: {statistics.median(paired):.2f}x)")
    if memory:
        print()
        print("peak RSS of a fresh process per variant and view (one run; data generation included):")
        for (name, view), report in memory.items():
            peak, compute = gib(report["process_peak_rss"]), gib(report["compute_peak_rss"]).strip()
            print(
                f"  {view:<18} {name:<9} {peak} GiB   (input alone {gib(report['input_rss']).strip()} GiB, "
                f"peak while computing {compute} GiB; {report['seconds']:.1f}s)"
            )

    print()
    for view, ratio in ratios.items():
        print(f"{'PASS' if ratio <= MAX_RATIO else 'FAIL'}: {view} library <= {MAX_RATIO}x baseline ({ratio:.2f}x)")
    for view in VIEWS if memory else []:
        peak = memory[("library", view)]["process_peak_rss"]
        verdict = "PASS" if peak < MAX_PEAK_BYTES else "FAIL"
        print(f"{verdict}: {view} library peak RSS < {gib(MAX_PEAK_BYTES).strip()} GiB ({gib(peak).strip()} GiB)")
    if not memory:
        print("SKIPPED: peak memory (--skip-memory)")
    print(f"wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
