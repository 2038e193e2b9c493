"""What a drift statistic shows when nothing changed, at the current window's size: the noise a level must exceed.

A fixed PSI of 0.1 means little in a window of 200 rows (a 25-category feature shows more than that between two
samples of one distribution) and much in a window of a million. So each feature's thresholds are calibrated to the
window: a statistic warns only above both the spec's effect-size floor and its own `WARN_QUANTILE` under "no change",
and fails only above both the floor's error level and its `ERROR_QUANTILE`. "No change" is the reference itself:

- PSI (numeric and categorical) and the unseen share: `DRAWS` Monte Carlo windows of the current window's size drawn
  from the reference's own bin (or category) shares, the shares themselves redrawn from the reference's counts each
  time (the reference is a sample too), the categories the reference never saw given the mass a sample of its size
  leaves unseen (Good-Turing: its share of categories seen once). The statistic is computed exactly as on real windows
  (the same bins, the same floor for empty bins), so high-cardinality features and tiny windows are covered as they
  are, without an approximation that assumes large counts.
- KS: the two-sample Kolmogorov distribution at the effective size n·m/(n+m) (conservative for tied values).
- Null rate increase: the binomial quantile of the window's null count at the reference's null rate.

A window of logged predictions is not a sample of independent rows: the requests of one entity on one day share its
view's features, so their scores move together (a segment-keyed pipeline answers hundreds of requests a day from a few
segments' rows). Its outputs are calibrated at their effective size, the rows divided by Kish's design effect of the
scores clustered by entity and day (`design_effect`); independent rows have a design effect of 1.

Thresholds are deterministic: the draws are seeded by the feature's name and the window's size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

# A feature warns in at most 1% and fails in at most 0.1% of windows in which nothing changed: each of the three
# statistics graded per feature (KS, PSI, nulls; PSI, unseen, nulls) gets a third of that (Bonferroni).
GRADED_PER_FEATURE = 3
WARN_QUANTILE, ERROR_QUANTILE = 1 - 0.01 / GRADED_PER_FEATURE, 1 - 0.001 / GRADED_PER_FEATURE
DRAWS = 20_000
# The Monte Carlo windows are at most this large; a larger window's noise is scaled down from it (PSI's noise falls
# as 1/n once every bin is well filled, which it is at this size for any count of bins a floor leaves relevant).
MAX_DRAWN_ROWS = 20_000


@dataclass(frozen=True)
class Noise:
    """A statistic's quantiles under no change, at one window size: what a warning and an error must exceed."""

    warn: float
    error: float


