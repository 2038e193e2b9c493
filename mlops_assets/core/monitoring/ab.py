"""The statistics of an A/B test: a group-sequential comparison of two means that stays valid however often it is
looked at.

The design is Lan and DeMets' alpha spending with O'Brien-Fleming-type boundaries (Lan & DeMets 1983, "Discrete
sequential boundaries for clinical trials", Biometrika 70(3); Jennison & Turnbull 2000, "Group Sequential Methods
with Applications to Clinical Trials", ch. 7 and 19), monitored by statistical information (Mehta & Tsiatis 2001):
`looks` analyses at equal steps of information up to the maximum the planned power needs, a two-sided test at each
with the boundary the spending function allows. O'Brien-Fleming-type spending keeps early boundaries strict (a
lucky first day does not decide) and the final one close to the fixed-sample test's, so the planned sample is barely
larger (about 3% for 5 looks at 80% power). Where the looks are is a property of the data (the labelled rows in the
order their labels arrived), not of when someone runs the analysis: a daily materialization re-reads the same looks.

Every per-request value is a mean's term: a 0/1 (a rate: precision, recall, accuracy, a conversion) or any number
(a log loss, an absolute error, a revenue). Variances are estimated per variant, over entities rather than rows
(cluster-robust): assignment is sticky by entity, so one entity's requests are not independent evidence. Everything
here is numpy on arrays whose last axis is the rows, so a simulation runs many seeds at once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

import numpy as np
import polars as pl
from scipy import optimize, stats

from mlops_assets.core.models.modeling import ModelError, targets
from mlops_assets.core.serving.shadow import ShadowError, outcomes_by_request
from mlops_assets.spec import PipelineSpec

MIN_ENTITIES = 100  # per variant before any look: the normal approximation and the variance need a sample
GRID_POINTS = 401  # per look, for the recursive integration of the boundaries (Jennison & Turnbull ch. 19)


class ABDecision(StrEnum):
    KEEP_COLLECTING = "keep_collecting"  # no boundary crossed, looks remain
    CHALLENGER_WINS = "challenger_wins"  # the challenger is better, at the declared significance
    CHAMPION_WINS = "champion_wins"  # the champion is better
    NO_DIFFERENCE = "no_difference"  # every look done without a crossing: no difference at the planned power


@dataclass(frozen=True)
class Design:
    """The group-sequential plan for an effect, significance and power."""

    effect: float
    alpha: float
    power: float
    looks: int
    boundaries: tuple[float, ...]  # |z| at or above which look k decides
    spent: tuple[float, ...]  # alpha spent by look k, cumulative (the last is alpha)
    max_information: float  # 1 / Var(difference) at the last look
    fixed_information: float  # what a single test at the end would need

    @property
    def inflation(self) -> float:
        """How much more information the sequential plan needs at most than a single test."""
        return self.max_information / self.fixed_information

    def fractions(self) -> np.ndarray:
        return np.arange(1, self.looks + 1) / self.looks

    def rows_needed(self, variance_champion: float, variance_challenger: float, share: float) -> float:
        """The labelled rows (both variants) the last look needs, for per-row variances and the challenger's share."""
        return self.max_information * (variance_champion / (1 - share) + variance_challenger / share)


def spending(t: np.ndarray | float, alpha: float) -> np.ndarray:
    """O'Brien-Fleming-type alpha spending, two-sided and symmetric: alpha/2 spent on each side by information
    fraction t as 2 - 2 Phi(z_{alpha/4} / sqrt(t)) (Lan & DeMets 1983; gsDesign's sfLDOF)."""
    t = np.clip(np.asarray(t, dtype=float), 1e-12, None)
    return np.asarray(4 * stats.norm.sf(stats.norm.isf(alpha / 4) / np.sqrt(t)), dtype=float)


