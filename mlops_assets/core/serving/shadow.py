"""Champion and challenger compared on live traffic: logged predictions joined to the labels that came later.

Every logged prediction with a shadow score carries both models' scores for the same request and feature vector
(whichever answered); once its label arrives (joined on `label.request_id`), both are evaluated on exactly the same
rows and the promotion gate of the models stage decides, as it does for a freshly trained candidate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

import polars as pl

from mlops_assets.core.models.modeling import (
    Evaluation,
    GateDecision,
    ModelError,
    evaluate_scores,
    promotion_gate,
    targets,
)
from mlops_assets.core.serving.prediction_log import logged_outputs
from mlops_assets.spec import PipelineSpec


class ShadowOutcome(StrEnum):
    """What a shadow comparison decided: the one word the CLI and the demo act on (recorded on the gate's check)."""

    WON = "won"  # the challenger passed the promotion gate against the champion on labelled live traffic
    LOST = "lost"  # it did not: it stays challenger
    WAITING_FOR_LABELS = "waiting_for_labels"  # too few labelled predictions scored by both yet
    CANNOT_COMPARE = "cannot_compare"  # no request id to join labels by, or metrics that cannot be computed


class ShadowError(ValueError):
    """A comparison that cannot be made (no challenger, no request id in the labels, too few labelled rows)."""


class TooFewLabels(ShadowError):
    """Not enough labelled predictions scored by both models yet: a comparison later may be made."""

    def __init__(self, message: str, rows: int, needed: int) -> None:
        super().__init__(message)
        self.rows, self.needed = rows, needed


@dataclass(frozen=True)
class ShadowComparison:
    champion_version: str
    challenger_version: str
    rows: int
    champion: Evaluation
    challenger: Evaluation
    decision: GateDecision


def outcomes_by_request(frame: pl.DataFrame, request_id: str, column: str, timestamp: str, where: str) -> pl.DataFrame:
    """request_id -> outcome and when it arrived (`arrived_at`), from a source's rows: the latest arrival of a
    request wins (ties: the later row); a null is not an outcome yet. `where` names the source in errors."""
    missing = [c for c in (request_id, column, timestamp) if c not in frame.columns]
    if missing:
        raise ShadowError(f"{where}: the table has no column {missing} (its columns: {sorted(frame.columns)})")
    return (
        frame.select(
            pl.col(request_id).cast(pl.String).alias("request_id"),
            pl.col(column).alias("outcome"),
            pl.col(timestamp).alias("arrived_at"),
        )
        .filter(pl.col("outcome").is_not_null())
        .sort("arrived_at", maintain_order=True)
        .unique("request_id", keep="last", maintain_order=True)
    )


def labels_by_request(labels: pl.DataFrame, spec: PipelineSpec) -> pl.DataFrame:
    """request_id -> label, from the label source (the latest label of a request wins; rows without a label value
    are not labels yet)."""
    if spec.label.request_id is None:
        raise ShadowError("label.request_id is not declared: logged predictions cannot be joined to their labels")
    where = f"label (source {spec.label.source!r})"
    known = outcomes_by_request(labels, spec.label.request_id, spec.label.column, spec.label.timestamp, where)
    return known.select("request_id", pl.col("outcome").alias("label"))


def paired_scores(
    log: pl.DataFrame, labels: pl.DataFrame, spec: PipelineSpec, champion: str, challenger: str
) -> pl.DataFrame:
    """One row per labelled request scored by both versions: label, each version's score and (multiclass)
    probabilities, slice."""
    versions = pl.col("model_version"), pl.col("shadow_version")

    def of(version: str, answered: str, shadow: str) -> pl.Expr:
        return pl.when(versions[0] == version).then(pl.col(answered)).when(versions[1] == version).then(pl.col(shadow))

    for column in ("probabilities", "shadow_probabilities"):  # logs written before multiclass existed lack them
        if column not in log.columns:
            log = log.with_columns(pl.lit(None, pl.String).alias(column))
    paired = (
        log.filter(pl.col("shadow_score").is_not_null())
        .with_columns(
            of(champion, "score", "shadow_score").alias("champion_score"),
            of(challenger, "score", "shadow_score").alias("challenger_score"),
            of(champion, "probabilities", "shadow_probabilities").alias("champion_probabilities"),
            of(challenger, "probabilities", "shadow_probabilities").alias("challenger_probabilities"),
        )
        .drop_nulls(["champion_score", "challenger_score"])
        .unique("request_id", keep="first", maintain_order=True)
    )
    columns = ["champion_score", "challenger_score", "champion_probabilities", "challenger_probabilities"]
    # The log's own `label` (a multiclass answer) is not the outcome: only the label source's is joined.
    joined = paired.select("request_id", "request", *columns).join(
        labels_by_request(labels, spec), on="request_id", how="inner"
    )
    slice_by = spec.model.slice_by if spec.model else None
    slices = [json.loads(r).get(slice_by) if slice_by else None for r in joined.get_column("request")]
    return joined.select("request_id", "label", *columns).with_columns(pl.Series("slice", slices, dtype=pl.String))


def compare(
    spec: PipelineSpec, log: pl.DataFrame, labels: pl.DataFrame, champion: str, challenger: str, min_rows: int = 200
) -> ShadowComparison:
    """Both versions evaluated on the same labelled live requests, and the promotion gate's verdict."""
    assert spec.model is not None and spec.promotion is not None
    rows = paired_scores(log, labels, spec, champion, challenger)
    if rows.height < min_rows:
        raise TooFewLabels(
            f"only {rows.height} logged predictions scored by both version {champion} and version {challenger} "
            f"have a label yet; at least {min_rows} are needed to compare them",
            rows.height,
            min_rows,
        )
    task = spec.model.task
    slices = rows.get_column("slice") if spec.model.slice_by else None
    try:
        y = targets(rows.get_column("label"), task)
        evaluations = [
            evaluate_scores(y, logged_outputs(rows, task, f"{side}_score", f"{side}_probabilities"), slices, spec.model)
            for side in ("champion", "challenger")
        ]
    except ModelError as exc:
        raise ShadowError(f"the {rows.height} labelled shadow predictions cannot be compared: {exc}") from exc
    decision = promotion_gate(evaluations[1], evaluations[0], spec.promotion)
    return ShadowComparison(champion, challenger, rows.height, evaluations[0], evaluations[1], decision)
