"""Model cards: what a version is for, what it was trained on, how good it is, and how it compares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mlops_assets.core.markdown import html_page, markdown_table
from mlops_assets.core.models.modeling import Evaluation, GateDecision
from mlops_assets.spec import LOWER_IS_BETTER, PipelineSpec

# What a model of each kind answers, and what its permutation importance measures.
ANSWERS = {
    "binary": "the probability that `{label}` is 1 (decision threshold {threshold})",
    "multiclass": "the most probable class of `{label}`, with each class's probability",
    "regression": "a predicted value of `{label}`",
}
IMPORTANCE = {
    "binary": "PR AUC drop when shuffled",
    "multiclass": "log-loss rise when shuffled",
    "regression": "RMSE rise when shuffled",
}


def metrics_rows(candidate: Evaluation, champion: Evaluation | None) -> list[dict[str, str]]:
    """One row per metric: candidate, champion and the change (sign: positive is better)."""
    rows = []
    for name, value in candidate.metrics.items():
        old = champion.metrics.get(name) if champion else None
        change = "" if old is None else f"{(old - value) if name in LOWER_IS_BETTER else (value - old):+.4f}"
        rows.append(
            {
                "metric": name,
                "candidate": f"{value:.4f}",
                "champion": "" if old is None else f"{old:.4f}",
                "better by": change,
            }
        )
    return rows


def render_card(
    spec: PipelineSpec,
    version: str,
    tags: Mapping[str, str],
    candidate: Evaluation,
    champion: Evaluation | None,
    champion_version: str | None,
    importance: Mapping[str, float],
    decision: GateDecision,
    fairness: Sequence[str] = (),
    latency: Sequence[str] = (),
) -> str:
    """A markdown card for one registered version; `fairness` and `latency`: the sections' lines, when measured."""
    assert spec.model is not None and spec.promotion is not None
    model = spec.model
    slices = [
        {"slice": name, **{k: "" if v is None else (f"{v:.4f}" if k != "rows" else v) for k, v in values.items()}}
        for name, values in candidate.slices.items()
    ]
    top = [{"input": k, IMPORTANCE[model.task]: f"{v:.4f}"} for k, v in list(importance.items())[:10]]
    per_class = [
        {"class": name, "recall": f"{values['recall']:.4f}", "holdout rows": int(values["rows"])}
        for name, values in candidate.per_class.items()
    ]
    comparison = (
        f"Compared with champion version {champion_version} on the same frozen holdout:"
        if champion is not None
        else "There was no champion to compare with: this is the first model."
    )
    return "\n".join(
        [
            f"# {spec.name} — model version {version}",
            "",
            "## Intended use",
            spec.description or "(no description in the spec)",
            f"A {model.task} model: for one {spec.entity.name} event it answers "
            + ANSWERS[model.task].format(label=spec.label.column, threshold=model.threshold)
            + f", the label being `{spec.label.column}` of `{spec.label.source}`. "
            f"Owner: {spec.owner or 'not declared'}.",
            "",
            "## Model",
            f"`{model.estimator}` with `{model.params}`, seed {model.seed}; preprocessing "
            f"`{model.preprocessing.model_dump()}`, logged with the estimator as one pipeline.",
            "",
            "## Data",
            f"- training set Delta version {tags.get('training_set_delta_version')}, hash "
            f"`{tags.get('training_set_hash')}`",
            f"- inputs: `{tags.get('input_delta_versions')}`",
            f"- trained on predictions from {tags.get('training_from')} to {tags.get('holdout_cutoff')}; "
            f"holdout: the {model.holdout} after it "
            f"({candidate.rows} labelled predictions)",
            f"- spec `{tags.get('spec_hash')}`, code `{tags.get('git_commit')}`",
            "",
            "## Metrics",
            comparison,
            "",
            markdown_table(metrics_rows(candidate, champion)),
            "",
            *(["### Recall per class", markdown_table(per_class), ""] if per_class else []),
            f"### Per `{model.slice_by}`" if model.slice_by else "### Per slice",
            markdown_table(slices),
            "",
            *fairness,
            *latency,
            "## Most important inputs",
            markdown_table(top),
            "",
            "## Promotion gate",
            f"**{'passed' if decision.passed else 'failed'}** on `{spec.promotion.metric}`:",
            *[f"- {reason}" for reason in decision.reasons],
            "",
            "## Known limitations",
            f"- Evaluated on the most recent {model.holdout} of labelled predictions only: labels arrive late, so "
            "the latest predictions are under-represented until their labels are confirmed.",
            "- Slices with fewer than "
            f"{spec.promotion.min_slice_rows} rows or a single class are not guarded by the gate.",
            "- Trained on historical data: a shift in the input distribution or in the pattern itself "
            "degrades it without notice until labels arrive.",
        ]
    )


def write_card(path: Path, title: str, card: str) -> Path:
    """The card as markdown at `path` and as the HTML page a browser shows beside it; the page's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(card)
    page = path.with_suffix(".html")
    page.write_text(html_page(title, card))
    return page
