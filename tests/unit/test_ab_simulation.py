"""The A/B test's statistics simulated over many seeds at once (pure numpy): with a true effect of the declared size
it decides "challenger wins" with the planned power by the planned sample; with none, it declares a winner in at most
alpha of the seeds. Tolerances are Monte-Carlo errors computed from the number of seeds, never tuned."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlops_assets.core.monitoring.ab import (
    ABDecision,
    crossing_probabilities,
    design,
    entity_priors,
    prefixes,
    sequential_test,
)

SEEDS = 2000
ALPHA, POWER, LOOKS = 0.05, 0.8, 5


def mc_tolerance(p: float, seeds: int = SEEDS) -> float:
    """Three standard errors of a share estimated from `seeds` independent runs."""
    return 3 * math.sqrt(p * (1 - p) / seeds)


CHUNK = 250  # seeds simulated at once: memory stays small whatever the sample


def _binary(effect: float, rows: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """0/1 outcomes (a rate of 0.5 for the champion, 0.5 + effect for the challenger), rows in arrival order."""
    challenger = rng.random((CHUNK, rows)) < share
    values = (rng.random((CHUNK, rows)) < np.where(challenger, 0.5 + effect, 0.5)).astype(float)
    return values, challenger


def _absolute_errors(effect: float, rows: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Skewed per-request losses, lower is better: absolute errors |N(0, 1)| (mean 0.80, variance 1 - 2/pi); the
    challenger's are smaller by `effect`."""
    challenger = rng.random((CHUNK, rows)) < share
    values = np.abs(rng.normal(0.0, 1.0, (CHUNK, rows))) - np.where(challenger, effect, 0.0)
    return values, challenger


HALF_NORMAL_VARIANCE = 1 - 2 / math.pi
CASES = {
    # name: (simulate, effect, per-row variance of champion and challenger under the effect, higher is better, share)
    "binary rate": (_binary, 0.1, (0.25, 0.24), True, 0.5),
    "skewed loss, unequal split": (_absolute_errors, 0.08, (HALF_NORMAL_VARIANCE,) * 2, False, 0.3),
}


