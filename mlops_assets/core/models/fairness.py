"""Fairness guards of the promotion gate: a metric's gap between the groups of a protected attribute, on the holdout.

The groups are measured by the same per-value code as the slices (`modeling.group_metrics`). The rule: a group with
fewer holdout rows than the guard's `min_group_rows`, or where its metric is undefined (recall in a group without
positives, say), is reported but does not count; the gap is the best counted group's metric minus the worst's, and
fails the gate above `max_gap`. Fewer than two counted groups measure no gap: reported, not failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlops_assets.core.markdown import markdown_table
from mlops_assets.core.models.modeling import Evaluation, GateDecision, ModelError
from mlops_assets.spec import FairnessGuard, PipelineSpec


def fairness_groups(spec: PipelineSpec, columns: Sequence[str]) -> dict[str, list[str]]:
    """Each protected attribute and the metrics its groups are measured with; an attribute that is not a column of
    the training set (whose `columns` are given) is an error naming the guard and the columns there are."""
    if spec.promotion is None:
        return {}
    groups: dict[str, list[str]] = {}
    for i, guard in enumerate(spec.promotion.fairness):
        if guard.attribute not in columns:
            raise ModelError(
                f"promotion.fairness[{i}].attribute: {guard.attribute!r} is not a column of the training set "
                f"(its columns: {', '.join(columns)}); a column of the label source is carried into it once "
                "declared: materialize the training set again, then the candidate"
            )
        metrics = groups.setdefault(guard.attribute, [])
        if guard.metric not in metrics:
            metrics.append(guard.metric)
    return groups


@dataclass(frozen=True)
class GuardResult:
    """One guard on one evaluation: every group's rows and metric, which of them count, and the gap between them."""

    guard: FairnessGuard
    where: str  # the guard's place in the spec: promotion.fairness[i]
    groups: dict[str, tuple[int, float | None]]  # group -> (holdout rows, metric or None when undefined)
    counted: list[str]
    gap: float | None  # None: fewer than two groups count

    @property
    def passed(self) -> bool:
        return self.gap is None or self.gap <= self.guard.max_gap

    def reason(self) -> str:
        guard = self.guard
        name = f"fairness {guard.metric} by {guard.attribute!r}"
        if self.gap is None:
            return (
                f"{name}: not measured, fewer than two groups with at least {guard.min_group_rows} rows and a defined "
                f"{guard.metric} ({self._shown(self.groups)})"
            )
        verdict = "within" if self.passed else "over"
        counted = self._shown({g: self.groups[g] for g in self.counted})
        return f"{name}: gap {self.gap:.4f} {verdict} the limit {guard.max_gap} ({counted})"

    def _shown(self, groups: dict[str, tuple[int, float | None]]) -> str:
        return ", ".join(
            f"{g}: {'undefined' if v is None else f'{v:.4f}'} on {rows} rows" for g, (rows, v) in groups.items()
        )


def fairness_results(evaluation: Evaluation, guards: Sequence[FairnessGuard]) -> list[GuardResult]:
    """Each guard judged on an evaluation measured with `fairness_groups` (see the module's rule)."""
    results = []
    for i, guard in enumerate(guards):
        measured = evaluation.groups.get(guard.attribute, {})
        groups = {name: (int(values["rows"] or 0), values.get(guard.metric)) for name, values in measured.items()}
        counted = [name for name, (rows, v) in groups.items() if v is not None and rows >= guard.min_group_rows]
        values = [v for name in counted if (v := groups[name][1]) is not None]
        gap = max(values) - min(values) if len(values) >= 2 else None
        results.append(GuardResult(guard, f"promotion.fairness[{i}]", groups, counted, gap))
    return results


def fairness_decision(results: Sequence[GuardResult]) -> GateDecision:
    return GateDecision(all(r.passed for r in results), [r.reason() for r in results])


def fairness_rows(results: Sequence[GuardResult]) -> list[dict[str, str]]:
    """The card's table: one row per guard and group, with its holdout rows, metric and whether it counts."""
    rows = []
    for result in results:
        guard = result.guard
        for name, (size, value) in result.groups.items():
            if name in result.counted:
                status = "counted"
            elif value is None:
                status = "not counted: undefined"
            else:
                status = f"not counted: under {guard.min_group_rows} rows"
            rows.append(
                {
                    "attribute": guard.attribute,
                    "group": name,
                    "holdout rows": str(size),
                    "metric": guard.metric,
                    "value": "undefined" if value is None else f"{value:.4f}",
                    "status": status,
                }
            )
    return rows


def gap_rows(results: Sequence[GuardResult]) -> list[dict[str, str]]:
    """One row per guard: its gap against its limit."""
    return [
        {
            "attribute": r.guard.attribute,
            "metric": r.guard.metric,
            "gap": "not measured" if r.gap is None else f"{r.gap:.4f}",
            "max gap": f"{r.guard.max_gap}",
            "counted groups": str(len(r.counted)),
            "verdict": "passed" if r.passed else "failed",
        }
        for r in results
    ]


def fairness_section(results: Sequence[GuardResult]) -> list[str]:
    """The card's fairness section: each guard's gap against its limit, then every group's size and metric."""
    if not results:
        return []
    return [
        "## Fairness",
        "Each protected attribute's groups on the holdout. A group with fewer rows than the guard's minimum, or whose "
        "metric is undefined there, is shown but not counted; the gap is between the best and the worst counted group.",
        "",
        markdown_table(gap_rows(results)),
        "",
        markdown_table(fairness_rows(results)),
        "",
    ]
