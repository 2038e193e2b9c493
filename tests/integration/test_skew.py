"""Skew contract: the feature vector serving builds equals the training-set row for the same entity and time."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.features.online import SQLiteOnlineStore, feature_vectors, sync_view
from mlops_assets.core.features.views import FEATURE_TIMESTAMP
from mlops_assets.core.lake import PARTITION_COLUMN, scan_table, table_path
from mlops_assets.core.models.modeling import model_columns, scores, train_candidate
from mlops_assets.core.monitoring.grading import skew_stats, skew_verdict
from mlops_assets.core.serving.scorer import LoadedModel
from mlops_assets.core.training.training_set import training_set
from mlops_assets.spec import load_specs

pytestmark = pytest.mark.integration


def test_served_vectors_and_scores_equal_the_training_rows(lake: tuple[Path, Path], tmp_path: Path) -> None:
    specs, data = lake
    (spec,) = load_specs(specs)
    keys, label = spec.entity.keys, spec.label
    views = {v: scan_table(table_path(data, "fraud", v)).drop(PARTITION_COLUMN) for v in spec.feature_views}
    training, _ = training_set(spec, scan_table(table_path(data, "fraud", "raw_labels")), views)
    sample = training.sample(40, seed=7)
    assert sample.select(pl.col("count_1h").is_null().sum()).item() < 40  # most rows have history

    served, logged = [], []
    for i, row in enumerate(sample.iter_rows(named=True)):
        # The online store as it stood at the prediction time: every feature row strictly before it
        # (the spec's feature_cutoff is 'before'), synced by the same code the online asset runs.
        store = SQLiteOnlineStore(tmp_path / f"online-{i}.db")
        entity = pl.all_horizontal(pl.col(k) == row[k] for k in keys)
        for name, frame in views.items():
            history = frame.filter(entity & (pl.col(FEATURE_TIMESTAMP) < row[label.prediction_timestamp]))
            sync_view(
                store,
                "fraud",
                name,
                history.with_columns(pl.col(FEATURE_TIMESTAMP).dt.date().cast(pl.String).alias(PARTITION_COLUMN)),
                keys,
            )
        (vector,) = feature_vectors(spec, store, [row], now=row[label.prediction_timestamp])
        served.append(vector.values)
        logged.append(
            {
                "entity": json.dumps({k: row[k] for k in keys}),
                "features": json.dumps(vector.values, default=str),
                "feature_timestamps": json.dumps(vector.timestamps),
                "degraded": False,
            }
        )

    columns = model_columns(spec, training)
    for expected, got in zip(sample.select(columns.all).iter_rows(named=True), served, strict=True):
        assert {c: got.get(c) for c in columns.all} == expected  # bit for bit: no float tolerance is declared

    model = spec.model.model_copy(update={"params": {"max_iter": 20}})
    trained = train_candidate(spec.model_copy(update={"model": model}), training)
    # The service's scoring path (request dicts -> model input) against the training path (frames -> model input).
    served_scores = LoadedModel("candidate", trained.pipeline, columns).scores(served)
    assert np.array_equal(served_scores, scores(trained.pipeline, sample, columns))

    # The monitoring side of the same contract: the skew check finds each served value's offline row (by entity and
    # the feature timestamp serving logged) and finds them equal; a value changed on the way is named.
    log = pl.DataFrame(logged)
    offline = {name: frame.collect() for name, frame in views.items()}
    skew = skew_stats(log, offline, spec)
    assert skew.get_column("mismatched").sum() == 0 and skew.get_column("not_found_offline").sum() == 0
    assert skew.filter(pl.col("feature") == "count_1h").get_column("compared").item() > 20
    assert skew_verdict("w", skew, spec.monitoring).level == "ok"
    tampered = [json.loads(f) for f in log.get_column("features")]
    first = next(i for i, f in enumerate(tampered) if f.get("amount_sum_1d") is not None)
    tampered[first]["amount_sum_1d"] += 0.01
    log = log.with_columns(pl.Series("features", [json.dumps(f) for f in tampered]))
    verdict = skew_verdict("w", skew_stats(log, offline, spec), spec.monitoring)
    assert (
        verdict.level == "error"
        and "customer_spend.amount_sum_1d" in verdict.description
        and "1 differ" in verdict.description
    )