class _Recursion:
    """The density of the Brownian motion W(t) ~ N(theta t, t) on the continuation region of each look."""

    def __init__(self, theta: float) -> None:
        self.theta = theta
        self.grid: np.ndarray | None = None
        self.density: np.ndarray | None = None
        self.t = 0.0

    def exit(self, t: float, bound: float) -> tuple[float, float]:
        """P(continued so far, then W(t) >= bound) and P(..., W(t) <= -bound), for the next look at t."""
        dt = t - self.t
        mean = self.theta * dt
        if self.grid is None:
            upper, lower = (
                stats.norm.sf((bound - self.theta * t) / math.sqrt(t)),
                stats.norm.cdf((-bound - self.theta * t) / math.sqrt(t)),
            )
            return float(upper), float(lower)
        assert self.density is not None
        weights = self.density * _simpson(self.grid)
        upper = np.sum(weights * stats.norm.sf((bound - self.grid - mean) / math.sqrt(dt)))
        lower = np.sum(weights * stats.norm.cdf((-bound - self.grid - mean) / math.sqrt(dt)))
        return float(upper), float(lower)

    def advance(self, t: float, bound: float) -> None:
        """Condition on not crossing at the look at t: the density of W(t) on (-bound, bound)."""
        grid = np.linspace(-bound, bound, GRID_POINTS)
        if self.grid is None:
            density = stats.norm.pdf(grid, self.theta * t, math.sqrt(t))
        else:
            assert self.density is not None
            dt = t - self.t
            weights = self.density * _simpson(self.grid)
            # The normal density of each increment, written out: scipy's pdf checks its arguments per call, which
            # costs more than the arithmetic on a grid this size.
            shift = (grid[:, None] - self.grid[None, :] - self.theta * dt) ** 2
            density = np.exp(shift * (-0.5 / dt)) @ weights / math.sqrt(2 * math.pi * dt)
        self.grid, self.density, self.t = grid, density, t


def _simpson(grid: np.ndarray) -> np.ndarray:
    """Simpson's weights on an evenly spaced grid of an odd number of points."""
    weights = np.ones(grid.size)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    return np.asarray(weights * (grid[1] - grid[0]) / 3, dtype=float)


def _boundaries(alpha: float, looks: int) -> tuple[list[float], list[float]]:
    """The |z| boundary of each look: what the spending function allows beyond the earlier looks' spending."""
    fractions = np.arange(1, looks + 1) / looks
    spent = spending(fractions, alpha)
    walk, boundaries = _Recursion(0.0), []
    for k, t in enumerate(fractions):
        target = spent[k] - (spent[k - 1] if k else 0.0)

        def excess(z: float, t: float = t, target: float = target) -> float:
            upper, lower = walk.exit(t, z * math.sqrt(t))
            return upper + lower - target

        # A first look at a small fraction may spend less than a float can hold: its boundary is then where the
        # spending function puts it, beyond any z a test will see.
        z = optimize.brentq(excess, 0.1, 40.0, xtol=1e-10) if excess(40.0) < 0 else 40.0
        boundaries.append(float(z))
        walk.advance(t, z * math.sqrt(t))
    return boundaries, [float(s) for s in spent]


