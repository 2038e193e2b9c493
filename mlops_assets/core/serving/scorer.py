"""What the prediction service does, without the HTTP server: live models, routing, shadow, fallback, logging.

The BentoML service (service.py) is thin wiring around `Scorer`, so every rule here is tested in-process.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, Field
from sklearn.pipeline import Pipeline

from mlops_assets.core.features.online import ResilientFeatures, ServedVector
from mlops_assets.core.models.aliases import CHALLENGER, CHAMPION
from mlops_assets.core.models.compiled import FastModel, fast_model
from mlops_assets.core.models.modeling import Columns, Outputs, fitted_columns, predict, rows_to_pandas
from mlops_assets.core.serving.delivery import after_answer
from mlops_assets.core.serving.prediction_log import PredictionLogWriter
from mlops_assets.core.serving.privacy import PiiRule
from mlops_assets.spec import PipelineSpec

log = logging.getLogger(__name__)
FALLBACK_VERSION = "fallback"
# Regression: a shadow prediction this far from the answer (relative to the larger of the two) disagrees with it.
REGRESSION_DISAGREEMENT = 0.1
# The most answered calls the shadow scores in one batch (one model call for all their rows).
SHADOW_BATCH_CALLS = 256


class RequestRefused(ValueError):
    """A request refused whole before anything is scored or logged, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RecentIds:
    """The request ids a serving worker answered lately (at most `capacity`, the oldest forgotten first): a request id
    names one prediction, so a repeat is refused rather than answered and logged twice under one id."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def reserve(self, ids: Sequence[str]) -> None:
        """Take `ids` for this call, or refuse it (409) naming the ids already taken or repeated in the call."""
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            raise RequestRefused(409, f"request_id repeated within the call: {repeated[:10]}")
        if not self.capacity:
            return
        with self._lock:
            taken = [i for i in ids if i in self._ids]
            if taken:
                raise RequestRefused(
                    409, f"request_id already answered: {taken[:10]}; a new prediction needs a new request_id"
                )
            self._ids.update(dict.fromkeys(ids))
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)

    def release(self, ids: Sequence[str]) -> None:
        """Give back the ids of a call whose answer was never delivered: the client may send them again."""
        with self._lock:
            for request_id in ids:
                self._ids.pop(request_id, None)


class Answer(BaseModel):
    request_id: str
    model_version: str = Field(description="the registered model version that answered, or 'fallback'")
    degraded: bool = Field(description="true when a dependency failed and the answer is of lower quality")
    reason: str | None = Field(
        description="which features were not used and why: a dependency failed (degraded), no online row, a row past "
        "its TTL, or a row newer than a replayed request's time (withheld: none from its future); null when all were"
    )


class Prediction(Answer):
    """A binary model's answer."""

    score: float = Field(description="probability of the positive label (the fallback's score when degraded)")
    decision: bool = Field(description="score at or above the spec's threshold")


class RegressionPrediction(Answer):
    """A regression model's answer."""

    prediction: float = Field(description="the predicted value (the fallback's value when degraded)")


class MulticlassPrediction(Answer):
    """A multiclass model's answer."""

    label: str = Field(description="the most probable class (the fallback's class when degraded)")
    probabilities: dict[str, float] | None = Field(
        description="each class's probability; null when the fallback answered"
    )


PREDICTIONS: dict[str, type[Answer]] = {
    "binary": Prediction,
    "regression": RegressionPrediction,
    "multiclass": MulticlassPrediction,
}


def prediction_model(spec: PipelineSpec) -> type[Answer]:
    """The response of one prediction for the spec's kind of problem."""
    return PREDICTIONS[spec.model.task if spec.model else "binary"]


# One row's output: a probability or value (binary, regression), or probabilities by class (multiclass).
RowOutput = float | dict[str, float]


