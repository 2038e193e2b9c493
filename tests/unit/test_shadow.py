"""Champion vs challenger on logged live traffic joined to labels, through the promotion gate."""

import json
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.serving.shadow import ShadowError, compare, labels_by_request, paired_scores
from mlops_assets.spec import PipelineSpec, load_specs

N = 400
CONFIRMED = [datetime(2026, 1, 3) + timedelta(seconds=i) for i in range(N)]


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    (fraud,) = load_specs()
    return fraud


def _traffic(challenger_quality: float, canary_every: int = 0, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A log where champion v1 scores with noise and challenger v2 with `challenger_quality` (0 = noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, N)
    champion = np.clip(0.5 * y + rng.uniform(0, 0.6, N), 0, 1)
    challenger = np.clip(challenger_quality * y + rng.uniform(0, 1 - challenger_quality, N), 0, 1)
    canary = [bool(canary_every) and i % canary_every == 0 for i in range(N)]
    log = pl.DataFrame(
        {
            "request_id": [f"t{i}" for i in range(N)],
            "request": [json.dumps({"channel": ["online", "pos"][i % 2]}) for i in range(N)],
            "model_version": ["2" if c else "1" for c in canary],
            "score": [float(b if c else a) for a, b, c in zip(champion, challenger, canary, strict=True)],
            "shadow_version": ["1" if c else "2" for c in canary],
            "shadow_score": [float(a if c else b) for a, b, c in zip(champion, challenger, canary, strict=True)],
        }
    )
    labels = pl.DataFrame({"transaction_id": [f"t{i}" for i in range(N)], "is_fraud": y, "confirmed_at": CONFIRMED})
    return log, labels


def test_pairs_each_labelled_request_with_both_scores_whoever_answered(spec: PipelineSpec) -> None:
    log, labels = _traffic(0.9, canary_every=3)
    unlabelled = log.head(3).with_columns(pl.lit("no-label").alias("request_id"))
    no_shadow = log.head(2).with_columns(pl.lit(None, pl.Float64).alias("shadow_score"))
    rows = paired_scores(pl.concat([log, unlabelled, no_shadow, log.head(5)]), labels, spec, "1", "2")
    assert rows.height == N  # the unlabelled, unshadowed and duplicated records are left out
    canary_row = rows.filter(request_id="t0").row(0, named=True)  # answered by v2
    logged = log.filter(request_id="t0").row(0, named=True)
    assert (canary_row["challenger_score"], canary_row["champion_score"]) == (logged["score"], logged["shadow_score"])
    assert set(rows["slice"]) == {"online", "pos"}


def test_a_better_challenger_passes_the_gate_and_a_worse_one_does_not(spec: PipelineSpec) -> None:
    better = compare(spec, *_traffic(0.9), "1", "2")
    assert better.decision.passed and better.rows == N
    assert better.challenger.metrics["pr_auc"] > better.champion.metrics["pr_auc"]
    worse = compare(spec, *_traffic(0.05), "1", "2")
    assert not worse.decision.passed
    assert any("improves on the champion by -" in r for r in worse.decision.reasons)


def test_too_few_labels_or_no_request_id_cannot_compare(spec: PipelineSpec) -> None:
    log, labels = _traffic(0.9)
    with pytest.raises(ShadowError, match=r"only 100 logged predictions .* have a label yet; at least 200"):
        compare(spec, log, labels.head(100), "1", "2", min_rows=200)
    no_id = spec.model_copy(update={"label": spec.label.model_copy(update={"request_id": None})})
    with pytest.raises(ShadowError, match=r"label\.request_id is not declared"):
        compare(no_id, log, labels, "1", "2")
    with pytest.raises(ShadowError, match="single class"):
        compare(spec, log, labels.with_columns(pl.lit(0).alias("is_fraud")), "1", "2")


def _multiclass(spec: PipelineSpec) -> PipelineSpec:
    from mlops_assets.spec import ModelSpec, PromotionSpec

    model = ModelSpec(task="multiclass", estimator="sklearn.linear_model.LogisticRegression", slice_by="channel")
    return spec.model_copy(update={"model": model, "promotion": PromotionSpec(metric="macro_f1", minimum=0.3)})


def test_multiclass_models_are_compared_on_their_logged_probabilities(spec: PipelineSpec) -> None:
    multiclass = _multiclass(spec)
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    y = rng.choice(classes, N)

    def probabilities(quality: float) -> list[str]:
        noise = rng.dirichlet(np.ones(3), N)
        truth = np.array([[float(c == label) for c in classes] for label in y])
        rows = quality * truth + (1 - quality) * noise
        return [json.dumps(dict(zip(classes, row, strict=True))) for row in rows]

    champion, challenger = probabilities(0.3), probabilities(0.8)
    log = pl.DataFrame(
        {
            "request_id": [f"t{i}" for i in range(N)],
            "request": [json.dumps({"channel": ["online", "pos"][i % 2]}) for i in range(N)],
            "model_version": ["1"] * N,
            "score": [max(json.loads(p).values()) for p in champion],
            "probabilities": champion,
            "shadow_version": ["2"] * N,
            "shadow_score": [max(json.loads(p).values()) for p in challenger],
            "shadow_probabilities": challenger,
        }
    )
    labels = pl.DataFrame({"transaction_id": [f"t{i}" for i in range(N)], "is_fraud": y, "confirmed_at": CONFIRMED})
    result = compare(multiclass, log, labels, "1", "2")
    assert result.decision.passed
    assert result.challenger.metrics["macro_f1"] > result.champion.metrics["macro_f1"]
    assert set(result.challenger.per_class) == set(classes)
    assert set(result.challenger.slices) == {"online", "pos"}


def test_rows_whose_label_is_not_there_yet_are_not_labels(spec: PipelineSpec) -> None:
    log, labels = _traffic(0.9)
    pending = labels.with_columns(
        pl.when(pl.int_range(pl.len()) < 50).then(None).otherwise(pl.col("is_fraud")).alias("is_fraud")
    )
    # A log as serving writes it also has a `label` column (a multiclass answer; null for binary): not the outcome.
    log = log.with_columns(pl.lit(None, pl.String).alias("label"))
    result = compare(spec, log, pending, "1", "2")
    assert result.rows == N - 50 and result.decision.passed


def test_the_latest_label_of_a_request_wins_whatever_the_row_order(spec: PipelineSpec) -> None:
    late, early = datetime(2026, 1, 5), datetime(2026, 1, 4)
    labels = pl.DataFrame(
        {"transaction_id": ["t1", "t1", "t2"], "is_fraud": [1, 0, None], "confirmed_at": [late, early, late]}
    )
    for frame in (labels, labels.reverse()):
        # t1 was corrected to 1 later; t2's label has not arrived (a null is not a label yet).
        assert labels_by_request(frame, spec).rows() == [("t1", 1)]


def _regression(spec: PipelineSpec, max_slice_drop: float | None = None) -> PipelineSpec:
    from mlops_assets.spec import ModelSpec, PromotionSpec

    model = ModelSpec(task="regression", estimator="sklearn.ensemble.HistGradientBoostingRegressor", slice_by="channel")
    promotion = PromotionSpec(metric="rmse", minimum=10.0, max_slice_drop=max_slice_drop)
    return spec.model_copy(update={"model": model, "promotion": promotion})


def _values(errors: dict[str, float], seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, np.ndarray]]:
    """A log where champion v1 answers and challenger v2 shadows with predicted values off the label by normal
    errors of `errors[version]`; v2's errors on `pos` requests by `errors["2 pos"]` when given."""
    rng = np.random.default_rng(seed)
    y = rng.normal(100, 20, N)
    channel = np.array(["online", "pos"] * (N // 2))
    spread = {v: np.full(N, errors[v]) for v in ("1", "2")}
    spread["2"][channel == "pos"] = errors.get("2 pos", errors["2"])
    predicted = {v: y + rng.normal(0, 1, N) * spread[v] for v in ("1", "2")}
    log = pl.DataFrame(
        {
            "request_id": [f"t{i}" for i in range(N)],
            "request": [json.dumps({"channel": c}) for c in channel],
            "model_version": ["1"] * N,
            "score": predicted["1"],
            "shadow_version": ["2"] * N,
            "shadow_score": predicted["2"],
        }
    )
    labels = pl.DataFrame({"transaction_id": [f"t{i}" for i in range(N)], "is_fraud": y, "confirmed_at": CONFIRMED})
    return log, labels, predicted


def test_regression_models_are_compared_on_their_logged_values_lower_rmse_winning(spec: PipelineSpec) -> None:
    from sklearn.metrics import root_mean_squared_error

    regression = _regression(spec)
    log, labels, predicted = _values({"1": 6.0, "2": 2.0})
    better = compare(regression, log, labels, "1", "2")
    y = labels.get_column("is_fraud").to_numpy()
    assert better.challenger.metrics["rmse"] == pytest.approx(root_mean_squared_error(y, predicted["2"]), abs=1e-9)
    assert better.champion.metrics["rmse"] == pytest.approx(root_mean_squared_error(y, predicted["1"]), abs=1e-9)
    assert set(better.challenger.metrics) == {"rmse", "mae", "r2", "mape"}
    assert better.decision.passed and any("improves on the champion by +" in r for r in better.decision.reasons)
    worse = compare(regression, *_values({"1": 2.0, "2": 6.0})[:2], "1", "2")
    assert not worse.decision.passed and any("improves on the champion by -" in r for r in worse.decision.reasons)
    # Better overall but much worse on one slice: the slice guard reads RMSE's rise as the drop.
    uneven = _values({"1": 6.0, "2": 0.5, "2 pos": 7.5})[:2]
    guarded = compare(_regression(spec, max_slice_drop=1.0), *uneven, "1", "2")
    assert guarded.challenger.metrics["rmse"] < guarded.champion.metrics["rmse"]
    assert not guarded.decision.passed and any("slice 'pos': rmse drops by" in r for r in guarded.decision.reasons)
    assert compare(_regression(spec), *uneven, "1", "2").decision.passed  # unguarded, the better overall RMSE wins
