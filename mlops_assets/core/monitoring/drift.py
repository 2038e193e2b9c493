"""Drift statistics of features between a reference sample and a current one: pure functions, no Dagster.

Definitions (the tests hold the implementation to them):

- Nulls (None, and NaN for numeric features) are set aside first. They are measured by the null rates (share of
  the rows, 0.0 when there are no rows) and never enter KS, chi-squared, PSI or the unseen share.
- KS (numeric): the two-sample Kolmogorov-Smirnov statistic, sup |F_ref - F_cur| of the empirical CDFs, and its
  two-sided p-value, equal to ``scipy.stats.ks_2samp(reference, current)`` with its default method 'auto' (exact
  p-value up to 10,000 values a side, Smirnov's asymptotic distribution above).
- Chi-squared (categorical): the 2 x C contingency table of counts (reference row, current row) over the union of
  the non-null categories; statistic and p-value of ``scipy.stats.chi2_contingency(table, correction=False)``.
  Undefined (None) with fewer than 2 categories.
- PSI: sum over bins of (cur - ref) * ln(cur / ref), where cur and ref are each sample's share of its non-null
  values in the bin, and the share of an empty bin is replaced by EPS = 1e-4 so that the logarithm stays finite
  and one empty bin adds a bounded term instead of infinity. Numeric bins are cut at the reference's quantiles
  i / bins (i = 1 .. bins - 1, ``np.quantile``'s default linear method), de-duplicated, with -inf and +inf as the
  outer edges; a value equal to an edge belongs to the bin on its right. Categorical bins are the categories of
  both samples, so a category the reference never had counts with a reference share of EPS.
- Unseen share (categorical): share of the current non-null values whose category the reference never had.
- A statistic that compares the two samples is None when either sample has no non-null value.

Effect sizes (KS, PSI, null rate increase, unseen share) are what `level` grades; p-values are reported only,
because with a million rows every trivial shift is significant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats as scipy_stats

from mlops_assets.spec import DriftThresholds

Kind = Literal["numeric", "categorical"]
Level = Literal["ok", "warn", "error"]

EPS = 1e-4
# scipy's ks_2samp (method 'auto') computes the exact p-value up to this many values a side, asymptotic above.
_KS_EXACT_MAX_N = 10_000
_SEVERITY: dict[Level, int] = {"ok": 0, "warn": 1, "error": 2}


@dataclass(frozen=True)
class FeatureStats:
    """Drift statistics of one feature; None where a statistic does not apply to the kind or is undefined."""

    feature: str
    kind: Kind
    reference_rows: int
    current_rows: int
    ks: float | None
    ks_pvalue: float | None
    chi2: float | None
    chi2_pvalue: float | None
    psi: float | None
    null_rate_reference: float
    null_rate_current: float
    unseen_share: float | None

    @property
    def null_rate_increase(self) -> float:
        """Current minus reference null share: negative when the current window has fewer nulls."""
        return self.null_rate_current - self.null_rate_reference


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """PSI of two count vectors over the same bins (both with at least one value)."""
    ref = reference_counts / reference_counts.sum()
    cur = current_counts / current_counts.sum()
    ref = np.where(ref == 0, EPS, ref)
    cur = np.where(cur == 0, EPS, cur)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _ks_statistic(ref: np.ndarray, cur: np.ndarray) -> float:
    """sup |F_ref - F_cur| from the two sorted samples, computed exactly as ks_2samp does.

    F_ref - F_cur only rises at reference values and only falls at current ones, so its maximum is at a reference
    value and its minimum at a current value. Evaluating at every position (not only at the last of a run of ties)
    is safe: an earlier tie gives a smaller rise (or a smaller fall), never a larger extreme.
    """
    n1, n2 = len(ref), len(cur)
    rises = np.arange(1, n1 + 1) / n1 - np.searchsorted(cur, ref, side="right") / n2
    falls = np.searchsorted(ref, cur, side="right") / n1 - np.arange(1, n2 + 1) / n2
    return float(max(rises.max(), np.clip(-falls.min(), 0, 1)))


def _ks_pvalue(ref: np.ndarray, cur: np.ndarray, statistic: float) -> float:
    """The two-sided p-value ks_2samp reports for these sorted samples."""
    n1, n2 = len(ref), len(cur)
    if max(n1, n2) <= _KS_EXACT_MAX_N:
        # The exact distribution has no public entry point but ks_2samp; at this size its own sort costs nothing.
        return float(scipy_stats.ks_2samp(ref, cur).pvalue)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return float(np.clip(scipy_stats.kstwo.sf(statistic, np.round(m * n / (m + n))), 0, 1))


def _numeric_bin_counts(sorted_values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """Values per bin of the edges (-inf, e1, ..., ek, +inf), a value on an edge counting in the bin to its right."""
    below = np.searchsorted(sorted_values, inner_edges, side="left")
    return np.diff(np.concatenate(([0], below, [len(sorted_values)])))


def numeric_stats(feature: str, reference: np.ndarray, current: np.ndarray, bins: int = 10) -> FeatureStats:
    """KS, PSI over `bins` quantile bins of the reference, and null rates of one numeric feature."""
    ref_all = np.asarray(reference, dtype=np.float64)
    cur_all = np.asarray(current, dtype=np.float64)
    # Sorted once per side: NaN sorts last, so the non-null values are a prefix, shared by KS, edges and PSI counts.
    ref_nulls, cur_nulls = int(np.isnan(ref_all).sum()), int(np.isnan(cur_all).sum())
    ref = np.sort(ref_all)[: len(ref_all) - ref_nulls]
    cur = np.sort(cur_all)[: len(cur_all) - cur_nulls]
    ks = ks_pvalue = psi = None
    if len(ref) and len(cur):
        ks = _ks_statistic(ref, cur)
        ks_pvalue = _ks_pvalue(ref, cur, ks)
        edges = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
        psi = _psi(_numeric_bin_counts(ref, edges), _numeric_bin_counts(cur, edges))
    return FeatureStats(
        feature=feature,
        kind="numeric",
        reference_rows=len(ref_all),
        current_rows=len(cur_all),
        ks=ks,
        ks_pvalue=ks_pvalue,
        chi2=None,
        chi2_pvalue=None,
        psi=psi,
        null_rate_reference=_rate(ref_nulls, len(ref_all)),
        null_rate_current=_rate(cur_nulls, len(cur_all)),
        unseen_share=None,
    )


def _category_counts(reference: pl.Series, current: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Non-null counts of each side over the sorted union of both sides' categories."""

    def counts(series: pl.Series, name: str) -> pl.DataFrame:
        return series.cast(pl.String).drop_nulls().rename("category").value_counts(name=name).cast({name: pl.Int64})

    table = (
        counts(reference, "reference")
        .join(counts(current, "current"), on="category", how="full", coalesce=True)
        .fill_null(0)
        .sort("category")
    )
    return table.get_column("reference").to_numpy(), table.get_column("current").to_numpy()


