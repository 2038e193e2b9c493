"""The retraining policy: sustained evidence, cooldown, weekly cap, once per evidence."""

from datetime import datetime, timedelta

import pytest

from mlops_assets.core.monitoring.retraining import WindowVerdict, decide
from mlops_assets.spec import RetrainingPolicy

NOW = datetime(2026, 3, 10, 6)
POLICY = RetrainingPolicy(sustained_k=2, sustained_n=3, cooldown="3d", max_per_week=2)


def _windows(*failed: bool) -> list[WindowVerdict]:
    return [
        WindowVerdict(
            f"2026-03-{i + 1:02d}", ["dataset_drift"] if f else [], {"dataset_drift": "40% drifted"} if f else {}
        )
        for i, f in enumerate(failed)
    ]


def test_a_single_noisy_window_does_not_retrain() -> None:
    decision = decide(_windows(False, False, True), POLICY, [], NOW, set())
    assert not decision.retrain and "1 of the last 3 windows failed; 2 of 3 are needed" in decision.explanation


def test_k_of_n_retrains_once_with_its_evidence() -> None:
    decision = decide(_windows(False, True, False, True), POLICY, [], NOW, set())
    assert decision.retrain and decision.reason == "drift"
    assert decision.evidence_key == "drift:2026-03-04:2026-03-02,2026-03-04"
    tags = decision.tags()
    assert tags["mlops/retrain_windows"] == "2026-03-02,2026-03-04"
    assert tags["mlops/retrain_checks"] == "dataset_drift" and "40% drifted" in tags["mlops/retrain_details"]
    again = decide(_windows(False, True, False, True), POLICY, [], NOW, {decision.evidence_key})
    assert not again.retrain and "already acted on this evidence" in again.explanation


def test_old_failures_outside_the_last_n_windows_do_not_count() -> None:
    assert not decide(_windows(True, True, False, False, True), POLICY, [], NOW, set()).retrain


def test_no_retraining_during_the_cooldown() -> None:
    decision = decide(_windows(True, True, True), POLICY, [NOW - timedelta(days=2)], NOW, set())
    assert not decision.retrain and "within the cooldown of 3d" in decision.explanation
    assert decide(_windows(True, True, True), POLICY, [NOW - timedelta(days=3)], NOW, set()).retrain


def test_the_weekly_cap_holds() -> None:
    policy = POLICY.model_copy(update={"cooldown": "1h"})
    twice = [NOW - timedelta(days=6), NOW - timedelta(days=1)]
    decision = decide(_windows(True, True, True), policy, twice, NOW, set())
    assert not decision.retrain and "reach the cap of 2" in decision.explanation
    assert decide(_windows(True, True, True), policy, [NOW - timedelta(days=8), twice[1]], NOW, set()).retrain


def test_k_cannot_exceed_n() -> None:
    with pytest.raises(ValueError, match="sustained_k"):
        RetrainingPolicy(sustained_k=4, sustained_n=3)


def test_a_challenger_waiting_for_its_shadow_comparison_holds_retraining_back_up_to_its_patience() -> None:
    waiting = ("7", NOW - timedelta(days=6))
    decision = decide(_windows(True, True, True), POLICY, [], NOW, set(), challenger=waiting)
    assert not decision.retrain and "version 7 is challenger since" in decision.explanation
    assert "up to 7d" in decision.explanation
    assert decide(_windows(True, True, True), POLICY, [], NOW, set(), challenger=("7", NOW - timedelta(days=7))).retrain
