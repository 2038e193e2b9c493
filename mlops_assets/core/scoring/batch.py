"""Batch inference: a day's population scored by the champion of that day, on features joined point in time by the
training set's own join (`point_in_time_join`), a chunk of rows at a time, written as one Delta commit.

A day's population is either its rows (each event of the day in a source, scored as of its event time with its
columns as request features, joined as the training set joins a label: `label.feature_cutoff`), or its entities
(each entity with an event in the source in the `active_within` days up to the day, scored once as of the day's end:
with the feature rows from before midnight UTC).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from sklearn.pipeline import Pipeline

from mlops_assets.core.features.views import FEATURE_TIMESTAMP, to_utc
from mlops_assets.core.lake import (
    PARTITION_COLUMN,
    Location,
    partition_batches,
    replace_partitions_streamed,
    scan_table,
)
from mlops_assets.core.models.modeling import Outputs, fitted_columns, predict, to_pandas
from mlops_assets.core.training.training_set import JOIN_AT, ViewInput, point_in_time_join, rows_between
from mlops_assets.spec import PipelineSpec, ScoringSpec, parse_duration

PREDICTION_TIME, SCORE, PREDICTION, MODEL_VERSION, RUN_ID = (
    "prediction_time",
    "score",
    "prediction",
    "model_version",
    "run_id",
)
# Scored rows kept (a uniform sample) to compare the day's score distribution with the champion's holdout scores.
DRIFT_SAMPLE_ROWS = 100_000
TIME_TYPE = pl.Datetime("us")


class ScoringError(ValueError):
    """A day that cannot be scored as declared; the message names the spec field, the table or the columns."""


def feature_time_column(view: str) -> str:
    """The scores table's column holding the time of the view's row each score used (null: none usable)."""
    return f"{view}_feature_timestamp"


def day_end(day: date) -> datetime:
    """The moment a day's partition is scored as of: midnight UTC after it (naive UTC, as the lake stores times)."""
    return datetime.combine(day + timedelta(days=1), time())


def _scoring(spec: PipelineSpec) -> ScoringSpec:
    if spec.scoring is None:
        raise ScoringError(f"pipeline {spec.name!r} declares no 'scoring' section")
    return spec.scoring


@dataclass(frozen=True)
class Population:
    """A day's population: how many rows, its columns (`empty`: keys, `prediction_time`, the request features the
    model takes and the carried columns) and a way to read its rows a chunk at a time."""

    day: date
    rows: int
    empty: pl.DataFrame
    chunks: Callable[[], Iterator[pl.DataFrame]]
    entities: bool


def population(spec: PipelineSpec, raw: Location, day: date) -> Population:
    """The day's population from the source's ingested table `raw` (`raw_<source>`)."""
    scoring = _scoring(spec)
    chosen, keys = scoring.population, spec.entity.keys
    source = spec.sources[chosen.source]
    if chosen.active_days is not None:
        days = [(day - timedelta(days=i)).isoformat() for i in range(chosen.active_days)]
        moment = pl.lit(day_end(day)).cast(TIME_TYPE).alias(PREDICTION_TIME)
        entities = scan_table(raw, days).select(keys).unique().sort(keys, nulls_last=True).collect()

        def entity_chunks() -> Iterator[pl.DataFrame]:
            for start in range(0, entities.height, scoring.chunk_rows):
                yield entities.slice(start, scoring.chunk_rows).with_columns(moment)

        return Population(day, entities.height, entities.clear().with_columns(moment), entity_chunks, True)
    columns = list(dict.fromkeys([*keys, *spec.scoring_request_features(), *chosen.carry]))
    read = list(dict.fromkeys([*columns, source.event_timestamp]))

    def shaped(chunk: pl.DataFrame) -> pl.DataFrame:
        chunk = to_utc(chunk.lazy())[0].collect()
        return chunk.select(*columns, pl.col(source.event_timestamp).cast(TIME_TYPE).alias(PREDICTION_TIME))

    table = scan_table(raw)
    missing = [c for c in read if c not in table.collect_schema()]
    if missing:
        raise ScoringError(f"{raw}: the population's columns {missing} are not in the ingested table")
    rows = scan_table(raw, [day.isoformat()]).select(pl.len()).collect().item()

    def row_chunks() -> Iterator[pl.DataFrame]:
        for chunk in partition_batches(raw, day.isoformat(), read, scoring.chunk_rows):
            yield shaped(chunk)

    return Population(day, rows, shaped(table.select(read).clear().collect()), row_chunks, False)