def crossing_probabilities(boundaries: list[float] | tuple[float, ...], theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per look, P(first crossing is upward there) and P(downward), for a drift theta at full information."""
    looks = len(boundaries)
    walk, upper, lower = _Recursion(theta), [], []
    for k, z in enumerate(boundaries):
        t = (k + 1) / looks
        up, down = walk.exit(t, z * math.sqrt(t))
        upper.append(up)
        lower.append(down)
        walk.advance(t, z * math.sqrt(t))
    return np.array(upper), np.array(lower)


@lru_cache(maxsize=64)
def design(effect: float, alpha: float = 0.05, power: float = 0.8, looks: int = 5) -> Design:
    """The plan: each look's boundary, and the information at which the test has `power` against `effect`."""
    if not (effect > 0 and 0 < alpha < 0.5 and 0.5 < power < 1 and looks >= 1):
        raise ValueError(f"no design for effect {effect}, alpha {alpha}, power {power}, looks {looks}")
    boundaries, spent = _boundaries(alpha, looks)
    fixed = stats.norm.isf(alpha / 2) + stats.norm.isf(1 - power)
    # The drift (effect * sqrt(max information)) at which an upward crossing by the last look has `power`.
    theta = optimize.brentq(lambda d: crossing_probabilities(boundaries, d)[0].sum() - power, fixed * 0.99, fixed * 1.3)
    return Design(
        effect, alpha, power, looks, tuple(boundaries), tuple(spent), (theta / effect) ** 2, (fixed / effect) ** 2
    )


@dataclass(frozen=True)
class Prefixes:
    """Per variant, the statistics of every prefix of the rows in arrival order (arrays shaped like the rows)."""

    rows: tuple[np.ndarray, np.ndarray]  # champion, challenger
    entities: tuple[np.ndarray, np.ndarray]
    means: tuple[np.ndarray, np.ndarray]
    variances: tuple[np.ndarray, np.ndarray]  # of the mean (cluster-robust), NaN below two entities

    def difference(self, higher_is_better: bool = True) -> np.ndarray:
        """The challenger's improvement on the champion: its mean minus the champion's (reversed if lower is better)."""
        diff = np.asarray(self.means[1] - self.means[0], dtype=float)
        return diff if higher_is_better else -diff

    def information(self, min_entities: int = MIN_ENTITIES) -> np.ndarray:
        """1 / Var(difference): 0 until both variants have `min_entities` entities and some spread (a variance
        estimated from a handful of rows can be near zero and would make any difference look decisive)."""
        variance = self.variances[0] + self.variances[1]
        enough = (self.entities[0] >= min_entities) & (self.entities[1] >= min_entities)
        with np.errstate(divide="ignore", invalid="ignore"):
            info = np.where(enough & np.isfinite(variance) & (variance > 0), 1 / variance, 0.0)
        return info


def prefixes(
    values: np.ndarray,
    challenger: np.ndarray,
    prior_sum: np.ndarray | None = None,
    prior_count: np.ndarray | None = None,
) -> Prefixes:
    """The running statistics of each variant over the rows in arrival order.

    `prior_sum` and `prior_count` are, for each row, the sum and number of the earlier rows of its entity (zero
    when every row is its own entity); with them the variance of a mean is over entity totals:
    sum_e (S_e - mean * n_e)^2 / N^2, times G / (G - 1) for G entities (the sample variance over N when each entity
    has one row).
    """
    values = np.asarray(values, dtype=float)
    prior_sum = np.zeros_like(values) if prior_sum is None else np.asarray(prior_sum, dtype=float)
    prior_count = np.zeros_like(values) if prior_count is None else np.asarray(prior_count, dtype=float)
    rows, entities, means, variances = [], [], [], []
    for mask in (~np.asarray(challenger, dtype=bool), np.asarray(challenger, dtype=bool)):
        m = mask.astype(float)
        n = np.cumsum(m, axis=-1)
        groups = np.cumsum(m * (prior_count == 0), axis=-1)
        total = np.cumsum(m * values, axis=-1)
        squares = np.cumsum(m * (2 * prior_sum * values + values**2), axis=-1)  # sum_e S_e^2
        cross = np.cumsum(m * (prior_sum + values * prior_count + values), axis=-1)  # sum_e S_e n_e
        counts = np.cumsum(m * (2 * prior_count + 1), axis=-1)  # sum_e n_e^2
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = total / n
            spread = np.maximum(squares - 2 * mean * cross + mean**2 * counts, 0.0)
            variance = np.where(groups >= 2, spread / n**2 * groups / (groups - 1), np.nan)
        rows.append(n)
        entities.append(groups)
        means.append(mean)
        variances.append(variance)
    return Prefixes((rows[0], rows[1]), (entities[0], entities[1]), (means[0], means[1]), (variances[0], variances[1]))


def entity_priors(entities: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row (in arrival order), the sum and number of the earlier rows of its entity. `entities` are codes
    of the rows (shape (rows,)), shared by every leading index of `values` (shape (..., rows))."""
    entities = np.asarray(entities)
    values = np.asarray(values, dtype=float)
    order = np.lexsort((np.arange(entities.size), entities))  # by entity, then arrival
    grouped = entities[order]
    starts = np.r_[True, grouped[1:] != grouped[:-1]]
    start_index = np.maximum.accumulate(np.where(starts, np.arange(grouped.size), 0))
    sorted_values = values[..., order]
    running = np.cumsum(sorted_values, axis=-1)
    before_group = running[..., start_index] - sorted_values[..., start_index]
    prior_sum = np.empty_like(values)
    prior_sum[..., order] = running - sorted_values - before_group
    prior_count = np.empty(entities.size, dtype=float)
    prior_count[order] = np.arange(grouped.size) - start_index
    return prior_sum, np.broadcast_to(prior_count, values.shape)


def look_rows(information: np.ndarray, plan: Design) -> np.ndarray:
    """For each look, the index of the first row at which the information reached its share of the maximum
    (-1 where it has not yet): shape (..., looks)."""
    targets = plan.fractions() * plan.max_information
    reached = information[..., None, :] >= targets[:, None]  # (..., looks, rows)
    first = np.argmax(reached, axis=-1)
    return np.where(reached.any(axis=-1), first, -1)


@dataclass(frozen=True)
class Looks:
    """Each look's row, z statistic and whether it crossed; the decision and the look it was made at."""

    rows: np.ndarray  # (..., looks): the row index of each look (-1: not reached)
    z: np.ndarray  # (..., looks): NaN where not reached
    decisions: np.ndarray  # (...): ABDecision values as strings
    decided_at: np.ndarray  # (...): the look (0-based) that decided, -1 while collecting


def sequential_test(
    prefix: Prefixes, plan: Design, higher_is_better: bool = True, min_entities: int = MIN_ENTITIES
) -> Looks:
    """The decision of the group-sequential test on the rows so far (any leading axes: many tests at once)."""
    information = prefix.information(min_entities)
    at = look_rows(information, plan)
    difference = prefix.difference(higher_is_better)
    safe = np.maximum(at, 0)
    z = np.take_along_axis(difference, safe, axis=-1) * np.sqrt(np.take_along_axis(information, safe, axis=-1))
    z = np.where(at >= 0, z, np.nan)
    bounds = np.array(plan.boundaries)
    crossed = np.abs(np.nan_to_num(z)) >= bounds
    any_crossed = crossed.any(axis=-1)
    first = np.argmax(crossed, axis=-1)
    sign = np.take_along_axis(z, first[..., None], axis=-1)[..., 0]
    all_looked = at[..., -1] >= 0
    decisions = np.where(
        any_crossed,
        np.where(sign > 0, ABDecision.CHALLENGER_WINS.value, ABDecision.CHAMPION_WINS.value),
        np.where(all_looked, ABDecision.NO_DIFFERENCE.value, ABDecision.KEEP_COLLECTING.value),
    )
    decided_at = np.where(any_crossed, first, np.where(all_looked, plan.looks - 1, -1))
    return Looks(at, z, decisions, decided_at)


def stagewise_p_value(plan: Design, look: int, z: float) -> float:
    """The two-sided p-value of a test that stopped at `look` (0-based) with statistic z, in the stage-wise
    ordering (Jennison & Turnbull 8.4): the chance under no difference of stopping earlier, or there with |Z| >= |z|.
    It is at most alpha exactly when the test crossed."""
    walk, p = _Recursion(0.0), 0.0
    for k in range(look + 1):
        t = (k + 1) / plan.looks
        bound = (abs(z) if k == look else plan.boundaries[k]) * math.sqrt(t)
        upper, lower = walk.exit(t, bound)
        p += upper + lower
        if k < look:
            walk.advance(t, bound)
    return min(p, 1.0)


@dataclass(frozen=True)
class VariantSummary:
    rows: int
    entities: int
    mean: float
    ci_low: float
    ci_high: float
    variance_per_row: float  # the variance of one row's value, entities accounted for (Var(mean) * rows)


def summary(prefix: Prefixes, side: int, alpha: float) -> VariantSummary:
    """A variant's last prefix (all rows so far): its mean and 1 - alpha confidence interval (not sequential)."""
    n, mean, variance = prefix.rows[side][-1], prefix.means[side][-1], prefix.variances[side][-1]
    half = stats.norm.isf(alpha / 2) * math.sqrt(variance) if np.isfinite(variance) else math.nan
    return VariantSummary(
        int(n), int(prefix.entities[side][-1]), float(mean), float(mean - half), float(mean + half), float(variance * n)
    )


# --- An experiment's rows: logged answers joined to their labels or outcomes ---------------------------------------


class ABError(ValueError):
    """An A/B analysis that cannot be made (an unknown outcome column, labels of the wrong kind): located."""


def answered_by(log: pl.DataFrame, champion: str, challenger: str, since: datetime) -> pl.DataFrame:
    """The experiment's answers: logged since it started, by one of its two versions (fallbacks and other versions
    left out), the first answer of a request id; `challenger` says which variant answered."""
    return (
        log.filter((pl.col("timestamp") >= since) & pl.col("model_version").is_in([champion, challenger]))
        .unique("request_id", keep="first", maintain_order=True)
        .with_columns((pl.col("model_version") == challenger).alias("challenger"))
    )


def is_rate(spec: PipelineSpec) -> bool:
    """Whether the primary metric is a rate (each request's value 0 or 1), whose variance is at most 1/4."""
    ab = spec.serving.ab_test
    assert ab is not None
    if ab.metric is not None:
        return ab.metric in ("precision", "recall", "accuracy")
    assert ab.outcome is not None
    column = spec.sources[ab.outcome.source].columns[ab.outcome.column]
    return column.dtype == "bool" or (column.dtype == "int" and column.min == 0 and column.max == 1)


def rows_at_most(spec: PipelineSpec, plan: Design) -> float | None:
    """Before any data: the labelled rows the last look needs at the most, for a rate (None for other metrics,
    whose planned rows follow from the variance the first rows show)."""
    ab = spec.serving.ab_test
    return plan.rows_needed(0.25, 0.25, ab.challenger_share) if ab is not None and is_rate(spec) else None


def per_request_values(joined: pl.DataFrame, spec: PipelineSpec) -> pl.DataFrame:
    """The primary metric's value for each joined row (`value`); precision counts the rows flagged positive only,
    recall the positive rows only."""
    ab = spec.serving.ab_test
    assert ab is not None and spec.model is not None
    where = "serving.ab_test"
    if ab.outcome is not None:
        dtype = joined.schema["outcome"]
        if not (dtype == pl.Boolean or dtype.is_numeric()):
            raise ABError(f"{where}.outcome.column: {ab.outcome.column!r} holds {dtype} values; an outcome is a number")
        return joined.with_columns(pl.col("outcome").cast(pl.Float64).alias("value"))
    task, metric = spec.model.task, ab.metric
    try:
        y = targets(joined.get_column("outcome"), task, "label.column")
    except ModelError as exc:
        raise ABError(str(exc)) from None
    if task == "regression":  # mae
        values = np.abs(joined.get_column("score").cast(pl.Float64).to_numpy() - y)
        return joined.with_columns(pl.Series("value", values))
    if task == "multiclass":
        answered = joined.get_column("label").cast(pl.String).to_numpy().astype(object)
        if metric == "accuracy":
            return joined.with_columns(pl.Series("value", (answered == y).astype(float)))
        rows = [json.loads(text) if text else {} for text in joined.get_column("probabilities")]
        chance = np.array([row.get(str(target), 0.0) for row, target in zip(rows, y, strict=True)], dtype=float)
        return joined.with_columns(pl.Series("value", -np.log(np.clip(chance, 1e-15, 1.0))))
    score = joined.get_column("score").cast(pl.Float64).to_numpy()
    flagged = score >= spec.model.threshold
    if metric == "precision":
        return joined.with_columns(pl.Series("value", y.astype(float))).filter(pl.Series(flagged))
    if metric == "recall":
        return joined.with_columns(pl.Series("value", flagged.astype(float))).filter(pl.Series(y == 1))
    p = np.clip(score, 1e-15, 1 - 1e-15)  # log_loss
    return joined.with_columns(pl.Series("value", -(y * np.log(p) + (1 - y) * np.log(1 - p))))


def outcome_columns(spec: PipelineSpec) -> tuple[str, tuple[str, str, str]]:
    """Where an A/B test's outcomes come from (for messages), and their (request id, value, arrival time) columns:
    `serving.ab_test.outcome`'s, else the label's."""
    ab = spec.serving.ab_test
    assert ab is not None
    if ab.outcome is None and spec.label.request_id is None:
        raise ABError("label.request_id is not declared: logged predictions cannot be joined to their labels")
    if ab.outcome is not None:
        where = f"serving.ab_test.outcome (source {ab.outcome.source!r})"
        return where, (ab.outcome.request_id, ab.outcome.column, spec.sources[ab.outcome.source].event_timestamp)
    label = spec.label
    return f"label (source {label.source!r})", (str(label.request_id), label.column, label.timestamp)


def experiment_rows(
    log: pl.DataFrame, outcomes: pl.DataFrame, spec: PipelineSpec, champion: str, challenger: str, since: datetime
) -> pl.DataFrame:
    """One row per answered request of the experiment whose label (or outcome) arrived: request_id, entity,
    challenger, arrived_at, value; in the order the labels arrived (then by request id), which fixes the looks."""
    where, keys = outcome_columns(spec)
    try:
        known = outcomes_by_request(outcomes, *keys, where)
    except ShadowError as exc:
        raise ABError(str(exc)) from None
    answers = answered_by(log, champion, challenger, since)
    for column in ("label", "probabilities"):  # logs written before multiclass existed lack them
        if column not in answers.columns:
            answers = answers.with_columns(pl.lit(None, pl.String).alias(column))
    joined = answers.select("request_id", "entity", "challenger", "score", "label", "probabilities").join(
        known, on="request_id", how="inner"
    )
    valued = per_request_values(joined, spec).filter(pl.col("value").is_finite())  # a NaN outcome is no outcome
    return valued.sort(["arrived_at", "request_id"]).select("request_id", "entity", "challenger", "arrived_at", "value")


@dataclass(frozen=True)
class ABResult:
    decision: ABDecision
    reason: str  # one sentence a person acts on
    champion: VariantSummary | None
    challenger: VariantSummary | None
    improvement: float | None  # the challenger's improvement on the champion (metric units, sign: better > 0)
    improvement_ci: tuple[float, float] | None  # 1 - alpha, on all rows so far, as if this were the only look
    nominal_p_value: float | None  # the same, fixed-sample: not a decision rule under repeated looks
    p_value: float | None  # stage-wise sequential p-value, once the test has ended
    repeated_ci: tuple[float, float] | None  # at the latest look: valid whatever the looks (Jennison & Turnbull ch. 9)
    planned_rows: float | None  # labelled rows the last look needs, at the variances estimated so far
    information_fraction: float  # progress: the information so far over what the last look needs
    looks: list[dict[str, float | int | bool]]


def analyse(rows: pl.DataFrame, plan: Design, share: float, higher_is_better: bool) -> ABResult:
    """The sequential test on an experiment's rows (`experiment_rows`): per variant, the difference, progress and
    the decision."""
    counts = rows.group_by("challenger").agg(pl.col("entity").n_unique()) if rows.height else None
    entities = dict(counts.iter_rows()) if counts is not None else {}
    if min(entities.get(False, 0), entities.get(True, 0)) < 2:
        reason = (
            "no labelled predictions of the experiment's versions yet"
            if not rows.height
            else f"labelled predictions from {entities.get(False, 0)} entities answered by the champion and "
            f"{entities.get(True, 0)} by the challenger: too few to estimate a variance"
        )
        return ABResult(ABDecision.KEEP_COLLECTING, reason, None, None, None, None, None, None, None, None, 0.0, [])
    values = rows.get_column("value").to_numpy().astype(float)
    challenger = rows.get_column("challenger").to_numpy().astype(bool)
    _, codes = np.unique(rows.get_column("entity").to_numpy().astype(str), return_inverse=True)
    prefix = prefixes(values, challenger, *entity_priors(codes, values))
    looks = sequential_test(prefix, plan, higher_is_better)
    information = prefix.information()
    difference = prefix.difference(higher_is_better)
    champion_summary, challenger_summary = summary(prefix, 0, plan.alpha), summary(prefix, 1, plan.alpha)
    se = math.sqrt(prefix.variances[0][-1] + prefix.variances[1][-1])
    improvement = float(difference[-1])
    half = stats.norm.isf(plan.alpha / 2) * se
    table: list[dict[str, float | int | bool]] = []
    for k, row in enumerate(looks.rows):
        if row < 0:
            break
        table.append(
            {
                "look": k + 1,
                "rows": int(row) + 1,
                "information_fraction": round(float(information[row] / plan.max_information), 4),
                "z": round(float(looks.z[k]), 4),
                "boundary": round(plan.boundaries[k], 4),
                "crossed": bool(abs(looks.z[k]) >= plan.boundaries[k]),
            }
        )
    decision = ABDecision(str(looks.decisions))
    ended = int(looks.decided_at)
    p_value = stagewise_p_value(plan, ended, float(looks.z[ended])) if ended >= 0 else None
    repeated = None
    if table:
        last = table[-1]
        at = int(last["rows"]) - 1
        width = plan.boundaries[len(table) - 1] / math.sqrt(information[at])
        repeated = (float(difference[at] - width), float(difference[at] + width))
    planned = float(plan.rows_needed(champion_summary.variance_per_row, challenger_summary.variance_per_row, share))
    progress = float(information[-1] / plan.max_information)
    return ABResult(
        decision,
        _reason(decision, table, ended, progress, rows.height, planned),
        champion_summary,
        challenger_summary,
        improvement,
        (improvement - half, improvement + half),
        float(2 * stats.norm.sf(abs(improvement) / se)) if se > 0 else None,
        p_value,
        repeated,
        planned,
        progress,
        table,
    )


def _reason(
    decision: ABDecision,
    looks: list[dict[str, float | int | bool]],
    ended: int,
    progress: float,
    rows: int,
    planned: float,
) -> str:
    if decision is ABDecision.KEEP_COLLECTING:
        return (
            f"keep collecting: {rows} labelled predictions of about {planned:.0f} planned ({progress:.0%} of the "
            f"information the last look needs); {len(looks)} look(s) done, no boundary crossed"
        )
    look = looks[ended]
    where = f"look {look['look']} of {len(looks)} at {look['rows']} rows: z {look['z']}, boundary {look['boundary']}"
    if decision is ABDecision.NO_DIFFERENCE:
        return f"no difference at the planned power: every look done without a crossing ({where})"
    who = "the challenger" if decision is ABDecision.CHALLENGER_WINS else "the champion"
    return f"{who} is better ({where})"
