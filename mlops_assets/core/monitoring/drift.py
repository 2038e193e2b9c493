"""Drift statistics of features between a reference sample and a current one: pure functions, no Dagster.

Definitions (the tests hold the implementation to them):

- Nulls (None, NaN, and for numeric features +inf and -inf) are set aside first. They are measured by the null rates
  (share of the rows, 0.0 when there are no rows) and never enter KS, chi-squared, PSI or the unseen share.
- KS (numeric): the two-sample Kolmogorov-Smirnov statistic, sup |F_ref - F_cur| of the empirical CDFs, and its
  two-sided p-value, equal to ``scipy.stats.ks_2samp(reference, current)`` with its default method 'auto' (exact
  p-value up to 10,000 values a side, Smirnov's asymptotic distribution above).
- Chi-squared (categorical): the 2 x C contingency table of counts (reference row, current row) over the union of
  the non-null categories; statistic and p-value of ``scipy.stats.chi2_contingency(table, correction=False)``.
  Undefined (None) with fewer than 2 categories.
- PSI: sum over bins of (cur - ref) * ln(cur / ref), where cur and ref are each sample's share of its non-null
  values in the bin (categorical: a bin per category, those under RARE_SHARE of the reference pooled in one), and
  the share of an empty bin is replaced by EPS = 1e-4 so that the logarithm stays finite and one empty bin adds a
  bounded term instead of infinity. Numeric bins are cut at the reference's quantiles
  i / bins (i = 1 .. bins - 1, ``np.quantile``'s default linear method), de-duplicated, with -inf and +inf as the
  outer edges; a value equal to an edge belongs to the bin on its right. Categorical bins are the categories of
  both samples, so a category the reference never had counts with a reference share of EPS.
- Unseen share (categorical): share of the current non-null values whose category the reference never had.
- A statistic that compares the two samples is None when either sample has no non-null value.

- Categories are compared in their own type: a reference and a current column of different types (an integer `1`
  against a float `1.0`) are an error naming the feature, never a silent 100% unseen.

Effect sizes (KS, PSI, null rate increase, unseen share) are what `level` grades, each against the larger of the
spec's floor and its own noise at the window's size (`calibration`); p-values are computed only when asked for
(`p_values`), because with a million rows every trivial shift is significant and the KS p-value costs most of a
large window's time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats as scipy_stats

from mlops_assets.core.monitoring.calibration import (
    Noise,
    ks_noise,
    null_rate_noise,
    psi_noise,
)
from mlops_assets.spec import DriftThresholds, Threshold

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
    # Each graded statistic's quantiles when nothing changed, at this window's size (empty: not calibrated).
    noise: dict[str, Noise] = field(default_factory=dict)

    @property
    def null_rate_increase(self) -> float:
        """Current minus reference null share: negative when the current window has fewer nulls."""
        return self.null_rate_current - self.null_rate_reference


def effective(rows: int, design_effect: float) -> int:
    """How many independent rows `rows` clustered ones are worth (at least 1 of any)."""
    return max(1 if rows else 0, round(rows / design_effect))


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


def numeric_stats(
    feature: str,
    reference: np.ndarray,
    current: np.ndarray,
    bins: int = 10,
    calibrate: bool = False,
    p_values: bool = True,
    design_effect: float = 1.0,
) -> FeatureStats:
    """KS, PSI over `bins` quantile bins of the reference, and null rates of one numeric feature; with `calibrate`,
    the noise of each at the current window's size (its rows over `design_effect`, for clustered rows: see
    core/monitoring/calibration.py); the KS p-value only with `p_values`."""
    ref_all = np.asarray(reference, dtype=np.float64)
    cur_all = np.asarray(current, dtype=np.float64)
    # Sorted once per side: non-finite values (NaN sorts last, infinities at the ends) are set aside as nulls, so the
    # finite values are a slice shared by KS, edges and PSI counts.
    ref, cur = np.sort(ref_all), np.sort(cur_all)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    ref_nulls, cur_nulls = len(ref_all) - len(ref), len(cur_all) - len(cur)
    ks = ks_pvalue = psi = None
    noise: dict[str, Noise] = {}
    if len(ref) and len(cur):
        ks = _ks_statistic(ref, cur)
        ks_pvalue = _ks_pvalue(ref, cur, ks) if p_values else None
        edges = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
        ref_counts = _numeric_bin_counts(ref, edges)
        psi = _psi(ref_counts, _numeric_bin_counts(cur, edges))
        if calibrate:
            noise["ks"] = ks_noise(len(ref), effective(len(cur), design_effect))
            noise["psi"] = psi_noise(feature, ref_counts, effective(len(cur), design_effect), EPS)[0]
    if calibrate:
        noise["null_rate_increase"] = null_rate_noise(
            _rate(ref_nulls, len(ref_all)), effective(len(cur_all), design_effect)
        )
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
        noise=noise,
    )


def _categories(feature: str, series: pl.Series) -> pl.Series:
    """A categorical column's values in their own type (text however it is stored); a float NaN is a null."""
    if isinstance(series.dtype, pl.Categorical | pl.Enum):
        return series.cast(pl.String)
    return series.fill_nan(None) if series.dtype.is_float() else series