@dataclass(frozen=True)
class LoadedModel:
    version: str
    pipeline: Pipeline
    columns: Columns
    task: str = "binary"
    # The pipeline's preprocessing compiled to numpy (checked equal to the pipeline's when loaded; see
    # `compiled.fast_model`), or None: the pipeline itself scores.
    fast: FastModel | None = None

    def outputs(self, vectors: Sequence[Mapping[str, Any]]) -> Outputs:
        if self.fast is not None:
            return self.fast.outputs(vectors)
        return predict(self.pipeline, rows_to_pandas(vectors, self.columns), self.task)

    def scores(self, vectors: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.outputs(vectors).values


@dataclass(frozen=True)
class Live:
    champion: LoadedModel
    challenger: LoadedModel | None


class LiveModels:
    """The champion and challenger the registry's aliases name, reloaded when an alias moves.

    `refresh` loads a new version before swapping it in (one attribute assignment), so a request is always
    answered by a complete model; only the versions in use stay in memory.
    """

    def __init__(
        self,
        aliases: Callable[[], dict[str, str]],
        load: Callable[[str], Pipeline],
        initial: dict[str, str] | None = None,
        task: str = "binary",
        with_challenger: bool = True,
        check_rows: Callable[[str], Sequence[Mapping[str, Any]]] = lambda _: (),
    ) -> None:
        """`with_challenger` False (rollout `champion_only`): a challenger alias is neither loaded nor served.
        `check_rows` gives a version's rows its compiled scoring is checked on, besides rows that take every branch
        of it (see `compiled.fast_model`)."""
        self._aliases, self._load, self.task, self.with_challenger = aliases, load, task, with_challenger
        self._check_rows = check_rows
        self._loaded: dict[str, LoadedModel] = {}
        self.live = self._resolve(aliases() if initial is None else initial)
        self._stop = threading.Event()

    @classmethod
    def for_spec(
        cls,
        spec: PipelineSpec,
        aliases: Callable[[], dict[str, str]],
        load: Callable[[str], Pipeline],
        initial: dict[str, str] | None = None,
        check_rows: Callable[[str], Sequence[Mapping[str, Any]]] = lambda _: (),
    ) -> LiveModels:
        """The live models of the spec's kind of problem and rollout (`champion_only` serves no challenger)."""
        task = spec.model.task if spec.model else "binary"
        return cls(aliases, load, initial, task, spec.serving.rollout != "champion_only", check_rows)

    def _model(self, version: str) -> LoadedModel:
        if version not in self._loaded:
            pipeline = self._load(version)
            try:
                rows = self._check_rows(version)
            except Exception as exc:  # the rows are a check beside the branch rows: never a reason not to serve
                log.warning("model version %s: its holdout check rows could not be read (%s)", version, exc)
                rows = ()
            fast, how = fast_model(pipeline, self.task, rows)
            log.info("model version %s: %s", version, how)
            self._loaded[version] = LoadedModel(version, pipeline, fitted_columns(pipeline), self.task, fast)
        return self._loaded[version]

    def _resolve(self, aliases: dict[str, str]) -> Live:
        if CHAMPION not in aliases:
            raise RuntimeError(f"the registry names no {CHAMPION!r}: train and promote a model first")
        challenger = aliases.get(CHALLENGER) if self.with_challenger else None
        live = Live(self._model(aliases[CHAMPION]), self._model(challenger) if challenger else None)
        in_use = {live.champion.version, challenger}
        self._loaded = {v: m for v, m in self._loaded.items() if v in in_use}
        return live

    def refresh(self) -> bool:
        """Re-read the aliases; True when the live models changed."""
        before = self.versions()
        self.live = self._resolve(self._aliases())
        return self.versions() != before

    def versions(self) -> dict[str, str]:
        live = self.live
        return {CHAMPION: live.champion.version, **({CHALLENGER: live.challenger.version} if live.challenger else {})}

    def watch(self, every: float, on_error: Callable[[Exception], None]) -> threading.Thread:
        """Refresh every `every` seconds in a daemon thread; a failed refresh keeps the current models."""

        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    if self.refresh():
                        log.info("live models changed: %s", self.versions())
                except Exception as exc:  # the registry may be unreachable: keep serving what is loaded
                    on_error(exc)

        thread = threading.Thread(target=loop, name="alias-refresh", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def canary_bucket(pipeline: str, entity: Sequence[str]) -> float:
    """A stable number in [0, 1) per entity: the same entity always falls in the same bucket."""
    digest = hashlib.sha256(f"{pipeline}\x00{'|'.join(entity)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class ServingMetrics(Protocol):
    def answered(self, model_version: str, degraded: bool, fallback: bool) -> None: ...

    def shadow_scored(self, disagreed: bool) -> None: ...

    def shadow_skipped(self, rows: int) -> None: ...


class NoMetrics:
    def answered(self, model_version: str, degraded: bool, fallback: bool) -> None:
        pass

    def shadow_scored(self, disagreed: bool) -> None:
        pass

    def shadow_skipped(self, rows: int) -> None:
        pass


@dataclass
class ShadowJob:
    """An answered call's records, waiting for the other live model's scores of the same vectors."""

    live: Live
    records: list[dict[str, Any]]
    vectors: list[ServedVector]
    canary: list[bool]
    skip: list[bool]
    shadows: list[LoadedModel] = field(init=False)

    def __post_init__(self) -> None:
        # Canary rows were answered by the challenger: the champion shadows them.
        challenger = self.live.challenger
        assert challenger is not None, "a shadow job needs a challenger"
        self.shadows = [self.live.champion if c else challenger for c in self.canary]


class Scorer:
    """Scores requests: features from the online store, the routed model, the shadow off the request path, the log.

    With a challenger and rollout 'shadow', the champion answers and the challenger scores the same vectors later,
    in a background thread that takes the answered calls waiting (up to SHADOW_BATCH_CALLS) and scores them in one
    batch; with 'canary' (or 'ab'), the challenger answers for a sticky share of entities and the champion shadows.
    Either way both scores are logged with the request id, and the shadow never changes or delays the answer. When
    features cannot be had and the spec declares a fallback, the fallback answers.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        models: LiveModels,
        features: ResilientFeatures,
        log_writer: PredictionLogWriter,
        metrics: ServingMetrics | None = None,
        shadow_backlog: int = 64,
        pii: PiiRule | None = None,
    ) -> None:
        """`pii`: what becomes of the spec's PII request fields in a log record (PiiRule.of reads the key); a spec
        that declares PII fields must be given it."""
        if spec.serving.pii is not None and not pii:
            raise ValueError(f"{spec.name}: serving.pii is declared: give the scorer its PiiRule")
        self.spec, self.models, self.features, self.log = spec, models, features, log_writer
        self.pii = pii or PiiRule()
        self.metrics = metrics or NoMetrics()
        self.threshold = spec.model.threshold if spec.model else 0.5
        self.task = spec.model.task if spec.model else "binary"
        self._backlog = threading.BoundedSemaphore(shadow_backlog)
        self._jobs: queue.SimpleQueue[ShadowJob | None] = queue.SimpleQueue()
        self._shadow = threading.Thread(target=self._shadow_loop, name="shadow", daemon=True)
        self._shadow.start()
        self.recent_ids = RecentIds(spec.serving.recent_request_ids)
        self.challenger_share = spec.serving.challenger_share  # per process, not per request

    def routed_to_challenger(self, request: Mapping[str, Any]) -> bool:
        if not self.challenger_share:
            return False
        entity = [str(request[k]) for k in self.spec.entity.keys]
        return canary_bucket(self.spec.name, entity) < self.challenger_share

    def score(self, requests: Sequence[Mapping[str, Any]]) -> list[Answer]:
        """The answers to validated requests. Their log records (and the shadow's scores) follow once the answers
        are delivered (`delivery.after_answer`); a repeated client request id refuses the whole call (409)."""
        started = time.perf_counter()
        now = datetime.now(UTC)
        bodies = [dict(r) for r in requests]
        given = [b.pop("request_id", None) for b in bodies]
        chosen = [i for i in given if i is not None]
        self.recent_ids.reserve(chosen)
        try:
            answers, live, records, vectors, canary, use_fallback = self._answers(bodies, given, now)
        except BaseException:
            self.recent_ids.release(chosen)
            raise
        latency = (time.perf_counter() - started) * 1000
        for record in records:
            record["latency_ms"] = latency
        after_answer(
            lambda: self._log_with_shadow(live, records, vectors, canary, use_fallback),
            lambda: self.recent_ids.release(chosen),
        )
        return answers

    def _answers(
        self, bodies: list[dict[str, Any]], given: list[str | None], now: datetime
    ) -> tuple[list[Answer], Live, list[dict[str, Any]], list[ServedVector], list[bool], list[bool]]:
        ids = [request_id or uuid.uuid4().hex for request_id in given]
        times = [_utc(b.pop("timestamp", None)) or now for b in bodies]
        live = self.models.live
        vectors = self._vectors(bodies, times)
        fallback = self.spec.serving.fallback
        use_fallback = [fallback is not None and v.degraded and bool(v.missing) for v in vectors]
        canary = [live.challenger is not None and self.routed_to_challenger(b) for b in bodies]
        answering = [live.challenger if c else live.champion for c in canary]
        scored = _score_by_model(answering, vectors, skip=use_fallback)
        answers, records = [], []
        output: RowOutput | str
        reason: str | None
        for i, (request_id, body, vector) in enumerate(zip(ids, bodies, vectors, strict=True)):
            if use_fallback[i]:
                assert fallback is not None
                output, rule = fallback.score_for(body)
                version, reason = FALLBACK_VERSION, f"{vector.reason}; answered by the {rule}"
            else:
                model, model_output = answering[i], scored[i]
                assert model is not None and model_output is not None, "a row the fallback skips is a model's"
                output, version, reason = model_output, model.version, _reason(vector)
            common = {"request_id": request_id, "model_version": version, "degraded": vector.degraded, "reason": reason}
            answer = self._answer(output, common)
            self.metrics.answered(version, vector.degraded, use_fallback[i])
            answers.append(answer)
            records.append(self._record(answer, output, body, vector, times[i]))
        return answers, live, records, vectors, canary, use_fallback

    def _vectors(self, bodies: list[dict[str, Any]], times: list[datetime]) -> list[ServedVector]:
        """Feature vectors as of each request's time: one lookup per distinct time (just one without replays)."""
        vectors: dict[int, ServedVector] = {}
        groups: dict[datetime, list[int]] = {}
        for i, moment in enumerate(times):
            groups.setdefault(moment, []).append(i)
        for moment, rows in groups.items():
            found = self.features.vectors([bodies[i] for i in rows], moment.replace(tzinfo=None))
            for i, vector in zip(rows, found, strict=True):
                vectors[i] = vector
        return [vectors[i] for i in range(len(bodies))]

    def _answer(self, output: RowOutput | str, common: dict[str, Any]) -> Answer:
        """The response for one row: a model's output, or the fallback's score, value or class."""
        if self.task == "multiclass":
            if isinstance(output, str):  # the fallback's class
                return MulticlassPrediction(label=output, probabilities=None, **common)
            assert isinstance(output, dict)
            return MulticlassPrediction(label=max(output, key=output.__getitem__), probabilities=output, **common)
        assert isinstance(output, float)
        if self.task == "regression":
            return RegressionPrediction(prediction=output, **common)
        return Prediction(score=output, decision=output >= self.threshold, **common)

    def _record(
        self, answer: Answer, output: RowOutput | str, body: dict[str, Any], vector: ServedVector, now: datetime
    ) -> dict[str, Any]:
        """The log record of one answer; `score` is the probability or value (multiclass: the answered class's
        probability), `label` and `probabilities` a multiclass answer's."""
        return {
            "request_id": answer.request_id,
            "timestamp": now.isoformat(),
            "entity": {k: body[k] for k in self.spec.entity.keys},
            # PII request fields are dropped or hashed here, before the record exists anywhere but in memory.
            "features": self.pii.scrub(vector.values),
            "feature_timestamps": vector.timestamps,
            "request": self.pii.scrub(body),
            "model_version": answer.model_version,
            "score": _score(output),
            "label": getattr(answer, "label", None),
            "probabilities": output if isinstance(output, dict) else None,
            "shadow_version": None,
            "shadow_score": None,
            "shadow_label": None,
            "shadow_probabilities": None,
            "degraded": answer.degraded,
            "reason": answer.reason,  # as answered, degraded or not (features missing, stale or withheld)
        }

    def _log_with_shadow(
        self,
        live: Live,
        records: list[dict[str, Any]],
        vectors: list[ServedVector],
        canary: list[bool],
        skip: list[bool],
    ) -> None:
        """Log the records; with a challenger, once the other model has scored them (in the shadow thread)."""
        shadowed = live.challenger is not None and not all(skip)
        if not shadowed or not self._backlog.acquire(blocking=False):
            if shadowed:  # the backlog is full: logged now, without shadow scores, rather than queued without bound
                self.metrics.shadow_skipped(skip.count(False))
            for record in records:
                self.log.log(record)
            return
        self._jobs.put(ShadowJob(live, records, vectors, canary, skip))

    def _shadow_loop(self) -> None:
        """Score the waiting calls a batch at a time until `close` sends None."""
        while (job := self._jobs.get()) is not None:
            jobs = [job]
            while len(jobs) < SHADOW_BATCH_CALLS:
                try:
                    following = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    self._jobs.put(None)  # finish this batch, then stop
                    break
                jobs.append(following)
            self._shadow_batch(jobs)

    def _shadow_batch(self, jobs: list[ShadowJob]) -> None:
        """The shadow scores of several answered calls, one model call per model version, then their log records."""
        try:
            scored = _score_by_model(
                [m for j in jobs for m in j.shadows],
                [v for j in jobs for v in j.vectors],
                skip=[s for j in jobs for s in j.skip],
            )
            rows = [(j, i) for j in jobs for i in range(len(j.records))]
            for (job, i), output in zip(rows, scored, strict=True):
                if job.skip[i] or output is None:
                    continue
                record = job.records[i]
                record["shadow_version"], record["shadow_score"] = job.shadows[i].version, _score(output)
                if isinstance(output, dict):
                    record["shadow_label"] = max(output, key=output.__getitem__)
                    record["shadow_probabilities"] = output
                self.metrics.shadow_scored(self._disagree(record, output))
        except Exception:  # a failing shadow must never cost the answer or its log record
            log.exception("shadow scoring failed; the records are logged without shadow scores")
        finally:
            for job in jobs:
                for record in job.records:
                    self.log.log(record)
                self._backlog.release()

    def _disagree(self, record: dict[str, Any], shadow: RowOutput) -> bool:
        """Whether the shadow would have answered differently: another decision (binary), another class
        (multiclass), a value more than REGRESSION_DISAGREEMENT apart relative to the larger (regression)."""
        if isinstance(shadow, dict):
            return bool(record["shadow_label"] != record["label"])
        answered = float(record["score"])
        if self.task == "regression":
            return abs(shadow - answered) > REGRESSION_DISAGREEMENT * max(abs(shadow), abs(answered))
        return (answered >= self.threshold) != (shadow >= self.threshold)

    def close(self) -> None:
        """Finish the shadow backlog and flush the log (a graceful shutdown loses nothing)."""
        self.models.stop()
        self._jobs.put(None)
        self._shadow.join()
        self.log.close()


def _score_by_model(
    models: Sequence[LoadedModel | None], vectors: Sequence[ServedVector], skip: Sequence[bool]
) -> list[RowOutput | None]:
    """Each row's output from its model, one batch per model; skipped rows get None."""
    out: list[RowOutput | None] = [None] * len(vectors)
    groups: dict[str, list[int]] = {}
    by_version: dict[str, LoadedModel] = {}
    for i, model in enumerate(models):
        if model is not None and not skip[i]:
            groups.setdefault(model.version, []).append(i)
            by_version[model.version] = model
    for version, rows in groups.items():
        outputs = by_version[version].outputs([vectors[i].values for i in rows])
        for i, value in zip(rows, outputs.values, strict=True):
            out[i] = dict(zip(outputs.classes, map(float, value), strict=True)) if outputs.classes else float(value)
    return out


def _score(output: RowOutput | str) -> float | None:
    """The number logged as `score`: the probability or value; the answered class's probability (multiclass);
    None for a fallback's class."""
    if isinstance(output, dict):
        return max(output.values())
    return None if isinstance(output, str) else float(output)


def _utc(moment: datetime | None) -> datetime | None:
    """A request's time as an aware UTC datetime (a naive one is taken as UTC)."""
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _reason(vector: ServedVector) -> str | None:
    if vector.reason:
        return vector.reason
    parts = [
        *([f"no online features for {vector.missing}"] if vector.missing else []),
        *([f"online features past their TTL for {vector.stale}"] if vector.stale else []),
        *(
            [f"online features newer than the request time for {vector.ahead}: not used (none from its future)"]
            if vector.ahead
            else []
        ),
    ]
    return "; ".join(parts) or None