def view_inputs(spec: PipelineSpec, features: Mapping[str, pl.LazyFrame], day: date) -> dict[str, ViewInput]:
    """Each view's rows a day's scores can use: from a TTL before the day's start to its end (an older row is past
    its TTL at every moment of the day, so it would be nulled anyway), with their time also as a feature column."""
    out = {}
    for name, view in spec.feature_views.items():
        ttl = parse_duration(view.ttl)
        first = datetime.combine(day, time()) - ttl
        last = day_end(day) - timedelta(microseconds=1)
        rows = rows_between(to_utc(features[name])[0], first, last)
        rows = rows.with_columns(pl.col(FEATURE_TIMESTAMP).cast(TIME_TYPE))
        out[name] = ViewInput(rows.with_columns(pl.col(FEATURE_TIMESTAMP).alias(feature_time_column(name))).lazy(), ttl)
    return out


@dataclass(frozen=True)
class ScoringModel:
    """The champion of a day, ready to score: its version and fitted inference pipeline."""

    version: str
    pipeline: Pipeline
    task: str
    threshold: float = 0.5


def population_features(
    spec: PipelineSpec, chunk: pl.DataFrame, views: Mapping[str, ViewInput], entities: bool
) -> pl.DataFrame:
    """A chunk of the population with each view's features and feature time, joined by the training set's join: as
    a label is (`label.feature_cutoff`) for rows, as of the day's end for entities."""
    join_at = None
    labels = chunk.lazy()
    if entities:
        inclusive = False  # as of the day's end: the rows from before midnight
    else:
        inclusive = spec.label.feature_cutoff == "at"
        if spec.label.feature_cutoff == "previous_day":  # the rows of the days before the event's, as in training
            join_at = JOIN_AT
            labels = labels.with_columns(pl.col(PREDICTION_TIME).dt.truncate("1d").alias(JOIN_AT))
    joined, _ = point_in_time_join(
        labels,
        views,
        keys=spec.entity.keys,
        prediction_timestamp=PREDICTION_TIME,
        label_timestamp=PREDICTION_TIME,
        inclusive=inclusive,
        join_at=join_at,
    )
    return joined


def score_chunk(
    spec: PipelineSpec,
    chunk: pl.DataFrame,
    views: Mapping[str, ViewInput],
    model: ScoringModel,
    entities: bool,
    day: date,
    run_id: str,
) -> tuple[pl.DataFrame, Outputs]:
    """One chunk of the population with its features, scored: the scores table's rows, and the model's outputs."""
    joined = population_features(spec, chunk, views, entities)
    columns = fitted_columns(model.pipeline)
    missing = [c for c in columns.all if c not in joined.columns]
    if missing:
        raise ScoringError(
            f"version {model.version} of {spec.name!r} takes {missing}, which neither the population (source "
            f"{_scoring(spec).population.source!r}) nor the feature views give"
        )
    outputs = predict(model.pipeline, to_pandas(joined, columns), model.task) if joined.height else _no_outputs(model)
    return _scores_frame(spec, joined, outputs, model, day, run_id), outputs


def _no_outputs(model: ScoringModel) -> Outputs:
    if model.task == "multiclass":
        classes = tuple(str(c) for c in model.pipeline.classes_)
        return Outputs(model.task, np.zeros((0, len(classes))), classes)
    return Outputs(model.task, np.zeros(0))


def _scores_frame(
    spec: PipelineSpec, joined: pl.DataFrame, outputs: Outputs, model: ScoringModel, day: date, run_id: str
) -> pl.DataFrame:
    if model.task == "binary":
        prediction = pl.Series(PREDICTION, outputs.values >= model.threshold, pl.Int64)
    elif model.task == "multiclass":
        prediction = pl.Series(PREDICTION, outputs.labels if len(outputs) else [], pl.String)
    else:
        prediction = pl.Series(PREDICTION, outputs.values, pl.Float64)
    carry = _scoring(spec).population.carry
    return joined.select(
        *spec.entity.keys,
        *[c for c in carry if c not in spec.entity.keys],
        PREDICTION_TIME,
        pl.Series(SCORE, outputs.scores if len(outputs) else [], pl.Float64),
        prediction,
        pl.lit(model.version, pl.String).alias(MODEL_VERSION),
        *[feature_time_column(view) for view in spec.feature_views],
        pl.lit(run_id, pl.String).alias(RUN_ID),
        pl.lit(day.isoformat(), pl.String).alias(PARTITION_COLUMN),
    )