# Categories with less of the reference than this are one bin for PSI: a bin a window cannot fill says nothing.
RARE_SHARE = 0.005


@dataclass(frozen=True)
class CategoryCounts:
    """Non-null counts per PSI bin of each side: the reference's categories (those under RARE_SHARE pooled into one
    bin), then the categories only the current window has; and how many categories the reference has once."""

    reference: np.ndarray
    current: np.ndarray
    singletons: int
    raw: tuple[np.ndarray, np.ndarray]  # a column per category, none pooled (the chi-squared table)


def _category_counts(
    feature: str, reference: pl.Series, current: pl.Series, rare_share: float = RARE_SHARE
) -> CategoryCounts:
    """The counts of both sides over the union of their categories, compared in their own type."""
    ref, cur = _categories(feature, reference), _categories(feature, current)
    if ref.dtype != cur.dtype and pl.Null not in (ref.dtype, cur.dtype):
        raise TypeError(
            f"feature {feature!r}: the reference's categories are {ref.dtype} and the current window's {cur.dtype}: "
            "they cannot be compared (cast one side to the other's type where the data is read)"
        )
    dtype = ref.dtype if ref.dtype != pl.Null else cur.dtype

    def counts(series: pl.Series, name: str) -> pl.DataFrame:
        return series.cast(dtype).drop_nulls().rename("category").value_counts(name=name).cast({name: pl.Int64})

    table = (
        counts(ref, "reference")
        .join(counts(cur, "current"), on="category", how="full", coalesce=True)
        .fill_null(0)
        .sort("category")
    )
    ref_counts, cur_counts = table.get_column("reference").to_numpy(), table.get_column("current").to_numpy()
    total = ref_counts.sum()
    rare = (ref_counts > 0) & (ref_counts < rare_share * total)
    kept, unseen = (ref_counts > 0) & ~rare, ref_counts == 0
    pooled = [rare] if rare.any() else []
    return CategoryCounts(
        np.array([*ref_counts[kept], *(ref_counts[m].sum() for m in pooled), *ref_counts[unseen]], dtype=np.int64),
        np.array([*cur_counts[kept], *(cur_counts[m].sum() for m in pooled), *cur_counts[unseen]], dtype=np.int64),
        int((ref_counts == 1).sum()),
        (ref_counts, cur_counts),
    )


def categorical_stats(
    feature: str,
    reference: pl.Series,
    current: pl.Series,
    calibrate: bool = False,
    rare_share: float = RARE_SHARE,
    design_effect: float = 1.0,
) -> FeatureStats:
    """Chi-squared, PSI over the categories, unseen share and null rates of one categorical feature; with
    `calibrate`, the noise of each at the current window's size (its rows over `design_effect`)."""
    counted = _category_counts(feature, reference, current, rare_share)
    ref_counts, cur_counts = counted.reference, counted.current
    ref_total, cur_total = int(ref_counts.sum()), int(cur_counts.sum())
    chi2 = chi2_pvalue = psi = unseen = None
    noise: dict[str, Noise] = {}
    if ref_total and cur_total:
        if len(counted.raw[0]) >= 2:
            result = scipy_stats.chi2_contingency(np.vstack(counted.raw), correction=False)
            chi2, chi2_pvalue = float(result.statistic), float(result.pvalue)
        psi = _psi(ref_counts, cur_counts)
        unseen = float(cur_counts[ref_counts == 0].sum() / cur_total)
        if calibrate:
            seen = ref_counts[ref_counts > 0]
            noise["psi"], unseen_noise = psi_noise(
                feature, seen, effective(cur_total, design_effect), EPS, counted.singletons / ref_total
            )
            noise["unseen_share"] = unseen_noise or Noise(0.0, 0.0)
    null_reference = _rate(_categories(feature, reference).null_count(), reference.len())
    if calibrate:
        noise["null_rate_increase"] = null_rate_noise(null_reference, effective(current.len(), design_effect))
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
        null_rate_reference=null_reference,
        null_rate_current=_rate(_categories(feature, current).null_count(), current.len()),
        unseen_share=unseen,
        noise=noise,
    )


def compared_values(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    name: str,
    masks: Mapping[str, pl.Series] | None = None,
    distinct: Distinct | None = None,
) -> tuple[pl.Series, pl.Series]:
    """The values of feature `name` each side is judged on: the reference's rows of its mask (if any), and on both
    sides each entity's row of a day once when the feature is `distinct`."""

    def once(values: pl.Series, entities: pl.DataFrame | None) -> pl.Series:
        if distinct is None or name not in distinct.features or entities is None:
            return values
        frame = entities.with_columns(values.alias("__value")).unique(maintain_order=True)
        return frame.get_column("__value").rename(name)

    column = reference.get_column(name)
    entities = distinct.reference if distinct else None
    if masks and name in masks:
        column = column.filter(masks[name])
        entities = entities.filter(masks[name]) if entities is not None else None
    return once(column, entities), once(current.get_column(name), distinct.current if distinct else None)


