"""When to retrain: sustained evidence (k failing windows of the last n), a cooldown and a weekly cap.

Plain functions over check verdicts and past retraining times, so the policy is tested without Dagster; the
retraining sensor feeds them what the Dagster instance recorded and keeps the evidence it acted on in its cursor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from mlops_assets.spec import RetrainingPolicy, parse_duration

Reason = Literal["drift", "performance"]
# The prefix of every run tag the framework sets (`mlops/retrain_reason`, `mlops/promotion`, ...).
TAG_PREFIX = "mlops/"


@dataclass(frozen=True)
class WindowVerdict:
    """What the checks said about one window (a daily partition of the drift report)."""

    window: str
    failed_checks: list[str]
    evidence: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.failed_checks)


@dataclass(frozen=True)
class Decision:
    retrain: bool
    explanation: str
    reason: Reason | None = None
    evidence_key: str | None = None
    windows: list[WindowVerdict] = field(default_factory=list)

    def tags(self, prefix: str = TAG_PREFIX) -> dict[str, str]:
        """Run tags recording why (Dagster tag values are strings of limited length)."""
        failing = [w for w in self.windows if w.failed]
        return {
            f"{prefix}retrain_reason": self.reason or "",
            f"{prefix}retrain_evidence": self.evidence_key or "",
            f"{prefix}retrain_windows": ",".join(w.window for w in failing),
            f"{prefix}retrain_checks": ",".join(sorted({c for w in failing for c in w.failed_checks})),
            f"{prefix}retrain_explanation": self.explanation[:1000],
            f"{prefix}retrain_details": json.dumps({w.window: w.evidence for w in failing}, sort_keys=True)[:4000],
        }


def decide(
    verdicts: Sequence[WindowVerdict],
    policy: RetrainingPolicy,
    retrained_at: Sequence[datetime],
    now: datetime,
    acted_on: set[str],
    reason: Reason = "drift",
    challenger: tuple[str, datetime] | None = None,
) -> Decision:
    """Retrain when k of the last n windows failed, not during the cooldown, under the weekly cap, once per evidence,
    and not while a challenger (version, since when) still waits for its shadow comparison, up to its patience.

    `verdicts` are ordered by window; the evidence is identified by the newest window of the last n and the
    windows that failed, so the same failing windows never start two retraining runs.
    """
    recent = list(verdicts)[-policy.sustained_n :]
    failing = [v for v in recent if v.failed]
    if len(failing) < policy.sustained_k:
        return Decision(
            False,
            f"{reason}: {len(failing)} of the last {len(recent)} windows failed; "
            f"{policy.sustained_k} of {policy.sustained_n} are needed",
            windows=recent,
        )
    key = f"{reason}:{recent[-1].window}:" + ",".join(v.window for v in failing)
    if key in acted_on:
        return Decision(False, f"{reason}: already acted on this evidence ({key})", reason, key, recent)
    if challenger is not None and now - challenger[1] < parse_duration(policy.challenger_patience):
        return Decision(
            False,
            f"{reason}: sustained, but version {challenger[0]} is challenger since "
            f"{challenger[1].isoformat(timespec='minutes')} and waits for its shadow comparison (up to "
            f"{policy.challenger_patience})",
            reason,
            key,
            recent,
        )
    cooldown = parse_duration(policy.cooldown)
    last = max(retrained_at, default=None)
    if last is not None and now - last < cooldown:
        return Decision(
            False,
            f"{reason}: sustained, but the last retraining ({last.isoformat(timespec='minutes')}) is within the "
            f"cooldown of {policy.cooldown}",
            reason,
            key,
            recent,
        )
    this_week = [t for t in retrained_at if now - t < timedelta(days=7)]
    if len(this_week) >= policy.max_per_week:
        return Decision(
            False,
            f"{reason}: sustained, but {len(this_week)} retraining runs in the last 7 days reach the cap of "
            f"{policy.max_per_week}",
            reason,
            key,
            recent,
        )
    checks = sorted({c for v in failing for c in v.failed_checks})
    return Decision(
        True,
        f"{reason}: {len(failing)} of the last {len(recent)} windows failed "
        f"({', '.join(v.window for v in failing)}; checks {', '.join(checks)})",
        reason,
        key,
        recent,
    )
