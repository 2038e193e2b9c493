"""Benchmark: drift statistics of a reference and a current sample (`mlops_assets.core.monitoring.drift.compare`).

Default scale: 1M reference rows x 1M current rows, 20 features: half numeric (normal, lognormal, and amounts
rounded to cents, which have ties), half categorical (20 categories each). Both frames are generated with seeded
numpy and held in memory; 1 % of every feature is null. The current sample drifts in a few features: one numeric
feature is shifted by 0.6 of its spread, another slightly shifted and widened, a third one's null rate rises to 8 %;
one categorical feature gets a new category (6 % of its values) and another a different mix of its categories.

Baseline (what a user writes by hand for the same statistics, timed on the same frames): a loop over the features
that calls `scipy.stats.ks_2samp` on the non-null values of a numeric feature and computes its PSI with numpy
(`np.quantile` edges, `np.searchsorted` + `np.bincount` counts), and for a categorical feature counts the values
with polars' `value_counts`, then calls `scipy.stats.chi2_contingency(correction=False)` and computes PSI and the
unseen share with numpy. Null rates come from polars' `null_count`. Both variants are checked to give the same
numbers (to 1e-9) before anything is timed.

Target: library time <= 1.5x the baseline (best of `--repeat` runs, variants interleaved).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import polars as pl
from scipy import stats as scipy_stats

from mlops_assets.core.monitoring.drift import EPS, FeatureStats, compare, level
from mlops_assets.spec import DriftThresholds

MAX_RATIO = 1.5
TOLERANCE = 1e-9
CATEGORIES = 20
NULL_SHARE = 0.01
COMPARED = (
    "reference_rows",
    "current_rows",
    "ks",
    "ks_pvalue",
    "chi2",
    "chi2_pvalue",
    "psi",
    "null_rate_reference",
    "null_rate_current",
    "unseen_share",
)


def _with_nulls(name: str, values: np.ndarray | pl.Series, share: float, rng: np.random.Generator) -> pl.Series:
    series = pl.Series(name, values)
    return series.scatter(np.flatnonzero(rng.random(len(series)) < share), None)


def _numeric(kind: int, rows: int, shift: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    if kind == 0:
        return rng.normal(shift, scale, rows)
    if kind == 1:
        return rng.lognormal(1.0 + shift, 0.8 * scale, rows)
    return np.round(rng.lognormal(3.5 + shift, scale, rows), 2)  # amounts in cents: many ties


def generate(args: argparse.Namespace) -> tuple[pl.DataFrame, pl.DataFrame, list[str], list[str]]:
    """(reference, current, numeric names, categorical names); the current sample drifts in a few features."""
    rng = np.random.default_rng(args.seed)
    numeric = [f"num_{i:02d}" for i in range(args.features // 2)]
    categorical = [f"cat_{i:02d}" for i in range(args.features - len(numeric))]
    reference: list[pl.Series] = []
    current: list[pl.Series] = []
    for i, name in enumerate(numeric):
        shift, scale = {0: (0.6, 1.0), 1: (0.1, 1.2)}.get(i, (0.0, 1.0))
        reference.append(_with_nulls(name, _numeric(i % 3, args.rows, 0.0, 1.0, rng), NULL_SHARE, rng))
        current_nulls = 0.08 if i == 2 else NULL_SHARE
        current.append(_with_nulls(name, _numeric(i % 3, args.rows, shift, scale, rng), current_nulls, rng))
    names = pl.Series([f"value_{j:02d}" for j in range(CATEGORIES)] + ["value_new"], dtype=pl.String)
    for i, name in enumerate(categorical):
        weights = rng.dirichlet(np.full(CATEGORIES, 2.0))
        drifted = 0.6 * weights + 0.4 * rng.dirichlet(np.full(CATEGORIES, 2.0)) if i == 1 else weights
        ref_codes = rng.choice(CATEGORIES, size=args.rows, p=weights)
        cur_codes = rng.choice(CATEGORIES, size=args.rows, p=drifted)
        if i == 0:
            cur_codes[rng.random(args.rows) < 0.06] = CATEGORIES  # value_new, never in the reference
        reference.append(_with_nulls(name, names.gather(ref_codes), NULL_SHARE, rng))
        current.append(_with_nulls(name, names.gather(cur_codes), NULL_SHARE, rng))
    return pl.DataFrame(reference), pl.DataFrame(current), numeric, categorical


def _psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    ref, cur = reference_counts / reference_counts.sum(), current_counts / current_counts.sum()
    ref, cur = np.where(ref == 0, EPS, ref), np.where(cur == 0, EPS, cur)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def baseline(
    reference: pl.DataFrame, current: pl.DataFrame, numeric: list[str], categorical: list[str], bins: int = 10
) -> list[dict[str, float | int | None]]:
    """The same statistics as `compare`, hand-written with scipy, numpy and polars' value_counts."""
    results: list[dict[str, float | int | None]] = []
    for name in numeric:
        ref_series, cur_series = reference.get_column(name), current.get_column(name)
        ref, cur = ref_series.drop_nulls().to_numpy(), cur_series.drop_nulls().to_numpy()
        ks = scipy_stats.ks_2samp(ref, cur)
        edges = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
        ref_counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
        cur_counts = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
        results.append(
            {
                "reference_rows": ref_series.len(),
                "current_rows": cur_series.len(),
                "ks": float(ks.statistic),
                "ks_pvalue": float(ks.pvalue),
                "chi2": None,
                "chi2_pvalue": None,
                "psi": _psi(ref_counts, cur_counts),
                "null_rate_reference": ref_series.null_count() / ref_series.len(),
                "null_rate_current": cur_series.null_count() / cur_series.len(),
                "unseen_share": None,
            }
        )
    for name in categorical:
        ref_series, cur_series = reference.get_column(name), current.get_column(name)
        ref_map = dict(ref_series.drop_nulls().value_counts().iter_rows())
        cur_map = dict(cur_series.drop_nulls().value_counts().iter_rows())
        union = sorted(ref_map.keys() | cur_map.keys())
        ref_counts = np.array([ref_map.get(c, 0) for c in union])
        cur_counts = np.array([cur_map.get(c, 0) for c in union])
        chi2 = scipy_stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
        results.append(
            {
                "reference_rows": ref_series.len(),
                "current_rows": cur_series.len(),
                "ks": None,
                "ks_pvalue": None,
                "chi2": float(chi2.statistic),
                "chi2_pvalue": float(chi2.pvalue),
                "psi": _psi(ref_counts, cur_counts),
                "null_rate_reference": ref_series.null_count() / ref_series.len(),
                "null_rate_current": cur_series.null_count() / cur_series.len(),
                "unseen_share": float(cur_counts[ref_counts == 0].sum() / cur_counts.sum()),
            }
        )
    return results