@dataclass(frozen=True)
class Distinct:
    """Features whose rows repeat a value of one entity: a feature view's row served to every request of its entity
    that day, the same row in many training rows. Counted once per entity, day and value on each side, so that a
    statistic's size (and its noise) is the count of daily rows, not of the requests that reused them: three
    segments' daily rows are three observations, however many requests they answered. The day keeps two days' equal
    values apart: a count of 3 on ten days is ten observations, not one."""

    features: frozenset[str]
    reference: pl.DataFrame  # the entity keys and the day of each reference row
    current: pl.DataFrame  # the entity keys and the day of each current row


def _frame(frame: object, side: str) -> pl.DataFrame:
    """Polars as it is, pandas converted; anything else is a TypeError saying what was given."""
    if isinstance(frame, pl.DataFrame):
        return frame
    if type(frame).__module__.split(".")[0] == "pandas" and type(frame).__name__ == "DataFrame":
        return pl.from_pandas(frame)
    raise TypeError(f"the {side} must be a polars or pandas DataFrame, not {type(frame).__name__}")


def compare(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    bins: int = 10,
    calibrate: bool = False,
    p_values: bool = True,
    rare_share: float = RARE_SHARE,
    masks: Mapping[str, pl.Series] | None = None,
    distinct: Distinct | None = None,
) -> list[FeatureStats]:
    """Statistics of every listed feature, numeric ones first, each in the order given (polars or pandas frames);
    with `calibrate`, each statistic's noise at the current window's size; `masks`: the reference rows a feature is
    compared on (a windowed feature's rows whose window had its whole history), all of them where none is given;
    `distinct`: features compared once per entity and value on each side (see `Distinct`)."""
    reference, current = _frame(reference, "reference"), _frame(current, "current")

    def kept(name: str) -> pl.Series:
        return compared_values(reference, current, name, masks, distinct)[0]

    def now(name: str) -> pl.Series:
        return compared_values(reference, current, name, masks, distinct)[1]

    # Nulls become NaN in a float array, which is how numeric_stats recognises them.
    return [
        *(
            numeric_stats(
                name,
                kept(name).cast(pl.Float64).to_numpy(),
                now(name).cast(pl.Float64).to_numpy(),
                bins,
                calibrate,
                p_values,
            )
            for name in numeric
        ),
        *(categorical_stats(name, kept(name), now(name), calibrate, rare_share) for name in categorical),
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


def graded(value: float | None, floor: Threshold, noise: Noise | None) -> Level:
    """A statistic's level: at or above the spec's floor and, when calibrated, above its noise (strictly: many
    statistics are counts, and a quantile of a count is reached with a probability larger than its tail's)."""
    if value is None:
        return "ok"

    def beyond(at_least: float, noise_level: float | None) -> bool:
        return value >= at_least and (noise_level is None or value > noise_level)

    if beyond(floor.error, noise.error if noise else None):
        return "error"
    return "warn" if beyond(floor.warn, noise.warn if noise else None) else "ok"


def _bounds(floor: Threshold, noise: Noise | None) -> tuple[float, float]:
    """The (warn, error) levels a statistic must reach: the larger of floor and noise (the noise to be exceeded)."""
    if noise is None:
        return floor.warn, floor.error
    return max(floor.warn, noise.warn), max(floor.error, noise.error)


def thresholds_of(stats: FeatureStats, thresholds: DriftThresholds) -> dict[str, tuple[float, float]]:
    """The (warn, error) thresholds each graded statistic of the feature was held to: floor and noise combined."""
    floors = {"ks": thresholds.ks, "psi": thresholds.psi, "null_rate_increase": thresholds.null_rate_increase}
    floors["unseen_share"] = thresholds.unseen_share
    out = {}
    for name, floor in floors.items():
        noise = stats.noise.get(name)
        out[name] = (
            (floor.warn, floor.error) if noise is None else (max(floor.warn, noise.warn), max(floor.error, noise.error))
        )
    return out


def level(stats: FeatureStats, thresholds: DriftThresholds) -> Level:
    """The worst level of the feature's effect sizes: KS (numeric), PSI, null rate increase, unseen share."""
    noise = stats.noise.get
    levels = [
        graded(stats.ks, thresholds.ks, noise("ks")),
        graded(stats.psi, thresholds.psi, noise("psi")),
        graded(stats.null_rate_increase, thresholds.null_rate_increase, noise("null_rate_increase")),
        graded(stats.unseen_share, thresholds.unseen_share, noise("unseen_share")),
    ]
    return max(levels, key=_SEVERITY.__getitem__)


def drifted_share(levels: Sequence[Level]) -> float:
    """Share of the features at "error", the input of the dataset drift threshold (0.0 for no features)."""
    return _rate(sum(lv == "error" for lv in levels), len(levels))
