"""The HTTP API fuzzed from its own OpenAPI document (schemathesis) against the served bento: whatever arrives, no
5xx and no crash; every rejection is a 4xx that says why."""

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import BODY, KEY, Served, post, stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _fuzz(operation: Any, url: str, seen: dict[int, int]) -> None:
    """Inputs that fit the schema and inputs that break it (wrong types, missing fields, junk), on one operation."""
    valid, invalid = (operation.as_strategy(mode) for mode in schemathesis.GenerationMode)

    @given(case=valid | invalid)
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        for headers in ({"x-api-key": KEY}, {}):  # with the key, and without it (401 before any parsing)
            response = case.call(base_url=url, headers=headers, timeout=30)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.path, case.body, response.status_code, response.text[:500])
            if response.status_code >= 400:
                assert response.text.strip(), (case.path, response.status_code)  # never an unexplained rejection

    run()


def test_no_input_crashes_the_service_or_goes_unexplained(served: Served) -> None:
    url, process = served.start("fuzz")
    try:
        schema = schemathesis.openapi.from_url(f"{url}/docs.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        paths = {operation.path for operation in operations}
        assert {"/predict", "/predict_batch", "/models"} <= paths
        seen: dict[int, int] = {}
        for operation in operations:
            _fuzz(operation, url, seen)
        assert {200, 400, 401} <= set(seen), seen  # the fuzzer reached both the model and the key check
        # Still serving after all of it.
        status, answer = post(f"{url}/predict", {"request": {**BODY, "request_id": "after-fuzz"}})
        assert status == 200 and answer["request_id"] == "after-fuzz"
    finally:
        stop(process)
