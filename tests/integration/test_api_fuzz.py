"""The HTTP API against its own OpenAPI document, on the served bento (schemathesis): what the document allows and
what it does not (both generation modes, and schemathesis' coverage cases: boundaries, missing fields, other
methods and media types), each sent with the API key and without it; every built-in check must hold for every
answer: no 5xx, only documented statuses, media types and headers, bodies that match their schemas, valid data
accepted, invalid data refused, the key enforced."""

import json
import socket
import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.errors import FailureGroup

from mlops_assets.serving.middleware import BODY_RECEIVE_TIMEOUT
from tests.helpers import BODY, KEY, Served, post, stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = 150  # generated cases per operation and generation mode; each is sent with the key and without it


class Run:
    """Sends each case with the key and without it, validated by every built-in check; keeps the first failing case
    of each kind (operation, check, key or not) with its curl, and counts them."""

    def __init__(self, url: str) -> None:
        load_all_checks()
        self.url, self.checks, self.cases = url, CHECKS.get_all(), 0
        self.statuses, self.failed = Counter[int](), Counter[tuple[str, str, bool]]()
        self.first: dict[tuple[str, str, bool], str] = {}

    def check(self, case: Any) -> None:
        self.cases += 1
        for headers in ({"X-API-Key": KEY}, {}):
            try:
                response = case.call_and_validate(base_url=self.url, headers=headers, checks=self.checks, timeout=30)
            except (AssertionError, FailureGroup) as exc:
                for failure in getattr(exc, "exceptions", None) or [exc]:
                    kind = (case.operation.label, getattr(failure, "title", type(failure).__name__), bool(headers))
                    self.failed[kind] += 1
                    curl = case.as_curl_command(headers=headers, base_url=self.url)
                    self.first.setdefault(kind, f"{failure}\n{curl}")
            else:
                self.statuses[response.status_code] += 1

    def report(self) -> str:
        return "\n\n".join(
            f"{operation} ({'with' if key else 'without'} key), {n} times: {self.first[(operation, title, key)]}"
            for (operation, title, key), n in self.failed.items()
        )


def _fuzz(operation: Any, mode: GenerationMode, run: Run) -> None:
    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def send(case: Any) -> None:
        run.check(case)

    send()


def _modes(operation: Any) -> list[GenerationMode]:
    """Both modes; only the positive one for an operation without inputs (health, metrics: nothing to break)."""
    inputs = len(operation.body) or any(True for _ in operation.iter_parameters())
    return list(GenerationMode) if inputs else [GenerationMode.POSITIVE]


def _truncated(url: str, body: bytes, length: int) -> tuple[bytes, Any]:
    """(status line, JSON body) of a POST /predict that sends `body` but announces `length` bytes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        head = f"POST /predict HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
        connection.sendall(f"{head}Content-Length: {length}\r\n\r\n".encode() + body)
        answer = b""
        while chunk := connection.recv(65536):  # the server closes the connection after the 400
            answer += chunk
    head_lines, _, text = answer.partition(b"\r\n\r\n")
    return head_lines.split(b"\r\n")[0], json.loads(text)


def test_every_answer_keeps_the_promises_of_the_openapi_document(served: Served) -> None:
    url, process = served.start("fuzz")
    try:
        schema = schemathesis.openapi.from_url(f"{url}/docs.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {"/predict", "/predict_batch", "/models"} <= {operation.path for operation in operations}
        run = Run(url)
        for operation in operations:
            coverage = schema.iter_coverage_cases(
                operation, generation_modes=list(GenerationMode), generation_config=schema.config.generation
            )
            for case in coverage:
                run.check(case)
            for mode in _modes(operation):
                _fuzz(operation, mode, run)
        assert not run.failed, f"{len(run.failed)} kinds of failure in {run.cases} cases:\n\n{run.report()}"
        assert {200, 400, 401, 415} <= set(run.statuses), run.statuses  # the model, validation, key and media type
        # Still serving after all of it.
        status, answer = post(f"{url}/predict", {"request": {**BODY, "request_id": "after-fuzz"}})
        assert status == 200 and answer["request_id"] == "after-fuzz"
        # A body that stops short of its Content-Length: a 400 once nothing came for BODY_RECEIVE_TIMEOUT, not a 504
        # after the service's timeout.
        started = time.monotonic()
        status_line, answer = _truncated(url, b'{"request": {"customer_id"', 200)
        assert status_line.startswith(b"HTTP/1.1 400") and time.monotonic() - started < BODY_RECEIVE_TIMEOUT + 2
        assert answer == {"error": "request body ended before its Content-Length (26 of 200 bytes)", "detail": None}
    finally:
        stop(process)
