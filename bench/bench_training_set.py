"""Benchmark: point-in-time training set build (`mlops_assets.core.training.training_set.point_in_time_join`).

Default scale: 2M label events x 3M rows of one feature view (10 feature columns), 100k entities, 60 days.
Both frames are generated with seeded numpy, held in memory and passed to the library as LazyFrames.

Baseline (what a user writes by hand for the same join, timed on the same in-memory frames):

    labels.sort(prediction_ts).join_asof(
        features.sort(feature_ts), left_on=prediction_ts, right_on=feature_ts,
        by=entity, strategy="backward", allow_exact_matches=inclusive, check_sortedness=False)

It includes sorting both frames by time (join_asof needs it, and a user cannot skip it without knowing the
input order) and the join. It leaves out what the library adds on top: the TTL nulling, the missing/stale/null
statistics and the final sort of the result by (prediction time, keys). An extra "join_asof only" row (no sort,
on the time-ordered input) is printed for information; it is not a target.

The frames arrive sorted by their time column, as rows read from time-partitioned storage mostly do;
`--unsorted` shuffles them to see the cost of real sorts.

Targets: library throughput >= 1.5M label rows/s, and library time <= 1.3x the baseline, for both cutoffs
(`at`: inclusive, `before`: strictly before). Times are the best of `--repeat` runs, variants interleaved.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from mlops_assets.core.features.views import FEATURE_TIMESTAMP
from mlops_assets.core.training.training_set import JoinStats, ViewInput, point_in_time_join

KEY = "customer_id"
PREDICTION_TS = "transaction_ts"
LABEL_TS = "confirmed_at"
VIEW = "customer_features"
TTL = timedelta(days=7)  # short enough that some joined rows are stale, so the nulling does real work

MIN_THROUGHPUT = 1.5e6  # label rows per second
MAX_RATIO = 1.3  # library time / baseline time


def generate(args: argparse.Namespace) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(labels, feature rows), each sorted by its time column unless --unsorted.

    Half of the labels are predictions at the time of one of the entity's feature rows (a card transaction is
    both the scored request and an event of the feature source), so `at` and `before` cutoffs differ.
    """
    rng = np.random.default_rng(args.seed)
    start = np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64)
    span_us = args.days * 86_400 * 10**6
    ids = pl.Series(KEY, [f"c{i:07d}" for i in range(args.entities)])
    # Unevenly active entities (lognormal rates), as customers are.
    weights = np.cumsum(rng.lognormal(0.0, 1.0, args.entities))
    draw_entities = lambda n: np.searchsorted(weights, rng.random(n) * weights[-1])  # noqa: E731

    f_entity = draw_entities(args.feature_rows)
    f_ts = start + rng.integers(0, span_us, args.feature_rows)
    features = {
        f"feature_{i:02d}": np.where(
            rng.random(args.feature_rows) < 0.01, np.nan, rng.standard_normal(args.feature_rows)
        )
        for i in range(args.features)
    }
    feature_frame = pl.DataFrame(
        {
            KEY: ids.gather(f_entity),
            FEATURE_TIMESTAMP: pl.Series(f_ts).cast(pl.Datetime("us")),
            **features,
        }
    ).fill_nan(None)

    n_exact = args.labels // 2
    at_event = rng.choice(args.feature_rows, n_exact, replace=False)
    l_entity = np.concatenate([f_entity[at_event], draw_entities(args.labels - n_exact)])
    l_ts = np.concatenate([f_ts[at_event], start + rng.integers(0, span_us, args.labels - n_exact)])
    label_frame = pl.DataFrame(
        {
            "label_id": np.arange(args.labels, dtype=np.int64),
            KEY: ids.gather(l_entity),
            PREDICTION_TS: pl.Series(l_ts).cast(pl.Datetime("us")),
            LABEL_TS: pl.Series(l_ts + rng.integers(3_600, 30 * 86_400, args.labels) * 10**6).cast(pl.Datetime("us")),
            "amount": rng.lognormal(3.5, 1.2, args.labels),
            "is_fraud": (rng.random(args.labels) < 0.01).astype(np.int8),
        }
    )
    if args.unsorted:
        return label_frame.sample(fraction=1.0, shuffle=True, seed=args.seed), feature_frame.sample(
            fraction=1.0, shuffle=True, seed=args.seed + 1
        )
    return label_frame.sort(PREDICTION_TS), feature_frame.sort(FEATURE_TIMESTAMP)


def run_library(labels: pl.DataFrame, features: pl.DataFrame, inclusive: bool) -> tuple[pl.DataFrame, JoinStats]:
    return point_in_time_join(
        labels.lazy(),
        {VIEW: ViewInput(features.lazy(), TTL)},
        keys=[KEY],
        prediction_timestamp=PREDICTION_TS,
        label_timestamp=LABEL_TS,
        inclusive=inclusive,
    )


def run_baseline(labels: pl.DataFrame, features: pl.DataFrame, inclusive: bool) -> pl.DataFrame:
    return labels.sort(PREDICTION_TS).join_asof(
        features.sort(FEATURE_TIMESTAMP),
        left_on=PREDICTION_TS,
        right_on=FEATURE_TIMESTAMP,
        by=KEY,
        strategy="backward",
        allow_exact_matches=inclusive,
        check_sortedness=False,
    )