def _rng(feature: str, rows: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{feature}\x00{rows}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _quantiles(values: np.ndarray) -> Noise:
    warn, error = np.quantile(values, [WARN_QUANTILE, ERROR_QUANTILE])
    return Noise(float(warn), float(error))


def psi_of_counts(reference: np.ndarray, current: np.ndarray, eps: float) -> np.ndarray:
    """PSI of a reference share vector against each row of a matrix of current counts (empty shares floored)."""
    ref = np.where(reference == 0, eps, reference)
    totals = current.sum(axis=1, keepdims=True)
    cur = np.where(current == 0, eps, current / np.maximum(totals, 1))
    return np.asarray(((cur - ref) * np.log(cur / ref)).sum(axis=1))


def psi_noise(
    feature: str, reference_counts: np.ndarray, rows: int, eps: float, unseen_mass: float = 0.0
) -> tuple[Noise, Noise | None]:
    """Noise of PSI over bins with `reference_counts`, for a window of `rows` non-null values; with `unseen_mass`
    (categorical), the window may hold categories the reference never had: the noise of the unseen share too.
    Remembered per reference and size: the feature and prediction drift of one report, and the windows of a
    benchmark, ask again."""
    key = (feature, reference_counts.tobytes(), _grid(min(rows, MAX_DRAWN_ROWS)), eps, unseen_mass)
    if key not in _REMEMBERED:
        if len(_REMEMBERED) >= 4096:
            _REMEMBERED.clear()
        _REMEMBERED[key] = _psi_noise(feature, reference_counts, key[2], eps, unseen_mass)
    psi, unseen = _REMEMBERED[key]
    scale = key[2] / rows  # PSI's noise falls as 1/n: the drawn size's quantiles carried to the real window's
    # The unseen share is a count over the window's rows: its quantiles are kept as counts, shares of the real rows.
    return Noise(psi.warn * scale, psi.error * scale), Noise(
        unseen.warn / rows, unseen.error / rows
    ) if unseen else None


def _grid(rows: int) -> int:
    """`rows` to two significant digits (at least 1): windows of nearly one size share one calibration."""
    if rows < 100:
        return max(rows, 1)
    magnitude = int(10 ** (len(str(rows)) - 2))
    return round(rows / magnitude) * magnitude


_REMEMBERED: dict[tuple[str, bytes, int, float, float], tuple[Noise, Noise | None]] = {}


def _psi_noise(
    feature: str, reference_counts: np.ndarray, rows: int, eps: float, unseen_mass: float
) -> tuple[Noise, Noise | None]:
    total = int(reference_counts.sum())
    rng = _rng(feature, rows)
    shares = rng.multinomial(total, reference_counts / total, size=DRAWS) / total  # the reference is a sample too
    if unseen_mass > 0:
        shares = np.hstack([shares * (1 - unseen_mass), np.full((DRAWS, 1), unseen_mass)])
    current = rng.multinomial(rows, shares)
    reference = np.append(reference_counts / total, 0.0) if unseen_mass > 0 else reference_counts / total
    unseen = _quantiles(current[:, -1]) if unseen_mass > 0 else None  # in counts
    return _quantiles(psi_of_counts(reference, current, eps)), unseen


def unseen_mass(reference_counts: np.ndarray) -> float:
    """The share of a population's values in categories a sample with these counts never saw (Good-Turing)."""
    total = reference_counts.sum()
    return float((reference_counts == 1).sum() / total) if total else 0.0


def ks_noise(reference_rows: int, rows: int) -> Noise:
    """Quantiles of the two-sample KS statistic between samples of these sizes from one continuous distribution."""
    effective = max(1, round(reference_rows * rows / (reference_rows + rows)))
    warn, error = scipy_stats.kstwo.ppf([WARN_QUANTILE, ERROR_QUANTILE], effective)
    return Noise(float(warn), float(error))


def design_effect(values: np.ndarray, clusters: np.ndarray) -> float:
    """Kish's design effect of `values` drawn in `clusters`: 1 + (m - 1)·rho, with m the size-weighted mean cluster size
    (Σm²/n) and rho the intraclass correlation (one-way ANOVA estimate, clipped to [0, 1]). n clustered values carry
    about as much information as n / deff independent ones. 1 when there is nothing to estimate it from (fewer than
    two clusters, or each value its own cluster). Non-finite values are left out."""
    finite = np.isfinite(values)
    values, clusters = np.asarray(values, dtype=np.float64)[finite], np.asarray(clusters)[finite]
    n = len(values)
    _, index, sizes = np.unique(clusters, return_inverse=True, return_counts=True)
    k = len(sizes)
    if k < 2 or n <= k:
        return 1.0
    means = np.bincount(index, weights=values) / sizes
    between = float((sizes * (means - values.mean()) ** 2).sum()) / (k - 1)
    within = float(((values - means[index]) ** 2).sum()) / (n - k)
    squares = float((sizes.astype(np.float64) ** 2).sum())
    typical = (n - squares / n) / (k - 1)  # the ANOVA's cluster size for unequal clusters
    spread = between + (typical - 1) * within
    rho = min(1.0, max(0.0, (between - within) / spread)) if spread > 0 else 0.0
    return 1.0 + (squares / n - 1.0) * rho


def null_rate_noise(reference_rate: float, rows: int) -> Noise:
    """Quantiles of the null rate increase of a window of `rows` rows whose values are null at `reference_rate`."""
    if rows == 0:
        return Noise(0.0, 0.0)
    warn, error = scipy_stats.binom.ppf([WARN_QUANTILE, ERROR_QUANTILE], rows, reference_rate) / rows
    return Noise(float(warn) - reference_rate, float(error) - reference_rate)