@dataclass
class ScoredDay:
    """What a day's scoring wrote and measured: rows, null scores, rows without each view's features, a uniform
    sample of the outputs (for the drift check), and the table's Delta version."""

    day: date
    version: str
    population_rows: int
    rows: int = 0
    null_scores: int = 0
    without_features: dict[str, int] = field(default_factory=dict)
    sample: list[Outputs] = field(default_factory=list)
    delta_version: int | None = None

    def outputs(self, task: str, classes: tuple[str, ...] = ()) -> Outputs:
        """The sampled outputs as one `Outputs`."""
        if not self.sample:
            shape = (0, len(classes)) if task == "multiclass" else (0,)
            return Outputs(task, np.zeros(shape), classes)
        return Outputs(task, np.concatenate([o.values for o in self.sample]), self.sample[0].classes)


def score_day(
    spec: PipelineSpec,
    path: Location,
    people: Population,
    views: Mapping[str, ViewInput],
    model: ScoringModel,
    run_id: str,
    seed: int = 0,
) -> ScoredDay:
    """Score a day's population a chunk at a time and replace the day's partition of the scores table at `path` with
    the result, in one commit (an empty population empties it). Memory holds one chunk, whatever the day's size."""
    share = min(1.0, DRIFT_SAMPLE_ROWS / people.rows) if people.rows else 1.0
    schema = scores_schema(spec, people, views, model)
    result = ScoredDay(people.day, model.version, people.rows)

    def scored() -> Iterator[pl.DataFrame]:
        # A retried commit re-reads the stream: the counts start again with it.
        result.rows, result.null_scores, result.sample = 0, 0, []
        result.without_features = dict.fromkeys(spec.feature_views, 0)
        rng = np.random.default_rng(seed)
        for chunk in people.chunks():
            frame, outputs = score_chunk(spec, chunk, views, model, people.entities, people.day, run_id)
            result.rows += frame.height
            result.null_scores += frame.select(pl.col(SCORE).is_null() | pl.col(SCORE).is_nan()).sum().item()
            for view in spec.feature_views:
                result.without_features[view] += frame.get_column(feature_time_column(view)).null_count()
            kept = np.flatnonzero(rng.random(len(outputs)) < share) if share < 1 else np.arange(len(outputs))
            result.sample.append(outputs.take(kept))
            yield frame

    result.delta_version = replace_partitions_streamed(path, scored, [people.day.isoformat()], schema)
    return result


def scores_schema(
    spec: PipelineSpec, people: Population, views: Mapping[str, ViewInput], model: ScoringModel
) -> pa.Schema:
    """The scores table's columns and types: those of the population's empty frame, scored."""
    frame, _ = score_chunk(spec, people.empty, views, model, people.entities, people.day, "")
    return frame.to_arrow().schema


def scores_summary(result: ScoredDay, spec: PipelineSpec) -> dict[str, Any]:
    """The numbers a person reads on the materialization: rows, the version, rows without each view's features."""
    return {
        "day": result.day.isoformat(),
        "model_version": result.version,
        "population_rows": result.population_rows,
        "scored_rows": result.rows,
        "null_scores": result.null_scores,
        **{f"without_features/{view}": n for view, n in result.without_features.items()},
        "population": _scoring(spec).population.source,
    }


# Holdout rows the champion scores as the reference of the day's score distribution.
REFERENCE_ROWS = 50_000


def reference_outputs(spec: PipelineSpec, holdout: pl.DataFrame, model: ScoringModel) -> Outputs:
    """The champion's outputs on its frozen holdout (rows it was not trained on: on its training rows it is surer
    of itself than on any new population), a seeded sample of at most REFERENCE_ROWS."""
    seed = spec.model.seed if spec.model else 0
    sample = holdout.sample(min(REFERENCE_ROWS, holdout.height), seed=seed)
    if not sample.height:
        return _no_outputs(model)
    return predict(model.pipeline, to_pandas(sample, fitted_columns(model.pipeline)), model.task)