def run_join_only(labels: pl.DataFrame, features: pl.DataFrame, inclusive: bool) -> pl.DataFrame:
    return labels.join_asof(
        features,
        left_on=PREDICTION_TS,
        right_on=FEATURE_TIMESTAMP,
        by=KEY,
        strategy="backward",
        allow_exact_matches=inclusive,
        check_sortedness=False,
    )


def verify(labels: pl.DataFrame, features: pl.DataFrame, inclusive: bool) -> None:
    """The library's rows are the baseline's rows with TTL-stale features nulled, and its counts agree."""
    out, stats = run_library(labels, features, inclusive)
    base = run_baseline(labels, features, inclusive)
    feature_columns = [c for c in features.columns if c not in (KEY, FEATURE_TIMESTAMP)]
    stale = pl.col(PREDICTION_TS) - pl.col(FEATURE_TIMESTAMP) > TTL
    expected = base.with_columns(pl.when(~stale).then(pl.col(f)).alias(f) for f in feature_columns).drop(
        FEATURE_TIMESTAMP
    )
    assert_frame_equal(out.sort("label_id"), expected.sort("label_id"), check_column_order=False)
    assert stats.rows == labels.height
    assert stats.missing[VIEW] == base[FEATURE_TIMESTAMP].null_count()
    assert stats.stale[VIEW] == base.filter(stale).height
    if not inclusive:  # strictly before: no label may see the feature row of its own instant
        assert base.filter(pl.col(FEATURE_TIMESTAMP) >= pl.col(PREDICTION_TS)).height == 0
    print(
        f"verified cutoff={'at' if inclusive else 'before'}: library == baseline + TTL nulling "
        f"({stats.missing[VIEW]:,} missing, {stats.stale[VIEW]:,} stale of {stats.rows:,})"
    )


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all threads): CPU time shows how much of a slow run was waiting on others."""
    gc.collect()
    cpu0, t0 = os.times(), time.perf_counter()
    result = fn()
    wall, cpu1 = time.perf_counter() - t0, os.times()
    del result
    return wall, (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=2_000_000)
    parser.add_argument("--feature-rows", type=int, default=3_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=10, help="feature columns in the view")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant; the best one counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unsorted", action="store_true", help="shuffle both frames instead of time order")
    args = parser.parse_args(argv)

    started = t0 = time.perf_counter()
    labels, features = generate(args)
    print(
        f"training set: {args.labels:,} labels x {args.feature_rows:,} feature rows ({args.features} features), "
        f"{args.entities:,} entities, {args.days} days, {'shuffled' if args.unsorted else 'time-ordered'} input; "
        f"generated in {time.perf_counter() - t0:.1f}s"
    )
    print(f"polars {pl.__version__}, {pl.thread_pool_size()} threads, best of {args.repeat}, variants interleaved")

    # Verification also warms both code paths up before anything is timed.
    for inclusive in (True, False):
        verify(labels, features, inclusive)

    variants: dict[str, Callable[[pl.DataFrame, pl.DataFrame, bool], object]] = {
        "library point_in_time_join": run_library,
        "baseline sort + join_asof": run_baseline,
        "(info) join_asof only": run_join_only,
    }
    if args.unsorted:  # join_asof on unsorted frames gives wrong rows: nothing to compare with
        del variants["(info) join_asof only"]
    runs: dict[tuple[bool, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeat):
        for inclusive in (True, False):
            for name, fn in variants.items():
                measured = timed(lambda fn=fn, inclusive=inclusive: fn(labels, features, inclusive))
                runs.setdefault((inclusive, name), []).append(measured)

    library, baseline = list(variants)[:2]
    print()
    print(f"{'cutoff':<7} {'variant':<28} {'best s':>7} {'median s':>9} {'cpu s':>6} {'labels/s':>9} {'ratio':>6}")
    throughput, ratio = {}, {}
    for inclusive in (True, False):
        best = {name: min(runs[(inclusive, name)]) for name in variants}  # (wall, cpu) of the fastest run
        cutoff = "at" if inclusive else "before"
        for name in variants:
            walls = [wall for wall, _ in runs[(inclusive, name)]]
            print(
                f"{cutoff:<7} {name:<28} {best[name][0]:7.3f} {statistics.median(walls):9.3f} {best[name][1]:6.2f} "
                f"{args.labels / best[name][0] / 1e6:8.2f}M {best[name][0] / best[baseline][0]:5.2f}x"
            )
        pairs = zip(runs[(inclusive, library)], runs[(inclusive, baseline)], strict=True)
        paired = statistics.median(lib[0] / base[0] for lib, base in pairs)
        print(f"{'':<7} (median of paired library/baseline ratios: {paired:.2f}x)")
        throughput[cutoff] = args.labels / best[library][0]
        ratio[cutoff] = best[library][0] / best[baseline][0]

    print()
    for cutoff in throughput:
        verdict = "PASS" if throughput[cutoff] >= MIN_THROUGHPUT else "FAIL"
        print(
            f"{verdict}: cutoff={cutoff} throughput >= {MIN_THROUGHPUT / 1e6:.1f}M label rows/s "
            f"({throughput[cutoff] / 1e6:.2f}M/s)"
        )
    for cutoff in ratio:
        verdict = "PASS" if ratio[cutoff] <= MAX_RATIO else "FAIL"
        print(f"{verdict}: cutoff={cutoff} library <= {MAX_RATIO}x baseline ({ratio[cutoff]:.2f}x)")
    print(f"wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
