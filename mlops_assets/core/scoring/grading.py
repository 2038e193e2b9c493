"""What the scores' checks measure: rows written against the population, nulls, and the day's score distribution
against the champion's scores on its holdout (prediction drift of the batch)."""

from __future__ import annotations

from mlops_assets.core.markdown import markdown_table
from mlops_assets.core.models.modeling import Outputs
from mlops_assets.core.monitoring.drift import thresholds_of
from mlops_assets.core.monitoring.grading import CheckVerdict, distribution_level, output_stats, worst
from mlops_assets.core.scoring.batch import ScoredDay
from mlops_assets.spec import PipelineSpec


def rows_verdict(result: ScoredDay, written: int) -> CheckVerdict:
    """Every member of the population has one row in the day's partition: `written` (read back) equals the
    population's rows; an empty population warns (nothing to score is rarely what was meant)."""
    evidence = {"population_rows": result.population_rows, "written_rows": written, "day": result.day.isoformat()}
    if written != result.population_rows:
        words = f"{written} rows written for a population of {result.population_rows} on {result.day}"
        return CheckVerdict("error", words, evidence)
    if not written:
        return CheckVerdict("warn", f"the population of {result.day} is empty: nothing was scored", evidence)
    return CheckVerdict("ok", f"{written} rows scored, the whole population of {result.day}", evidence)


def nulls_verdict(spec: PipelineSpec, result: ScoredDay) -> CheckVerdict:
    """No score may be missing (error); a view whose features were unusable (none, or past the TTL) for more than
    its `max_unusable_share` of the rows warns: those rows were scored on imputed values."""
    rows = result.rows
    shares = {view: (n / rows if rows else 0.0) for view, n in result.without_features.items()}
    table = [
        {
            "feature_view": view,
            "rows_without_features": result.without_features[view],
            "share": round(share, 4),
            "max_unusable_share": spec.feature_views[view].max_unusable_share,
        }
        for view, share in shares.items()
    ]
    evidence: dict[str, object] = {
        "rows": rows,
        "null_scores": result.null_scores,
        **{f"without_features/{view}": share for view, share in shares.items()},
        "views_table": markdown_table(table),
    }
    if result.null_scores:
        return CheckVerdict("error", f"{result.null_scores} of {rows} rows have no score", evidence)
    limits = {view: spec.feature_views[view].max_unusable_share for view in shares}
    over = {view: share for view, share in shares.items() if share > limits[view]}
    if over:
        listed = ", ".join(f"{view} {share:.1%} (max {limits[view]:.0%})" for view, share in over.items())
        words = f"rows scored without a view's features (none, or past its TTL; imputed): {listed}"
        return CheckVerdict("warn", words, evidence)
    return CheckVerdict("ok", f"every one of the {rows} rows has a score", evidence)


def drift_verdict(spec: PipelineSpec, reference: Outputs, current: Outputs) -> CheckVerdict:
    """The day's outputs (a uniform sample of them) against the champion's outputs on its holdout: KS and PSI of the
    score (each class's probability and the predicted class, multiclass), graded by `monitoring.prediction_drift`
    floors and their noise at this size; fewer than `monitoring.min_rows` rows are reported, not graded."""
    monitoring = spec.monitoring
    stats = output_stats(reference, current, monitoring.psi_bins)
    levels = [distribution_level(s, monitoring.prediction_drift) for s in stats]
    limits = [thresholds_of(s, monitoring.prediction_drift) for s in stats]
    rows = [
        {
            "output": s.feature,
            "ks": None if s.ks is None else round(s.ks, 4),
            "psi": None if s.psi is None else round(s.psi, 4),
            "ks_warn_error": [round(v, 4) for v in limit["ks"]],
            "psi_warn_error": [round(v, 4) for v in limit["psi"]],
            "level": level,
        }
        for s, limit, level in zip(stats, limits, levels, strict=True)
    ]
    evidence: dict[str, object] = {
        "reference_rows": len(reference),
        "current_rows": len(current),
        "outputs_table": markdown_table(rows),
        **{f"ks/{s.feature}": s.ks for s in stats if s.ks is not None},
        **{f"psi/{s.feature}": s.psi for s in stats if s.psi is not None},
    }
    if len(current) < monitoring.min_rows:
        words = f"{len(current)} scores, fewer than monitoring.min_rows ({monitoring.min_rows}): reported, not graded"
        return CheckVerdict("ok", words, evidence)
    level = worst(levels)
    drifted = [r["output"] for r in rows if r["level"] == level]
    if level == "ok":
        return CheckVerdict("ok", "the scores are distributed as the champion's holdout scores", evidence)
    words = f"the scores drifted from the champion's holdout scores ({level}): {', '.join(map(str, drifted))}"
    return CheckVerdict(level, words, evidence)
