"""Benchmark: drift statistics of a reference and a current sample (`mlops_assets.core.monitoring.drift.compare`),
as the drift report computes them: calibrated to the window's size, without the KS p-value (never graded).

Default scale: 1M reference rows x 1M current rows, 20 numeric features (normal, lognormal, and amounts rounded to
cents, which have ties), 1 % of every feature null, seeded numpy, held in memory. Two scenarios: nothing changed,
and small real shifts (every feature shifted by 0.01 to 0.06 of its spread: KS between 0.003 and 0.03, the usual
production case, where the KS p-value is most expensive).

Baseline (what a user writes by hand for the same statistics, timed on the same frames): a loop over the features
that calls `scipy.stats.ks_2samp` on the non-null values and computes PSI with numpy (`np.quantile` edges,
`np.searchsorted` + `np.bincount` counts); null rates from polars' `null_count`. Both are checked to give the same
KS, PSI and null rates (to 1e-9) before anything is timed.

Target: library time <= 0.5x the baseline in both scenarios (best of `--repeat` runs, variants interleaved).
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

MAX_RATIO = 0.5
TOLERANCE = 1e-9
CATEGORIES = 20
NULL_SHARE = 0.01
COMPARED = ("reference_rows", "current_rows", "ks", "psi", "null_rate_reference", "null_rate_current")


def _with_nulls(name: str, values: np.ndarray | pl.Series, share: float, rng: np.random.Generator) -> pl.Series:
    series = pl.Series(name, values)
    return series.scatter(np.flatnonzero(rng.random(len(series)) < share), None)


def _numeric(kind: int, rows: int, shift: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    if kind == 0:
        return rng.normal(shift, scale, rows)
    if kind == 1:
        return rng.lognormal(1.0 + shift, 0.8 * scale, rows)
    return np.round(rng.lognormal(3.5 + shift, scale, rows), 2)  # amounts in cents: many ties


def generate(args: argparse.Namespace, shifted: bool) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """(reference, current, numeric names); with `shifted`, every feature moves a little (KS 0.003 to 0.03)."""
    rng = np.random.default_rng(args.seed)
    numeric = [f"num_{i:02d}" for i in range(args.features)]
    reference: list[pl.Series] = []
    current: list[pl.Series] = []
    for i, name in enumerate(numeric):
        shift = 0.01 + 0.05 * i / max(len(numeric) - 1, 1) if shifted else 0.0
        reference.append(_with_nulls(name, _numeric(i % 3, args.rows, 0.0, 1.0, rng), NULL_SHARE, rng))
        current.append(_with_nulls(name, _numeric(i % 3, args.rows, shift, 1.0, rng), NULL_SHARE, rng))
    return pl.DataFrame(reference), pl.DataFrame(current), numeric


def _psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    ref, cur = reference_counts / reference_counts.sum(), current_counts / current_counts.sum()
    ref, cur = np.where(ref == 0, EPS, ref), np.where(cur == 0, EPS, cur)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def baseline(
    reference: pl.DataFrame, current: pl.DataFrame, numeric: list[str], bins: int = 10
) -> list[dict[str, float | int | None]]:
    """The same statistics as `compare`, hand-written with scipy and numpy."""
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
                "psi": _psi(ref_counts, cur_counts),
                "null_rate_reference": ref_series.null_count() / ref_series.len(),
                "null_rate_current": cur_series.null_count() / cur_series.len(),
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


def report(args: argparse.Namespace, shifted: bool) -> float:
    """Time both variants on one scenario; the ratio of their best runs."""
    t0 = time.perf_counter()
    reference, current, numeric = generate(args, shifted)
    scenario = "small real shifts" if shifted else "nothing changed"
    print(f"\n{scenario}: generated in {time.perf_counter() - t0:.1f}s")

    def library() -> list[FeatureStats]:
        return compare(reference, current, numeric, [], calibrate=True, p_values=False)

    # Verification also warms both code paths up before anything is timed.
    library_stats = library()
    verify(library_stats, baseline(reference, current, numeric))
    ks = [s.ks for s in library_stats if s.ks is not None]
    graded = ", ".join(f"{s.feature} {lv}" for s in library_stats if (lv := level(s, DriftThresholds())) != "ok")
    print(f"verified: library == baseline for all {len(library_stats)} features; KS {min(ks):.4f} .. {max(ks):.4f}")
    print(f"levels at the default thresholds, other than ok: {graded or 'none'}")

    variants: dict[str, Callable[[], object]] = {
        "library compare": library,
        "baseline scipy/numpy loop": lambda: baseline(reference, current, numeric),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, fn in variants.items():
            runs[name].append(timed(fn))
    first, base = variants
    best = {name: min(runs[name]) for name in variants}  # (wall, cpu) of the fastest run
    print(f"{'variant':<28} {'best s':>7} {'median s':>9} {'cpu s':>6} {'ratio':>6}")
    for name in variants:
        walls = [wall for wall, _ in runs[name]]
        print(
            f"{name:<28} {best[name][0]:7.3f} {statistics.median(walls):9.3f} {best[name][1]:6.2f} "
            f"{best[name][0] / best[base][0]:5.2f}x"
        )
    return best[first][0] / best[base][0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the reference and of the current sample")
    parser.add_argument("--features", type=int, default=20, help="numeric features")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; the best one counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"drift report: {args.rows:,} reference x {args.rows:,} current rows, {args.features} numeric features")
    print(f"polars {pl.__version__}, numpy {np.__version__}, best of {args.repeat}, variants interleaved")
    ratios = {shifted: report(args, shifted) for shifted in (False, True)}
    print()
    for shifted, ratio in ratios.items():
        verdict = "PASS" if ratio <= MAX_RATIO else "FAIL"
        scenario = "small real shifts" if shifted else "nothing changed"
        print(f"{verdict}: {scenario}: library {ratio:.2f}x the baseline (target <= {MAX_RATIO}x)")
    print(f"wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
