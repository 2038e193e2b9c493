"""The serving rules in-process: shadow, canary, fallback, alias refresh and the prediction log records."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

from mlops_assets.core.features.online import ResilientFeatures, SQLiteOnlineStore
from mlops_assets.core.models.modeling import Columns, build_pipeline, fit, to_pandas
from mlops_assets.core.serving.prediction_log import PredictionLogWriter, read_day
from mlops_assets.core.serving.scorer import (
    FALLBACK_VERSION,
    LiveModels,
    NoMetrics,
    RequestRefused,
    Scorer,
    canary_bucket,
)
from mlops_assets.spec import PipelineSpec, load_spec
from tests.helpers import SMALL_SPEC

MODEL = textwrap.dedent(
    """
    model: {estimator: sklearn.linear_model.LogisticRegression, seed: 1, threshold: 0.5}
    promotion: {metric: roc_auc, minimum: 0.5}
    """
)
COLUMNS = Columns(["amount", "count_1d", "amount_sum_1d", "amount_max_1d"], [])


def _spec(tmp_path: Path, **serving: Any) -> PipelineSpec:
    data = yaml.safe_load(SMALL_SPEC + MODEL)
    data["serving"] = serving
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def _pipeline(spec: PipelineSpec, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame({c: rng.normal(size=200) for c in COLUMNS.all}).with_columns(
        (pl.col("amount") + pl.col("count_1d") * seed > 0).cast(pl.Int64).alias("returned")
    )
    assert spec.model is not None
    return fit(build_pipeline(spec.model, COLUMNS), frame, COLUMNS, "returned")


class Registry:
    """Aliases and versions as a registry would give them; tests move the aliases."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.models = {"1": _pipeline(spec, 1), "2": _pipeline(spec, 3)}
        self.aliases: dict[str, str] = {"champion": "1"}
        self.loads: list[str] = []

    def load(self, version: str) -> Any:
        self.loads.append(version)
        return self.models[version]


class BrokenStore(SQLiteOnlineStore):
    def read(self, pipeline: str, view: str, entities: Any) -> list[str | None]:
        raise ConnectionError("connection refused")


def _scorer(spec: PipelineSpec, registry: Registry, tmp_path: Path, store: Any = None) -> Scorer:
    if store is None:
        store = SQLiteOnlineStore(tmp_path / "online.db")
        stamp = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()
        payload = {"count_1d": 2, "amount_sum_1d": 30.0, "amount_max_1d": 20.0}
        store.write("shop", "user_orders", [(f"u{i}", stamp, json.dumps(payload)) for i in range(50)])
    models = LiveModels.for_spec(spec, lambda: dict(registry.aliases), registry.load)
    log = PredictionLogWriter(tmp_path / "log", batch_size=1000, flush_interval=60)
    return Scorer(spec, models, ResilientFeatures(spec, store, timeout=1), log)


def _requests(n: int, ids: str = "r") -> list[dict[str, Any]]:
    return [{"user_id": f"u{i}", "amount": float(i % 7), "request_id": f"{ids}{i}"} for i in range(n)]


def _logged(scorer: Scorer, tmp_path: Path) -> pl.DataFrame:
    scorer.close()
    return read_day(tmp_path / "log", datetime.now(UTC).date()).sort("request_id")


def test_canary_buckets_are_sticky_and_uniform() -> None:
    buckets = [canary_bucket("shop", [f"u{i}"]) for i in range(20_000)]
    assert buckets == [canary_bucket("shop", [f"u{i}"]) for i in range(20_000)]
    assert 0.09 < np.mean(np.array(buckets) < 0.1) < 0.11
    assert canary_bucket("shop", ["u1"]) != canary_bucket("other", ["u1"])


def test_the_shadow_changes_nothing_in_the_answer_and_both_scores_are_logged(tmp_path: Path) -> None:
    spec = _spec(tmp_path, rollout="shadow")
    registry = Registry(spec)
    alone = _scorer(spec, registry, tmp_path / "alone").score(_requests(20))
    registry.aliases["challenger"] = "2"
    scorer = _scorer(spec, registry, tmp_path)
    answers = scorer.score(_requests(20))
    assert [a.model_dump() for a in answers] == [a.model_dump() for a in alone]
    assert {a.model_version for a in answers} == {"1"}
    logged = _logged(scorer, tmp_path)
    # The logged vectors, scored by the challenger directly.
    expected = registry.models["2"].predict_proba(_frame(logged))[:, 1]
    assert logged["shadow_version"].to_list() == ["2"] * 20
    assert np.allclose(logged["shadow_score"].to_numpy(), expected, rtol=0, atol=0)
    assert logged["score"].to_list() == [a.score for a in sorted(answers, key=lambda a: a.request_id)]


