"""Grading a window: offline drift table by table, with the evidence a person acts on."""

import numpy as np
import polars as pl

from mlops_assets.monitoring import offline_stats, offline_verdict, out_of_range
from mlops_assets.spec import MonitoringSpec


def _tables(shift: float, rows: int = 3000, seed: int = 0) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    return {
        "customer_spend": pl.DataFrame(
            {"amount_sum_1d": rng.gamma(2.0, 50.0, rows) * shift, "count_1d": rng.poisson(3, rows)}
        ),
        "raw_transactions": pl.DataFrame(
            {"channel": rng.choice(["online", "pos", "atm"], rows), "amount": rng.gamma(2, 40, rows)}
        ),
    }


def test_offline_features_are_compared_table_by_table_and_the_mover_is_named() -> None:
    monitoring = MonitoringSpec()
    same = offline_stats(_tables(1.0), _tables(1.0, seed=1), monitoring)
    assert set(same.get_column("feature")) == {"amount_sum_1d", "count_1d", "channel", "amount"}
    assert set(same.get_column("source")) == {"offline"}
    assert offline_verdict("2026-03-01", same, monitoring).level == "ok"
    moved = offline_stats(_tables(1.0), _tables(2.0, seed=1), monitoring)
    verdict = offline_verdict("2026-03-01", moved, monitoring)
    assert verdict.level == "error" and "amount_sum_1d" in verdict.description
    assert verdict.evidence["features"] == ["amount_sum_1d"]


def test_an_offline_window_without_rows_is_not_graded() -> None:
    monitoring = MonitoringSpec()
    empty = {name: frame.head(0) for name, frame in _tables(1.0).items()}
    verdict = offline_verdict("2026-03-01", offline_stats(_tables(1.0), empty, monitoring), monitoring)
    assert verdict.level == "warn" and "0 offline feature rows" in verdict.description


def test_values_outside_the_training_range_are_counted_per_feature() -> None:
    reference = pl.DataFrame({"amount": [1.0, 5.0, 10.0], "count_1d": [0, 2, 4]})
    current = pl.DataFrame({"amount": [0.5, 5.0, 11.0, None], "count_1d": [1, 2, 3, 4]})
    assert out_of_range(reference, current, ["amount", "count_1d"]) == {"amount": 2 / 3, "count_1d": 0.0}
    assert out_of_range(reference.head(0), current, ["amount"]) == {}