def _run(case: str, effect: float, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SEEDS tests of `rows` rows each: their decisions, the row of each look (-1: not reached) and the look that
    decided."""
    simulate, _, _, higher, share = CASES[case]
    plan = design(CASES[case][1], ALPHA, POWER, LOOKS)
    rng = np.random.default_rng(seed)
    decisions, rows_at, decided_at = [], [], []
    for _ in range(SEEDS // CHUNK):
        looks = sequential_test(prefixes(*simulate(effect, rows, share, rng)), plan, higher_is_better=higher)
        decisions.append(looks.decisions)
        rows_at.append(looks.rows)
        decided_at.append(looks.decided_at)
    return np.concatenate(decisions), np.concatenate(rows_at), np.concatenate(decided_at)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_true_effect_of_the_declared_size_wins_with_the_planned_power_by_the_planned_sample(case: str) -> None:
    _, effect, (v0, v1), _, share = CASES[case]
    plan = design(effect, ALPHA, POWER, LOOKS)
    planned = plan.rows_needed(v0, v1, share)
    decisions, rows_at, decided_at = _run(case, effect, math.ceil(1.3 * planned), seed=7)
    assert (rows_at[:, -1] >= 0).all()  # every seed reached its last look within 1.3x the plan
    # About the planned sample: the last look's mean row is the plan's within 1% (the plan is a normal approximation
    # with estimated variances) plus the Monte-Carlo error of that mean (3 standard errors).
    last = rows_at[:, -1] + 1
    tolerance = 0.01 * planned + 3 * last.std() / math.sqrt(SEEDS)
    assert abs(last.mean() - planned) <= tolerance, (last.mean(), planned, tolerance)
    # By then the challenger has won in `power` of the seeds, within the Monte-Carlo error: neither fewer nor more.
    wins = (decisions == ABDecision.CHALLENGER_WINS).mean()
    assert abs(wins - POWER) <= mc_tolerance(POWER), wins
    # The wrong winner: as rare as the design says (its chance of a downward crossing), within one seed's error.
    theta = effect * math.sqrt(plan.max_information)
    wrong = float(crossing_probabilities(plan.boundaries, theta)[1].sum())
    assert (decisions == ABDecision.CHAMPION_WINS).mean() <= wrong + mc_tolerance(1 / SEEDS)
    # A decided test decided at a look, never later than its last one; most winners stopped early.
    decided = decided_at >= 0
    assert (np.take_along_axis(rows_at, decided_at[:, None], axis=1)[decided, 0] <= last[decided]).all()
    assert np.median(decided_at[decisions == ABDecision.CHALLENGER_WINS]) < LOOKS - 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_without_a_true_effect_a_winner_is_declared_in_at_most_alpha_of_the_seeds(case: str) -> None:
    _, effect, (v0, _), _, share = CASES[case]
    planned = design(effect, ALPHA, POWER, LOOKS).rows_needed(v0, v0, share)
    decisions, rows_at, decided_at = _run(case, 0.0, math.ceil(1.3 * planned), seed=11)
    winners = np.isin(decisions, [ABDecision.CHALLENGER_WINS, ABDecision.CHAMPION_WINS]).mean()
    assert winners <= ALPHA + mc_tolerance(ALPHA), winners
    assert (rows_at[:, -1] >= 0).all() and (decided_at >= 0).all()  # every test ended: a winner or no difference
    assert set(np.unique(decisions)) <= {ABDecision.NO_DIFFERENCE, ABDecision.CHALLENGER_WINS, "champion_wins"}


def test_looking_every_day_does_not_add_looks() -> None:
    """The test on the first n rows, for every n (a daily look), decides what the planned looks decide: a look is a
    step of information reached, not a time someone looked."""
    plan = design(0.1, ALPHA, POWER, LOOKS)
    rng = np.random.default_rng(3)
    values, challenger = _binary(0.0, math.ceil(1.3 * plan.rows_needed(0.25, 0.25, 0.5)), 0.5, rng)
    full = sequential_test(prefixes(values, challenger), plan)
    for day_end in range(100, values.shape[1], 100):  # every 100 rows is a day
        so_far = sequential_test(prefixes(values[:, :day_end], challenger[:, :day_end]), plan)
        reached = so_far.rows >= 0
        assert (so_far.rows[reached] == full.rows[reached]).all()
        decided = so_far.decided_at >= 0
        assert (so_far.decisions[decided] == full.decisions[decided]).all()


def test_requests_of_one_entity_are_not_counted_as_independent_evidence() -> None:
    """Entities with many requests and a rate of their own (sticky assignment): under no difference, a winner in at
    most alpha of the seeds, because variances are over entities; rows counted as independent would not hold it."""
    plan = design(0.1, ALPHA, POWER, LOOKS)
    rng = np.random.default_rng(5)
    seeds, entities_n, per_entity = 1000, 400, 16
    winners = {"entities": 0, "rows": 0}
    for _ in range(seeds // CHUNK):
        entity = rng.integers(0, entities_n, entities_n * per_entity)  # who sent each request, in arrival order
        shape = (CHUNK, entity.size)
        assigned = rng.random((CHUNK, entities_n)) < 0.5  # sticky: one variant per entity
        challenger = np.take_along_axis(assigned, np.broadcast_to(entity, shape), axis=1)
        propensity = np.clip(rng.normal(0.5, 0.25, (CHUNK, entities_n)), 0, 1)  # each entity's own rate
        values = (rng.random(shape) < np.take_along_axis(propensity, np.broadcast_to(entity, shape), axis=1)) * 1.0
        for name, prefix in (
            ("entities", prefixes(values, challenger, *entity_priors(entity, values))),
            ("rows", prefixes(values, challenger)),
        ):
            looks = sequential_test(prefix, plan)
            assert (looks.rows[:, -1] >= 0).all()  # every test ended
            winners[name] += int(np.isin(looks.decisions, ["challenger_wins", "champion_wins"]).sum())
    assert winners["entities"] / seeds <= ALPHA + mc_tolerance(ALPHA, seeds)
    assert winners["rows"] / seeds > ALPHA + mc_tolerance(ALPHA, seeds)  # what the entity-level variance prevents
