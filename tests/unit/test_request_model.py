"""The request model the service generates from the spec: fields, constraints, the optional replay timestamp, unknown
fields refused; and a client's bad request logged as one warning line."""

import importlib
import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

from mlops_assets.spec import PipelineSpec, load_specs


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("MLOPS_PIPELINE", "fraud")  # the service module serves one pipeline
    return importlib.import_module("mlops_assets.serving.service")


def parse(model: Any, **fields: Any) -> Any:
    """A request as the service reads it: JSON text, validated in JSON mode (strict types)."""
    return model.model_validate_json(json.dumps(fields))


def test_fields_and_constraints_come_from_the_spec(service: ModuleType) -> None:
    (spec,) = load_specs()
    model = service.request_model(spec)
    assert "timestamp" not in model.model_fields  # no replays unless the spec allows them
    request = parse(model, customer_id="c000001", amount=12.5, channel="pos")
    assert request.request_id is None and request.country is None
    with pytest.raises(ValidationError) as error:
        parse(model, customer_id="x1", amount=-1, channel="fax")
    assert {e["loc"][0] for e in error.value.errors()} == {"customer_id", "amount", "channel"}


def test_an_unknown_field_is_refused_by_name(service: ModuleType) -> None:
    """A misspelt field would otherwise be dropped, and the request scored as if the value were missing."""
    (spec,) = load_specs()
    model = service.request_model(spec)
    with pytest.raises(ValidationError) as error:
        parse(model, customer_id="c000001", amount=1.0, chanel="pos", timestamp="2026-03-02T09:00:00")
    assert {(e["loc"][0], e["type"]) for e in error.value.errors()} == {
        ("chanel", "extra_forbidden"),
        ("timestamp", "extra_forbidden"),  # replays are off in this spec
    }
    assert model.model_json_schema()["additionalProperties"] is False  # and the OpenAPI document says so


def test_a_replay_timestamp_when_the_spec_allows_it(service: ModuleType) -> None:
    (spec,) = load_specs()
    replay: PipelineSpec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"allow_replay": True})})
    model = service.request_model(replay)
    request = parse(model, customer_id="c000001", amount=1.0, timestamp="2026-03-02T09:00:00")
    assert request.timestamp == datetime(2026, 3, 2, 9, tzinfo=UTC)  # without a zone: UTC
    request = parse(model, customer_id="c000001", amount=1.0, timestamp="2026-03-02T09:00:00+02:00")
    assert request.timestamp == datetime(2026, 3, 2, 7, tzinfo=UTC)
    with pytest.raises(ValidationError, match="timestamp"):
        parse(model, customer_id="c000001", amount=1.0, timestamp="yesterday")


@pytest.mark.parametrize(
    ("timestamp", "problem"),
    [
        ("9999-12-31T23:59:59-01:00", "outside the range of UTC times"),  # 500 (OverflowError) before
        ("0001-01-01T00:00:00+01:00", "outside the range of UTC times"),
        ("0001-01-01T00:00:00Z", "before 2026-01-01, the pipeline's first day"),
        (0, "Input should be a valid datetime"),  # a number is no time (it read as 1970 before)
        ("FUTURE", "later than the server's clock by more than 5m"),
    ],
)
def test_a_request_time_that_cannot_be_meant_is_refused_by_validation(
    service: ModuleType, timestamp: Any, problem: str
) -> None:
    """Validated before batching or scoring: a poison row is its own 400, never another call's failure."""
    (spec,) = load_specs()
    replay: PipelineSpec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"allow_replay": True})})
    if timestamp == "FUTURE":
        timestamp = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    with pytest.raises(ValidationError) as error:
        parse(service.request_model(replay), customer_id="c000001", amount=1.0, timestamp=timestamp)
    ((field, message),) = [(e["loc"][0], e["msg"]) for e in error.value.errors()]
    assert field == "timestamp" and problem in message, message


@pytest.mark.parametrize(
    ("fields", "where", "problem"),
    [
        ({"amount": True}, "amount", "valid number"),  # scored as 1.0 before
        ({"amount": "12.5"}, "amount", "valid number"),
        ({"customer_id": "c\u0661\u0662\u0663\u0664\u0665\u0666"}, "customer_id", "should match the pattern"),
        ({"customer_id": "c\uff11\uff12\uff13\uff14\uff15\uff16"}, "customer_id", "should match the pattern"),
        ({"merchant_category": "x" * 257}, "merchant_category", "at most 256 characters"),
        ({"request_id": ""}, "request_id", "at least 1 character"),
    ],
)
def test_strict_types_ascii_keys_and_bounded_text(
    service: ModuleType, fields: dict[str, Any], where: str, problem: str
) -> None:
    (spec,) = load_specs()
    model = service.request_model(spec)
    body = json.dumps({"customer_id": "c000001", "amount": 1, **fields})
    with pytest.raises(ValidationError) as error:
        model.model_validate_json(body)
    ((field, message),) = [(e["loc"][0], e["msg"]) for e in error.value.errors()]
    assert field == where and problem in message, message
    assert parse(model, customer_id="c000001", amount=1).amount == 1.0  # a JSON integer is a number


def _bentoml_logs(service: ModuleType, error: BaseException) -> logging.LogRecord:
    """The record BentoML's `log_exception` makes for a failed request, after the service's filter."""
    try:
        raise error
    except BaseException:
        record = logging.LogRecord(
            service._REQUEST_ERRORS_LOGGER,
            logging.ERROR,
            __file__,
            1,
            "Exception on %s [%s]",
            ("/predict", "POST"),
            sys.exc_info(),
        )
    assert service.CLIENT_ERRORS.filter(record)
    return record


def test_a_clients_bad_request_is_one_warning_line_naming_the_fields(service: ModuleType) -> None:
    from bentoml.exceptions import BadInput

    (spec,) = load_specs()
    try:
        service.request_model(spec)(customer_id="c000001", amount=-1, chanel="pos")
    except ValidationError as exc:
        invalid = exc
    record = _bentoml_logs(service, invalid)
    assert record.levelno == logging.WARNING and record.exc_info is None
    message = record.getMessage()
    assert message.startswith("POST /predict answered 400: ") and "\n" not in message
    assert "amount: Input should be greater than or equal to 0" in message and "chanel: Extra inputs" in message
    assert logging.Formatter().format(record) == message  # no traceback below it

    record = _bentoml_logs(service, BadInput("Invalid JSON input received"))
    assert (record.levelno, record.getMessage()) == (
        logging.WARNING,
        "POST /predict answered 400: Invalid JSON input received",
    )


def test_a_server_error_keeps_its_traceback(service: ModuleType) -> None:
    from bentoml.exceptions import InternalServerError

    for error in (RuntimeError("the model failed"), InternalServerError("boom")):
        record = _bentoml_logs(service, error)
        assert record.levelno == logging.ERROR and record.exc_info is not None
        assert "Traceback" in logging.Formatter().format(record)
