"""The prediction service (BentoML): features from the online store, the champion's score, every answer logged.

Configured by environment, read when the service module is loaded by `bentoml serve` (never by the Dagster code
location): MLOPS_PIPELINE (required), MLOPS_SPECS_DIR, MLOPS_DATA_DIR, MLFLOW_TRACKING_URI, MLOPS_ONLINE_STORE_URL,
MLOPS_ONLINE_TIMEOUT_MS.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import bentoml
import polars as pl
from pydantic import BaseModel, Field, create_model

from mlops_assets.defs.common.resources import mlflow_resource, online_store_resource
from mlops_assets.modeling import fitted_columns, to_pandas
from mlops_assets.online import ResilientFeatures
from mlops_assets.prediction_log import PredictionLogWriter
from mlops_assets.spec import ColumnSpec, PipelineSpec, load_specs

_PY_TYPES: dict[str, type] = {"string": str, "int": int, "float": float, "bool": bool, "datetime": datetime}


def request_model(spec: PipelineSpec) -> type[BaseModel]:
    """The request of one prediction, from the spec: entity keys and request features with their constraints."""
    fields: dict[str, Any] = {
        k: (str, Field(min_length=1, description=f"{spec.entity.name} key")) for k in spec.entity.keys
    }
    for name, column in spec.request_features.items():
        fields[name] = _field(column)
    fields["request_id"] = (str | None, Field(default=None, description="echoed back and logged; generated if absent"))
    return create_model(f"{spec.name.title()}Request", **fields)


def _field(column: ColumnSpec) -> tuple[Any, Any]:
    kind: Any = Literal[tuple(column.isin)] if column.isin else _PY_TYPES[column.dtype]  # type: ignore[misc]
    if column.nullable:
        return (kind | None, Field(default=None, ge=column.min, le=column.max))
    return (kind, Field(ge=column.min, le=column.max))


class Prediction(BaseModel):
    request_id: str
    score: float | None = Field(description="probability of the positive label; null when no model could answer")
    decision: bool | None
    model_version: str
    degraded: bool
    reason: str | None


def _spec() -> PipelineSpec:
    name = os.environ["MLOPS_PIPELINE"]
    specs = {s.name: s for s in load_specs(os.environ.get("MLOPS_SPECS_DIR"))}
    return specs[name]


SPEC = _spec()
Request = request_model(SPEC)


@bentoml.service(name=f"mlops_{SPEC.name}", traffic={"timeout": 10})
class PredictionService:
    """Scores one request with the champion, from the same feature rows the training set was built from."""

    def __init__(self) -> None:
        data_dir = os.environ.get("MLOPS_DATA_DIR", "data")
        registry = mlflow_resource(data_dir, os.environ.get("MLFLOW_TRACKING_URI")).registry()
        self.version = registry.aliases(SPEC.name)["champion"]
        self.model = registry.load_sklearn(SPEC.name, self.version)
        self.columns = fitted_columns(self.model)
        store = online_store_resource(data_dir, os.environ.get("MLOPS_ONLINE_STORE_URL")).store()
        timeout = float(os.environ.get("MLOPS_ONLINE_TIMEOUT_MS", "100")) / 1000
        self.features = ResilientFeatures(SPEC, store, timeout=timeout)
        self.log = PredictionLogWriter(Path(data_dir).resolve() / "prediction_log" / SPEC.name)

    @bentoml.api
    def predict(self, request: Request) -> Prediction:  # type: ignore[valid-type]
        """Score one request."""
        return self._score([request])[0]

    @bentoml.api(batchable=True, max_batch_size=100, max_latency_ms=1000)
    def predict_batch(self, requests: list[Request]) -> list[Prediction]:  # type: ignore[valid-type]
        """Score many requests; concurrent calls are batched together (adaptive batching)."""
        return self._score(requests)

    def _score(self, requests: list[Any]) -> list[Prediction]:
        started = time.perf_counter()
        bodies = [r.model_dump() for r in requests]
        ids = [b.pop("request_id") or uuid.uuid4().hex for b in bodies]
        vectors = self.features.vectors(bodies, datetime.now(UTC).replace(tzinfo=None))
        frame = pl.DataFrame([{c: v.values.get(c) for c in self.columns.all} for v in vectors])
        scores = self.model.predict_proba(to_pandas(frame, self.columns))[:, 1]
        latency = (time.perf_counter() - started) * 1000
        answers = []
        for request_id, body, vector, score in zip(ids, bodies, vectors, scores, strict=True):
            reason = vector.reason or (f"no online features for {vector.missing}" if vector.missing else None)
            answer = Prediction(
                request_id=request_id,
                score=float(score),
                decision=bool(score >= SPEC.model.threshold),
                model_version=self.version,
                degraded=vector.degraded,
                reason=reason,
            )
            self.log.log(
                {
                    "request_id": request_id,
                    "timestamp": datetime.now(UTC).isoformat(),
                    "entity": {k: body[k] for k in SPEC.entity.keys},
                    "features": vector.values,
                    "request": body,
                    "model_version": self.version,
                    "score": answer.score,
                    "degraded": vector.degraded,
                    "degraded_reason": reason,
                    "latency_ms": latency,
                }
            )
            answers.append(answer)
        return answers
