"""The checks of the scores table, declared on it: rows against the population, nulls, the batch's prediction drift."""

import dagster as dg

from mlops_assets.core.monitoring.grading import CheckVerdict

SCORED_ROWS = "scored_rows"
SCORE_NULLS = "score_nulls"
SCORE_DRIFT = "score_drift"

CHECKS = {
    SCORED_ROWS: "The day's partition has one row per member of the population (fails when they differ, warns when "
    "the population is empty).",
    SCORE_NULLS: "No row without a score (fails); a view whose features were unusable for more than its "
    "max_unusable_share of the rows warns.",
    SCORE_DRIFT: "The day's scores against the champion's scores on its holdout: KS and PSI graded by "
    "monitoring.prediction_drift (above the floor and the noise at this size).",
}


def check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=key, description=text) for name, text in CHECKS.items()]


def check_result(name: str, verdict: CheckVerdict) -> dg.AssetCheckResult:
    """A verdict as a check result: passed when ok, its level as the severity, its evidence as metadata."""
    metadata: dict[str, dg.RawMetadataValue] = {
        k: dg.MetadataValue.md(str(v)) if k.endswith("_table") else v if isinstance(v, int | float | str) else str(v)
        for k, v in verdict.evidence.items()
    }
    return dg.AssetCheckResult(
        check_name=name,
        passed=verdict.level == "ok",
        severity=dg.AssetCheckSeverity.ERROR if verdict.level == "error" else dg.AssetCheckSeverity.WARN,
        description=verdict.description,
        metadata=metadata,
    )