def _frame(logged: pl.DataFrame) -> Any:
    return to_pandas(pl.DataFrame([json.loads(f) for f in logged["features"]]), COLUMNS)


def test_a_failing_shadow_costs_neither_the_answer_nor_its_record(tmp_path: Path) -> None:
    spec = _spec(tmp_path, rollout="shadow")
    registry = Registry(spec)
    registry.aliases["challenger"] = "2"
    scorer = _scorer(spec, registry, tmp_path)
    assert scorer.models.live.challenger is not None
    # The estimator step: what both the compiled path and the pipeline call.
    broken = scorer.models.live.challenger.pipeline.named_steps["estimator"]

    def fail(*_: Any) -> Any:
        raise ValueError("the challenger cannot score")

    broken.predict_proba = fail
    answers = scorer.score(_requests(5))
    assert all(a.model_version == "1" and not a.degraded for a in answers)
    logged = _logged(scorer, tmp_path)
    assert logged.height == 5 and logged["shadow_score"].null_count() == 5


class CountedSkips(NoMetrics):
    def __init__(self) -> None:
        self.skipped = 0

    def shadow_skipped(self, rows: int) -> None:
        self.skipped += rows


def test_answers_beyond_the_shadow_backlog_are_logged_at_once_and_counted(tmp_path: Path) -> None:
    spec = _spec(tmp_path, rollout="shadow")
    registry = Registry(spec)
    registry.aliases["challenger"] = "2"
    store = SQLiteOnlineStore(tmp_path / "online.db")
    models = LiveModels.for_spec(spec, lambda: dict(registry.aliases), registry.load)
    log = PredictionLogWriter(tmp_path / "log", batch_size=1000, flush_interval=60)
    metrics = CountedSkips()
    # A backlog of no call: every answered call finds it full.
    scorer = Scorer(spec, models, ResilientFeatures(spec, store, timeout=1), log, metrics, shadow_backlog=0)

    answers = scorer.score(_requests(3)) + scorer.score(_requests(4, ids="s"))

    assert all(a.model_version == "1" for a in answers)
    logged = _logged(scorer, tmp_path)
    assert logged.height == 7 and logged["shadow_score"].null_count() == 7
    assert metrics.skipped == 7


def test_canary_sends_a_sticky_share_of_entities_to_the_challenger(tmp_path: Path) -> None:
    spec = _spec(tmp_path, rollout="canary", canary_share=0.3)
    registry = Registry(spec)
    registry.aliases["challenger"] = "2"
    scorer = _scorer(spec, registry, tmp_path)
    first = scorer.score(_requests(50))
    again = scorer.score(_requests(50, ids="again-"))  # the same entities, new predictions
    assert [a.model_version for a in first] == [a.model_version for a in again]
    for request, answer in zip(_requests(50), first, strict=True):
        to_challenger = canary_bucket("shop", [request["user_id"]]) < 0.3
        assert answer.model_version == ("2" if to_challenger else "1")
    assert 0 < sum(a.model_version == "2" for a in first) < 50
    logged = _logged(scorer, tmp_path)
    # Whoever answered, the other model shadowed it.
    assert all({a, s} == {"1", "2"} for a, s in zip(logged["model_version"], logged["shadow_version"], strict=True))


def test_an_ab_rollout_answers_its_declared_share_of_entities_with_the_challenger_sticky(tmp_path: Path) -> None:
    outcome = {"source": "returns", "column": "returned", "request_id": "user_id"}
    ab_test = {"outcome": outcome, "minimum_detectable_effect": 0.05, "challenger_share": 0.6}
    spec = _spec(tmp_path, rollout="ab", canary_share=0.1, ab_test=ab_test)
    registry = Registry(spec)
    registry.aliases["challenger"] = "2"
    scorer = _scorer(spec, registry, tmp_path)
    first = scorer.score(_requests(50))
    again = scorer.score(_requests(50, ids="again-"))
    assert [a.model_version for a in first] == [a.model_version for a in again]
    for request, answer in zip(_requests(50), first, strict=True):  # the test's share, not canary_share
        assert answer.model_version == ("2" if canary_bucket("shop", [request["user_id"]]) < 0.6 else "1")


def test_without_a_store_the_fallback_answers_degraded(tmp_path: Path) -> None:
    fallback = {"score": 0.02, "rules": [{"feature": "amount", "above": 5, "score": 0.7}]}
    spec = _spec(tmp_path, fallback=fallback)
    scorer = _scorer(spec, Registry(spec), tmp_path, store=BrokenStore(tmp_path / "x.db"))
    answers = scorer.score(_requests(7))
    assert all(a.degraded and a.model_version == FALLBACK_VERSION for a in answers)
    assert [a.score for a in answers] == [0.02] * 6 + [0.7]  # amount 6 is above 5
    assert "connection refused" in (answers[0].reason or "") and "fallback" in (answers[0].reason or "")
    assert answers[-1].decision and not answers[0].decision
    logged = _logged(scorer, tmp_path)
    assert logged["degraded"].all() and logged["model_version"].to_list() == [FALLBACK_VERSION] * 7


