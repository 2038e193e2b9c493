"""The prediction service (BentoML): thin wiring of `Scorer` into HTTP endpoints, metrics and API-key auth.

Which pipeline it serves comes from bento arguments (`--arg pipeline=fraud`, recorded in a built bento), or from
MLOPS_PIPELINE; the services from the environment, read when `bentoml serve` loads this module (never by the
Dagster code location): MLOPS_SPECS_DIR, MLOPS_DATA_DIR, MLFLOW_TRACKING_URI, MLOPS_ONLINE_STORE_URL and the API key
variable named by the spec (`serving.api_key_env`, MLOPS_API_KEY by default).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, time
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # the package ships no type hints

from mlops_assets.core.features.online import ResilientFeatures, open_store
from mlops_assets.core.lake import location
from mlops_assets.core.models.registry import ModelRegistry, open_registry
from mlops_assets.core.serving.bundle import bundled_aliases, load_version, version_check_rows
from mlops_assets.core.serving.delivery import DeliveryMiddleware
from mlops_assets.core.serving.prediction_log import PredictionLogWriter, log_folder
from mlops_assets.core.serving.privacy import PiiKeyMissing, PiiRule
from mlops_assets.core.serving.scorer import Answer, LiveModels, RequestRefused, Scorer, prediction_model
from mlops_assets.serving.contract import API_ERRORS
from mlops_assets.serving.middleware import (
    PREDICTION_PATHS,
    REQUEST_TIMEOUT,
    TIMEOUT_BACKSTOP,
    ApiKeyMiddleware,
    ErrorBodyMiddleware,
    LoadSheddingMiddleware,
    OpenApiMiddleware,
    RequestBodyMiddleware,
    TimeoutMiddleware,
)
from mlops_assets.settings import LAKE_URI_ENV, embedded_registry_missing, object_store_uri, online_store_url
from mlops_assets.spec import DEFAULT_MAX_LENGTH, ColumnSpec, PipelineSpec, load_specs, parse_duration

log = logging.getLogger(__name__)
_PY_TYPES: dict[str, type] = {"string": str, "int": int, "float": float, "bool": bool, "datetime": datetime}


def request_model(spec: PipelineSpec) -> type[BaseModel]:
    """The request of one prediction, from the spec, validated whole before anything is scored (a bad row is its own
    400 and never reaches another call): entity keys (the spec's pattern, ASCII digits only) and request features
    with their constraints, in strict JSON types (no `true` for a number, no number for a time), text of bounded
    length; a field the spec does not declare is refused (a typo would otherwise be scored as a missing value)."""
    pattern = spec.entity.pattern
    key: Any = Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            description=f"{spec.entity.name} key",
            json_schema_extra={"pattern": pattern} if pattern else None,
        ),
        *([AfterValidator(_ascii_match(pattern))] if pattern else []),
    ]
    fields: dict[str, Any] = {k: (key, ...) for k in spec.entity.keys}
    for name, column in spec.request_features.items():
        fields[name] = _field(column)
    if spec.serving.allow_replay:
        fields["timestamp"] = (
            Annotated[datetime | None, AfterValidator(_request_time(spec))],
            Field(
                default=None,
                description=f"when the prediction was made (replays), from {spec.start_date} (the pipeline's first "
                f"day) to the server's clock plus {spec.serving.max_clock_skew}; without a zone, UTC; default: now",
            ),
        )
    fields["request_id"] = (
        str | None,
        Field(default=None, min_length=1, max_length=200, description="echoed back and logged; generated if absent"),
    )
    config = ConfigDict(extra="forbid", strict=True)
    return create_model(f"{spec.name.title()}Request", __config__=config, **fields)


def _ascii_match(pattern: str) -> Callable[[str], str]:
    """The spec's key pattern as JSON Schema means it (`\\d` is 0-9 only), not as Unicode regular expressions do."""
    compiled = re.compile(pattern, re.ASCII)

    def matches(value: str) -> str:
        if not compiled.search(value):
            raise ValueError(f"should match the pattern {pattern!r}")
        return value

    return matches


def _request_time(spec: PipelineSpec) -> Callable[[datetime | None], datetime | None]:
    """A request's time as an aware UTC datetime (naive: taken as UTC), within the range a replay can mean."""
    earliest = datetime.combine(spec.start_date, time(), UTC)
    skew = parse_duration(spec.serving.max_clock_skew)

    def check(moment: datetime | None) -> datetime | None:
        if moment is None:
            return None
        try:
            moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        except OverflowError:
            raise ValueError("is outside the range of UTC times") from None
        if moment < earliest:
            raise ValueError(f"is before {earliest.date()}, the pipeline's first day")
        if moment > datetime.now(UTC) + skew:
            raise ValueError(f"is later than the server's clock by more than {spec.serving.max_clock_skew}")
        return moment

    return check


def _field(column: ColumnSpec) -> tuple[Any, Any]:
    kind: Any = Literal[tuple(column.isin)] if column.isin else _PY_TYPES[column.dtype]
    extra: dict[str, Any] = {"allow_inf_nan": False} if column.dtype == "float" else {}
    if column.dtype == "string" and not column.isin:
        extra["max_length"] = column.max_length or DEFAULT_MAX_LENGTH
    if column.nullable:
        return (kind | None, Field(default=None, ge=column.min, le=column.max, **extra))
    return (kind, Field(ge=column.min, le=column.max, **extra))


class PrometheusMetrics:
    """Our counters beside BentoML's on /metrics (created in the worker, after BentoML set up multiprocess mode)."""

    def __init__(self, pipeline: str) -> None:
        from prometheus_client import Counter

        self.predictions = Counter(
            "mlops_predictions", "Answers by model version", ["pipeline", "model_version", "degraded"]
        )
        self.degraded = Counter("mlops_degraded_responses", "Answers marked degraded", ["pipeline", "fallback"])
        self.shadow = Counter("mlops_shadow_predictions", "Requests scored by the shadow model", ["pipeline"])
        self.disagreements = Counter(
            "mlops_shadow_disagreements", "Shadow decisions that differ from the answer", ["pipeline"]
        )
        self.refresh_failures = Counter("mlops_alias_refresh_failures", "Failed registry reads", ["pipeline"])
        self.shadow_skips = Counter(
            "mlops_shadow_skipped", "Answers logged without a shadow score (its backlog was full)", ["pipeline"]
        )
        self.log_failures = Counter(
            "mlops_prediction_log_write_failures",
            "Records a failed prediction-log write kept in memory, to write again (lost if the worker stops first)",
            ["pipeline"],
        )
        self.pipeline = pipeline

    def answered(self, model_version: str, degraded: bool, fallback: bool) -> None:
        self.predictions.labels(self.pipeline, model_version, str(degraded).lower()).inc()
        if degraded:
            self.degraded.labels(self.pipeline, str(fallback).lower()).inc()

    def shadow_skipped(self, rows: int) -> None:
        self.shadow_skips.labels(self.pipeline).inc(rows)

    def log_write_failed(self, records: int) -> None:
        self.log_failures.labels(self.pipeline).inc(records)

    def shadow_scored(self, disagreed: bool) -> None:
        self.shadow.labels(self.pipeline).inc()
        if disagreed:
            self.disagreements.labels(self.pipeline).inc()


class ClientErrorLog(logging.Filter):
    """BentoML logs a client's bad request (400, 413, ...) as an ERROR with its traceback; it is the client's
    mistake, not the service's: one WARNING line naming the fields instead. Server errors keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            status = 400
            fields = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors(include_input=False)]
            problem = "; ".join(fields)
        elif isinstance(error, BentoMLException) and error.error_code.value < 500:
            status, problem = error.error_code.value, str(error)
        else:
            return True
        path, method = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ("?", "?")
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.msg, record.args = "%s %s answered %d: %s", (method, path, status, " ".join(problem.split()))
        record.exc_info, record.exc_text = None, None
        return True


# Where BentoML logs a request that failed (`Exception on /predict [POST]`).
_REQUEST_ERRORS_LOGGER = "bentoml._internal.server.http_app"
CLIENT_ERRORS = ClientErrorLog()


def _arguments() -> tuple[str, str | None]:
    args = bentoml.use_arguments()
    pipeline = getattr(args, "pipeline", None) or os.environ.get("MLOPS_PIPELINE")
    if not pipeline:
        raise RuntimeError("which pipeline? serve with --arg pipeline=NAME (or set MLOPS_PIPELINE)")
    return pipeline, getattr(args, "specs_dir", None) or os.environ.get("MLOPS_SPECS_DIR")


PIPELINE, SPECS_DIR = _arguments()
SPEC = {s.name: s for s in load_specs(SPECS_DIR)}[PIPELINE]
if TYPE_CHECKING:
    # Chosen or built from the spec when the module loads: a type checker knows them by their base classes. BentoML
    # reads the API's schemas from the annotations below, which name the actual ones.
    Request = BaseModel
    Prediction = Answer
else:
    Request = request_model(SPEC)
    # The answer's shape follows the kind of problem: binary score and decision, regression prediction, multiclass
    # label and probabilities by class.
    Prediction = prediction_model(SPEC)


# BentoML's timeout is a backstop behind ours (TimeoutMiddleware answers 504 in our error body first).
@bentoml.service(name=f"mlops_{SPEC.name}", traffic={"timeout": REQUEST_TIMEOUT + TIMEOUT_BACKSTOP})
class PredictionService:
    """Scores requests with the champion (a challenger in shadow or canary), from the online store's features."""

    def __init__(self) -> None:
        logging.getLogger(_REQUEST_ERRORS_LOGGER).addFilter(CLIENT_ERRORS)
        try:
            # Read when a worker starts (building the bento imports this module without it): a hashed PII field
            # without its key stops the worker here, never at a first request. `mlops serve` checks it before.
            pii = PiiRule.of(SPEC, os.environ)
        except PiiKeyMissing as missing:
            raise RuntimeError(str(missing)) from None
        data_dir = os.environ.get("MLOPS_DATA_DIR", "data")
        serving = SPEC.serving
        self.metrics = PrometheusMetrics(SPEC.name)
        bundled = bundled_aliases()
        if bundled and embedded_registry_missing(data_dir):
            # A bento pulled onto a host of its own (`mlops serve --bento`): it carries its models, and there is no
            # registry here whose aliases it could follow.
            log.warning(
                "no model registry here (MLFLOW_TRACKING_URI unset, no mlflow.db in %s): serving the bento's versions "
                "%s; set MLFLOW_TRACKING_URI to follow promotions and rollbacks",
                data_dir,
                bundled,
            )
            models = LiveModels.for_spec(
                SPEC,
                lambda: bundled,
                lambda version: load_version(SPEC.name, version, None),
                check_rows=lambda version: version_check_rows(SPEC.name, version, None),
            )
        else:
            registry = open_registry(data_dir)
            models = LiveModels.for_spec(
                SPEC,
                lambda: registry.aliases(SPEC.name),
                lambda version: load_version(SPEC.name, version, registry),
                initial=_initial_aliases(registry),
                check_rows=lambda version: version_check_rows(SPEC.name, version, registry),
            )
            models.watch(serving.refresh_seconds, self._refresh_failed)
        store = open_store(online_store_url(data_dir))
        features = ResilientFeatures(
            SPEC, store, timeout=serving.online_timeout_ms / 1000, cache_size=serving.cache_size
        )
        # Beside the lake, where the prediction_log asset ingests it: MLOPS_LAKE_URI's prefix when the lake is in
        # object storage (a serving host shares no disk with Dagster's), else the data folder.
        writer = PredictionLogWriter(
            log_folder(location(object_store_uri(LAKE_URI_ENV) or data_dir), SPEC.name),
            batch_size=serving.log_batch_size,
            flush_interval=serving.log_flush_seconds,
            on_failure=self.metrics.log_write_failed,
        )
        self.scorer = Scorer(SPEC, models, features, writer, self.metrics, pii=pii)
        # One native thread per call: a worker answers many small calls at once, and an estimator that starts an
        # OpenMP or BLAS thread team per call (histogram gradient boosting does) makes each answer wait on the team.
        # Set once the models are loaded, so that the libraries they brought in are loaded too.
        threadpool_limits(limits=1)

    def _refresh_failed(self, exc: Exception) -> None:
        self.metrics.refresh_failures.labels(SPEC.name).inc()
        log.warning("could not re-read the registry aliases, still serving %s: %s", self.scorer.models.versions(), exc)

    @bentoml.api
    def predict(self, request: Request) -> Prediction:
        """Score one request."""
        return self._score([request])[0]

    @bentoml.api
    def predict_batch(self, requests: list[Request]) -> list[Prediction]:
        """Score the requests of one call together (at most `serving.max_batch_rows`; a larger call is refused whole
        with 413). Each call is validated and answered on its own: one bad row never fails another client's call."""
        if len(requests) > SPEC.serving.max_batch_rows:
            raise BentoMLException(
                f"{len(requests):,} requests in one call, more than serving.max_batch_rows "
                f"({SPEC.serving.max_batch_rows:,}): send them in several calls",
                error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        return self._score(requests)

    def _score(self, requests: list[Any]) -> list[Answer]:
        try:
            return self.scorer.score([r.model_dump() for r in requests])
        except RequestRefused as refused:
            raise BentoMLException(str(refused), error_code=HTTPStatus(refused.status)) from None

    @bentoml.api
    def models(self) -> dict[str, str]:
        """The pipeline served and the model versions answering now: champion and, when there is one, challenger."""
        return {"pipeline": SPEC.name, **self.scorer.models.versions()}

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.scorer.close()


# Outermost first: a request without an answer in time gets its 504 (and its work is cancelled, undone below);
# answers' follow-ups (their log records) run once the final answer is sent, after every slot is freed; the OpenAPI
# document is rewritten from our models; every error answer gets one shape; excess load is shed before any other
# work; then the API key is checked, then the body (type, size, complete).
API_KEY = os.environ.get(SPEC.serving.api_key_env)
# @bentoml.service made the class a Service; mypy types a decorated class as the class itself (python/mypy#3135).
_service = cast("bentoml.Service[PredictionService]", PredictionService)
_service.add_asgi_middleware(TimeoutMiddleware, timeout=REQUEST_TIMEOUT)
_service.add_asgi_middleware(DeliveryMiddleware, paths=PREDICTION_PATHS)
_service.add_asgi_middleware(
    OpenApiMiddleware,
    answers={"/predict": Prediction, "/predict_batch": list[Prediction], "/models": dict[str, str]},
    errors=API_ERRORS,
    key_required=bool(API_KEY),
)
_service.add_asgi_middleware(ErrorBodyMiddleware)
_service.add_asgi_middleware(
    LoadSheddingMiddleware, max_in_flight=SPEC.serving.max_in_flight, retry_after=SPEC.serving.retry_after_seconds
)
_service.add_asgi_middleware(ApiKeyMiddleware, key=API_KEY)
_service.add_asgi_middleware(RequestBodyMiddleware)


def _initial_aliases(registry: ModelRegistry) -> dict[str, str]:
    """The registry's aliases; when it cannot be reached at start, the versions recorded in the bento."""
    try:
        return registry.aliases(SPEC.name)
    except Exception as exc:
        bundled = bundled_aliases()
        if not bundled:
            raise
        log.warning("registry unreachable (%s): serving the bento's recorded versions %s", exc, bundled)
        return bundled