def verify(library: list[FeatureStats], base: list[dict[str, float | int | None]]) -> None:
    """Every statistic of every feature equal to 1e-9, or None on both sides."""
    assert len(library) == len(base)
    for stats, expected in zip(library, base, strict=True):
        for field in COMPARED:
            got, want = getattr(stats, field), expected[field]
            same = got is None and want is None
            same = same or (got is not None and want is not None and math.isclose(got, want, abs_tol=TOLERANCE))
            assert same, f"{stats.feature}.{field}: library {got} != baseline {want}"


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
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the reference and of the current sample")
    parser.add_argument("--features", type=int, default=20, help="half numeric, half categorical")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; the best one counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = t0 = time.perf_counter()
    reference, current, numeric, categorical = generate(args)
    print(
        f"drift report: {args.rows:,} reference x {args.rows:,} current rows, {len(numeric)} numeric and "
        f"{len(categorical)} categorical features ({CATEGORIES} categories); "
        f"generated in {time.perf_counter() - t0:.1f}s"
    )
    print(f"polars {pl.__version__}, numpy {np.__version__}, best of {args.repeat}, variants interleaved")

    # Verification also warms both code paths up before anything is timed.
    library_stats = compare(reference, current, numeric, categorical)
    verify(library_stats, baseline(reference, current, numeric, categorical))
    graded = ", ".join(f"{s.feature} {lv}" for s in library_stats if (lv := level(s, DriftThresholds())) != "ok")
    print(f"verified: library == baseline for all {len(library_stats)} features")
    print(f"levels at the default thresholds, other than ok: {graded}")

    variants: dict[str, Callable[[], object]] = {
        "library compare": lambda: compare(reference, current, numeric, categorical),
        "baseline scipy/numpy loop": lambda: baseline(reference, current, numeric, categorical),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, fn in variants.items():
            runs[name].append(timed(fn))

    library, base = variants
    best = {name: min(runs[name]) for name in variants}  # (wall, cpu) of the fastest run
    print()
    print(f"{'variant':<28} {'best s':>7} {'median s':>9} {'cpu s':>6} {'ratio':>6}")
    for name in variants:
        walls = [wall for wall, _ in runs[name]]
        print(
            f"{name:<28} {best[name][0]:7.3f} {statistics.median(walls):9.3f} {best[name][1]:6.2f} "
            f"{best[name][0] / best[base][0]:5.2f}x"
        )
    paired = statistics.median(lib[0] / ref[0] for lib, ref in zip(runs[library], runs[base], strict=True))
    print(f"(median of paired library/baseline ratios: {paired:.2f}x)")

    ratio = best[library][0] / best[base][0]
    print()
    verdict = "PASS" if ratio <= MAX_RATIO else "FAIL"
    print(
        f"{verdict}: drift report {ratio:.2f}x the baseline (target <= {MAX_RATIO}x); library {best[library][0]:.2f}s "
        f"for {args.rows:,} x {args.rows:,} rows, {args.features} features"
    )
    print(f"wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