def test_without_a_declared_fallback_the_model_scores_with_imputed_features(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    scorer = _scorer(spec, Registry(spec), tmp_path, store=BrokenStore(tmp_path / "x.db"))
    (answer,) = scorer.score(_requests(1))
    assert answer.degraded and answer.model_version == "1" and "no cached features" in (answer.reason or "")


def test_live_models_follow_the_aliases_and_keep_serving_when_the_registry_fails(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    registry = Registry(spec)
    models = LiveModels(lambda: dict(registry.aliases), registry.load)
    assert models.versions() == {"champion": "1"} and not models.refresh()
    registry.aliases = {"champion": "2", "challenger": "1"}
    assert models.refresh() and models.versions() == {"champion": "2", "challenger": "1"}
    registry.aliases = {"champion": "1"}
    assert models.refresh() and models.versions() == {"champion": "1"}
    assert registry.loads == ["1", "2"]  # a version in use is never loaded twice
    registry.aliases = {}
    with pytest.raises(RuntimeError, match="no 'champion'"):
        models.refresh()
    assert models.versions() == {"champion": "1"}


def test_replayed_requests_are_scored_and_logged_as_of_their_own_time(tmp_path: Path) -> None:
    spec = _spec(tmp_path, allow_replay=True)
    store = SQLiteOnlineStore(tmp_path / "replay.db")
    payload = json.dumps({"count_1d": 2, "amount_sum_1d": 30.0, "amount_max_1d": 20.0})
    store.write("shop", "user_orders", [("u1", "2026-03-01T10:00:00", payload)])  # the view's TTL is 2 days
    scorer = _scorer(spec, Registry(spec), tmp_path, store=store)
    then = {"user_id": "u1", "amount": 1.0, "request_id": "then", "timestamp": datetime(2026, 3, 2, 9)}
    now = {"user_id": "u1", "amount": 1.0, "request_id": "now"}
    replayed, live = scorer.score([then, now])
    assert replayed.reason is None  # fresh as of its own time
    assert live.reason is not None and "past their TTL" in live.reason  # stale today
    scorer.close()
    logged = read_day(tmp_path / "log", datetime(2026, 3, 2).date())
    assert logged["request_id"].to_list() == ["then"]
    assert json.loads(logged["feature_timestamps"][0]) == {"user_orders": "2026-03-01T10:00:00"}


KINDS = {
    "regression": "model: {task: regression, estimator: sklearn.linear_model.Ridge, seed: 1}\n"
    "promotion: {minimum: 10.0}\n",
    "multiclass": "model: {task: multiclass, estimator: sklearn.linear_model.LogisticRegression, seed: 1}\n"
    "promotion: {minimum: 0.3}\n",
}


def _kind_spec(tmp_path: Path, task: str, **serving: Any) -> PipelineSpec:
    data = yaml.safe_load(SMALL_SPEC + KINDS[task])
    data["serving"] = serving
    path = tmp_path / f"{task}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def _kind_pipeline(spec: PipelineSpec, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame({c: rng.normal(size=300) for c in COLUMNS.all})
    signal = pl.col("amount") + pl.col("count_1d") * seed
    if spec.model.task == "regression":
        target = (signal * 10 + 50).alias("returned")
    else:
        target = (
            pl.when(signal > 0.5).then(pl.lit("high")).when(signal < -0.5).then(pl.lit("low")).otherwise(pl.lit("mid"))
        )
    frame = frame.with_columns(target.alias("returned"))
    return fit(build_pipeline(spec.model, COLUMNS), frame, COLUMNS, "returned", spec.model.task)


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_each_kind_answers_in_its_own_shape_with_its_shadow_logged(tmp_path: Path, task: str) -> None:
    spec = _kind_spec(tmp_path, task, rollout="shadow")
    registry = Registry.__new__(Registry)
    registry.models = {"1": _kind_pipeline(spec, 1), "2": _kind_pipeline(spec, 3)}
    registry.aliases, registry.loads = {"champion": "1", "challenger": "2"}, []
    store = SQLiteOnlineStore(tmp_path / "online.db")
    stamp = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    payload = {"count_1d": 2, "amount_sum_1d": 30.0, "amount_max_1d": 20.0}
    store.write("shop", "user_orders", [(f"u{i}", stamp, json.dumps(payload)) for i in range(50)])
    models = LiveModels(lambda: dict(registry.aliases), registry.load, task=task)
    log = PredictionLogWriter(tmp_path / "log", batch_size=1000, flush_interval=60)
    scorer = Scorer(spec, models, ResilientFeatures(spec, store, timeout=1), log)
    answers = scorer.score(_requests(20))
    logged = _logged(scorer, tmp_path)
    vectors = _frame(logged)
    by_id = {a.request_id: a for a in answers}
    if task == "regression":
        expected = registry.models["1"].predict(vectors)
        assert np.allclose([by_id[r].prediction for r in logged["request_id"]], expected)
        assert np.allclose(logged["score"].to_numpy(), expected)
        assert np.allclose(logged["shadow_score"].to_numpy(), registry.models["2"].predict(vectors))
        assert logged["label"].null_count() == 20 and type(answers[0]).__name__ == "RegressionPrediction"
    else:
        probabilities = registry.models["1"].predict_proba(vectors)
        classes = [str(c) for c in registry.models["1"].classes_]
        for row, request_id in zip(probabilities, logged["request_id"], strict=True):
            answer = by_id[request_id]
            assert answer.probabilities == pytest.approx(dict(zip(classes, row, strict=True)))
            assert answer.label == classes[int(np.argmax(row))]
        assert logged["label"].to_list() == [by_id[r].label for r in logged["request_id"]]
        assert np.allclose(logged["score"].to_numpy(), probabilities.max(axis=1))
        shadow = [json.loads(p) for p in logged["shadow_probabilities"]]
        assert np.allclose([[p[c] for c in classes] for p in shadow], registry.models["2"].predict_proba(vectors))
        assert logged["shadow_label"].to_list() == [max(p, key=p.get) for p in shadow]


def test_the_fallback_answers_in_the_kind_of_the_model(tmp_path: Path) -> None:
    spec = _kind_spec(
        tmp_path, "multiclass", fallback={"label": "mid", "rules": [{"feature": "amount", "above": 5, "label": "high"}]}
    )
    registry = Registry.__new__(Registry)
    registry.models, registry.aliases, registry.loads = {"1": _kind_pipeline(spec, 1)}, {"champion": "1"}, []
    models = LiveModels(lambda: dict(registry.aliases), registry.load, task="multiclass")
    log = PredictionLogWriter(tmp_path / "log", batch_size=1000, flush_interval=60)
    scorer = Scorer(spec, models, ResilientFeatures(spec, BrokenStore(tmp_path / "online.db"), timeout=1), log)
    answers = scorer.score([{"user_id": "u1", "amount": 9.0}, {"user_id": "u2", "amount": 1.0}])
    assert [(a.label, a.probabilities, a.model_version) for a in answers] == [
        ("high", None, FALLBACK_VERSION),
        ("mid", None, FALLBACK_VERSION),
    ]
    logged = _logged(scorer, tmp_path)
    assert set(logged["label"]) == {"high", "mid"} and logged["score"].null_count() == 2


def test_champion_only_neither_loads_nor_shadows_a_challenger(tmp_path: Path) -> None:
    spec = _spec(tmp_path, rollout="champion_only")
    registry = Registry(spec)
    registry.aliases["challenger"] = "2"
    scorer = _scorer(spec, registry, tmp_path)
    answers = scorer.score(_requests(5))
    assert {a.model_version for a in answers} == {"1"} and scorer.models.versions() == {"champion": "1"}
    logged = _logged(scorer, tmp_path)
    assert logged["shadow_version"].null_count() == 5 and registry.loads == ["1"]


def test_a_request_id_names_one_prediction_a_repeat_is_refused_and_logs_nothing(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    scorer = _scorer(spec, Registry(spec), tmp_path)
    repeated = [*_requests(2), _requests(1)[0]]
    with pytest.raises(RequestRefused, match=r"repeated within the call: \['r0'\]") as refused:
        scorer.score(repeated)
    assert refused.value.status == 409
    scorer.score(_requests(2))
    with pytest.raises(RequestRefused, match=r"already answered: \['r1'\]"):
        scorer.score(_requests(2, ids="new-")[:1] + _requests(2)[1:])
    scorer.score(_requests(2, ids="new-"))  # a refused call took no id: its new one is still free
    assert sorted(_logged(scorer, tmp_path)["request_id"]) == ["new-0", "new-1", "r0", "r1"]


def test_a_version_whose_check_rows_cannot_be_read_still_serves_compiled_checked_on_its_branch_rows(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path)
    registry = Registry(spec)

    def unreadable(version: str) -> list[dict[str, Any]]:
        raise OSError(f"input example of version {version} is gone")

    models = LiveModels.for_spec(spec, lambda: dict(registry.aliases), registry.load, check_rows=unreadable)

    assert models.live.champion.version == "1" and models.live.champion.fast is not None
