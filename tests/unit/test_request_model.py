"""The request model the service generates from the spec: fields, constraints, the optional replay timestamp."""

import importlib
from datetime import datetime
from types import ModuleType

import pytest
from pydantic import ValidationError

from mlops_assets.spec import PipelineSpec, load_specs


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("MLOPS_PIPELINE", "fraud")  # the service module serves one pipeline
    return importlib.import_module("mlops_assets.serving.service")


def test_fields_and_constraints_come_from_the_spec(service: ModuleType) -> None:
    (spec,) = load_specs()
    model = service.request_model(spec)
    assert "timestamp" not in model.model_fields  # no replays unless the spec allows them
    request = model(customer_id="c000001", amount=12.5, channel="pos")
    assert request.request_id is None and request.country is None
    with pytest.raises(ValidationError) as error:
        model(customer_id="x1", amount=-1, channel="fax")
    assert {e["loc"][0] for e in error.value.errors()} == {"customer_id", "amount", "channel"}


def test_a_replay_timestamp_when_the_spec_allows_it(service: ModuleType) -> None:
    (spec,) = load_specs()
    replay: PipelineSpec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"allow_replay": True})})
    model = service.request_model(replay)
    request = model(customer_id="c000001", amount=1.0, timestamp="2026-03-02T09:00:00")
    assert request.timestamp == datetime(2026, 3, 2, 9)
    with pytest.raises(ValidationError, match="timestamp"):
        model(customer_id="c000001", amount=1.0, timestamp="yesterday")