def categorical_stats(feature: str, reference: pl.Series, current: pl.Series) -> FeatureStats:
    """Chi-squared, PSI over the categories, unseen share and null rates of one categorical feature."""
    ref_counts, cur_counts = _category_counts(reference, current)
    ref_total, cur_total = int(ref_counts.sum()), int(cur_counts.sum())
    chi2 = chi2_pvalue = psi = unseen = None
    if ref_total and cur_total:
        if len(ref_counts) >= 2:
            result = scipy_stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
            chi2, chi2_pvalue = float(result.statistic), float(result.pvalue)
        psi = _psi(ref_counts, cur_counts)
        unseen = float(cur_counts[ref_counts == 0].sum() / cur_total)
    return FeatureStats(
        feature=feature,
        kind="categorical",
        reference_rows=reference.len(),
        current_rows=current.len(),
        ks=None,
        ks_pvalue=None,
        chi2=chi2,
        chi2_pvalue=chi2_pvalue,
        psi=psi,
        null_rate_reference=_rate(reference.null_count(), reference.len()),
        null_rate_current=_rate(current.null_count(), current.len()),
        unseen_share=unseen,
    )


def compare(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    bins: int = 10,
) -> list[FeatureStats]:
    """Statistics of every listed feature, numeric ones first, each in the order given."""
    # Nulls become NaN in a float array, which is how numeric_stats recognises them.
    return [
        *(
            numeric_stats(
                name,
                reference.get_column(name).cast(pl.Float64).to_numpy(),
                current.get_column(name).cast(pl.Float64).to_numpy(),
                bins,
            )
            for name in numeric
        ),
        *(categorical_stats(name, reference.get_column(name), current.get_column(name)) for name in categorical),
    ]


_FRAME_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.String(),
    "kind": pl.String(),
    "reference_rows": pl.Int64(),
    "current_rows": pl.Int64(),
    "ks": pl.Float64(),
    "ks_pvalue": pl.Float64(),
    "chi2": pl.Float64(),
    "chi2_pvalue": pl.Float64(),
    "psi": pl.Float64(),
    "null_rate_reference": pl.Float64(),
    "null_rate_current": pl.Float64(),
    "unseen_share": pl.Float64(),
    "null_rate_increase": pl.Float64(),
}


def stats_frame(stats: Sequence[FeatureStats]) -> pl.DataFrame:
    """One row per feature: the fields of FeatureStats and the null rate increase, for metadata and reports."""
    rows = [{**dataclasses.asdict(s), "null_rate_increase": s.null_rate_increase} for s in stats]
    return pl.DataFrame(rows, schema=_FRAME_SCHEMA, orient="row")


def level(stats: FeatureStats, thresholds: DriftThresholds) -> Level:
    """The worst level of the feature's effect sizes: KS (numeric), PSI, null rate increase, unseen share."""
    levels = [
        thresholds.ks.level(stats.ks),
        thresholds.psi.level(stats.psi),
        thresholds.null_rate_increase.level(stats.null_rate_increase),
        thresholds.unseen_share.level(stats.unseen_share),
    ]
    return max(levels, key=_SEVERITY.__getitem__)


def drifted_share(levels: Sequence[Level]) -> float:
    """Share of the features at "error", the input of the dataset drift threshold (0.0 for no features)."""
    return _rate(sum(lv == "error" for lv in levels), len(levels))
