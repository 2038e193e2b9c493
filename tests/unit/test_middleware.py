"""The service's ASGI middleware, driven directly: load shedding with Retry-After, the API key, the body's media type,
size and completeness, the one error body, the 504 of a request not answered in time, and the OpenAPI document
rewritten from our models."""

import asyncio
import json
import threading
import time
from typing import Any, Literal

import anyio
import jsonschema_rs
import pytest
from pydantic import BaseModel, Field
from schemathesis.specs.openapi.definitions import OPENAPI_30

from mlops_assets.core.serving.delivery import DeliveryMiddleware, after_answer
from mlops_assets.core.serving.scorer import PREDICTIONS
from mlops_assets.serving.contract import API_ERRORS, MAX_PROBLEMS_IN_SENTENCE, SERVER_ERROR, openapi_30
from mlops_assets.serving.middleware import (
    DRAIN_FACTOR,
    MAX_BODY_BYTES,
    ApiKeyMiddleware,
    ErrorBodyMiddleware,
    LoadSheddingMiddleware,
    OpenApiMiddleware,
    RequestBodyMiddleware,
    TimeoutMiddleware,
)

Headers = list[tuple[bytes, bytes]]


class SlowApp:
    """An ASGI app that holds each request until released, then answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.release, self.status = asyncio.Event(), status

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.release.wait()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


class Answers:
    """An ASGI app that answers `status` with `body` and `headers` (in `chunks` pieces), or raises `error`."""

    def __init__(
        self, status: int, body: bytes, headers: Headers | None = None, chunks: int = 1, error: bool = False
    ) -> None:
        self.status, self.body, self.headers, self.chunks, self.error = status, body, headers or [], chunks, error
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        if self.error:
            raise RuntimeError("boom: /secret/path")
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        size = -(-len(self.body) // self.chunks)
        for i in range(self.chunks):
            part = self.body[i * size : (i + 1) * size]
            await send({"type": "http.response.body", "body": part, "more_body": i < self.chunks - 1})


async def _call(
    app: Any, path: str, headers: Headers | None = None, method: str = "POST"
) -> tuple[int, dict[bytes, bytes], bytes]:
    """(status, headers, body) of a request with an empty body."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await app({"type": "http", "method": method, "path": path, "headers": headers or []}, receive, send)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], dict(sent[0]["headers"]), body


def _error(body: bytes) -> str:
    """The sentence of an ErrorBody; fails on any other shape."""
    parsed = json.loads(body)
    assert set(parsed) == {"error", "detail"} and isinstance(parsed["error"], str), parsed
    return parsed["error"]


def test_requests_beyond_the_limit_are_shed_with_retry_after_and_service_recovers() -> None:
    async def scenario() -> None:
        inner = SlowApp()
        app = LoadSheddingMiddleware(inner, max_in_flight=3, retry_after=2)
        held = [asyncio.create_task(_call(app, "/predict")) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert app.in_flight == 3
        status, headers, body = await _call(app, "/predict_batch")  # answered at once, not queued
        assert status == 429 and headers[b"retry-after"] == b"2"
        assert _error(body) == "overloaded: 3 requests in progress; retry after 2 s"
        health = asyncio.create_task(_call(app, "/readyz"))  # never shed
        await asyncio.sleep(0.01)
        inner.release.set()
        assert [s for s, *_ in await asyncio.gather(*held)] == [200, 200, 200]
        assert (await health)[0] == 200
        assert app.in_flight == 0 and (await _call(app, "/predict"))[0] == 200

    asyncio.run(scenario())


def test_a_503_of_the_service_gets_retry_after() -> None:
    async def scenario() -> None:
        inner = SlowApp(status=503)
        inner.release.set()
        status, headers, _ = await _call(LoadSheddingMiddleware(inner, max_in_flight=3, retry_after=1), "/predict")
        assert status == 503 and headers[b"retry-after"] == b"1"

    asyncio.run(scenario())


def test_the_api_key_is_x_api_key_or_a_bearer_token_on_the_api_paths_only() -> None:
    async def scenario() -> None:
        inner = SlowApp()
        inner.release.set()
        app = ApiKeyMiddleware(inner, key="k-123")
        for path in ("/predict", "/predict_batch", "/models"):  # /models names the live versions: guarded too
            status, headers, body = await _call(app, path)
            assert status == 401 and headers[b"www-authenticate"] == b'Bearer realm="mlops"'
            assert _error(body).startswith("no API key: send it as X-API-Key: KEY or Authorization: Bearer KEY")
        accepted = [
            [(b"x-api-key", b"k-123")],
            [(b"authorization", b"Bearer k-123")],
            [(b"authorization", b"bearer k-123")],  # the scheme in any case (RFC 7235)
            [(b"authorization", b"BEARER  k-123")],
        ]
        for headers in accepted:
            assert (await _call(app, "/models", headers))[0] == 200, headers
        refused = {
            b"x-api-key": (b"k-124", "wrong API key"),
            b"authorization": (b"k-123", "the Authorization header must be 'Bearer KEY'"),  # a bare key
        }
        for name, (value, problem) in refused.items():
            status, headers, body = await _call(app, "/predict", [(name, value)])
            assert status == 401 and b"www-authenticate" in headers and _error(body).startswith(problem)
        for path in ("/docs.json", "/livez", "/readyz", "/metrics"):  # open
            assert (await _call(app, path, method="GET"))[0] == 200
        assert (await _call(ApiKeyMiddleware(inner, key=None), "/predict"))[0] == 200  # no key set: none required

    asyncio.run(scenario())


class EchoApp:
    """An ASGI app that reads the whole body and answers 200 with it."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


async def _send_body(
    app: Any,
    path: str,
    chunks: list[bytes],
    content_length: bool | int = True,
    headers: Headers | None = None,
    then_stall: bool = False,
) -> tuple[int, bytes, int]:
    """(status, response body, chunks the client was asked for) of a request whose body comes in `chunks`; with
    `then_stall`, the client sends nothing more after them."""
    sent: list[dict[str, Any]] = []
    queue = list(chunks)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        if not queue and then_stall:
            await asyncio.Event().wait()  # the rest of the body never comes
        chunk = queue.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue) or then_stall}

    length = sum(map(len, chunks)) if content_length is True else content_length
    sized = [(b"content-length", str(length).encode())] if length is not False else []
    await app({"type": "http", "path": path, "headers": [*sized, *(headers or [])]}, receive, send)
    return sent[0]["status"], sent[1]["body"], len(chunks) - len(queue)


def test_a_body_over_its_endpoints_limit_gets_a_413_and_never_reaches_the_service() -> None:
    async def scenario() -> None:
        app = RequestBodyMiddleware(EchoApp(), {"/predict": 10, "/predict_batch": 100})
        status, body, read = await _send_body(app, "/predict", [b"x" * 6, b"x" * 5])
        assert status == 413 and "larger than 10 bytes, the limit of /predict" in _error(body)
        assert read == 2  # by its Content-Length; read and dropped, so that the client still sending reads the 413
        assert (await _send_body(app, "/predict", [b"x" * 10]))[:2] == (200, b"x" * 10)
        assert (await _send_body(app, "/predict_batch", [b"y" * 100]))[:2] == (200, b"y" * 100)  # a larger limit
        # Without a Content-Length (chunked): refused once the chunks read pass the limit.
        status, body, read = await _send_body(app, "/predict", [b"abcd"] * 5, content_length=False)
        assert (status, read) == (413, 5)
        status, body, read = await _send_body(app, "/predict", [b"ab", b"cd", b"ef"], content_length=False)
        assert (status, body) == (200, b"abcdef")  # within the limit: the app gets every byte
        assert (await _send_body(app, "/docs.json", [b"z" * 1000]))[0] == 200  # other paths are not limited
        # Far beyond the limit, nothing is read: the 413 goes out and the connection closes.
        status, _, read = await _send_body(app, "/predict", [b"x" * (10 * DRAIN_FACTOR + 1)])
        assert (status, read) == (413, 0)
        status, _, read = await _send_body(app, "/predict", [b"x" * 60] * 5, content_length=False)
        assert (status, read) == (413, 2)

    asyncio.run(scenario())


def test_by_default_a_megabyte_is_too_much_for_one_request_but_not_for_a_batch() -> None:
    async def scenario() -> None:
        app = RequestBodyMiddleware(EchoApp())
        body = [b"x" * (MAX_BODY_BYTES["/predict"] + 1)]
        assert (await _send_body(app, "/predict", body))[0] == 413
        assert (await _send_body(app, "/predict_batch", body))[0] == 200

    asyncio.run(scenario())


def test_a_body_that_is_not_json_gets_a_415_before_it_is_read() -> None:
    async def scenario() -> None:
        inner = EchoApp()
        app = RequestBodyMiddleware(inner)
        for media_type in (b"multipart/form-data", b"text/plain; charset=utf-8", b"application/x-www-form-urlencoded"):
            status, body, read = await _send_body(app, "/models", [b"{}"], headers=[(b"content-type", media_type)])
            assert (status, read) == (415, 0)
            shown = media_type.split(b";")[0].decode()
            assert _error(body) == f"Content-Type {shown!r} is not supported: send the body as application/json"
        assert inner.calls == 0
        for media_type in (b"application/json", b"Application/JSON; charset=utf-8"):
            assert (await _send_body(app, "/predict", [b"{}"], headers=[(b"content-type", media_type)]))[0] == 200
        assert (await _send_body(app, "/predict", [b"{}"]))[:2] == (200, b"{}")  # none: JSON, as BentoML reads it

    asyncio.run(scenario())


def test_a_body_shorter_than_its_content_length_gets_a_400_at_once_not_a_timeout() -> None:
    async def scenario() -> None:
        inner = EchoApp()
        app = RequestBodyMiddleware(inner, receive_timeout=0.05)
        started = time.monotonic()
        status, body, _ = await _send_body(app, "/predict", [b'{"req', b"uest"], content_length=1200, then_stall=True)
        assert time.monotonic() - started < 1
        assert (status, _error(body)) == (400, "request body ended before its Content-Length (9 of 1,200 bytes)")
        status, body, _ = await _send_body(app, "/predict", [b"{"], content_length=False, then_stall=True)
        assert (status, _error(body)) == (400, "request body stopped arriving after 1 bytes (nothing more for 0.05 s)")
        assert inner.calls == 0

    asyncio.run(scenario())


def test_a_request_not_answered_in_time_gets_a_504_in_the_one_error_body_and_its_follow_ups_are_undone() -> None:
    """BentoML's own timeout answers outside our error body; ours answers first, and what the request would have
    logged is not (its answer was never sent)."""
    events: list[str] = []
    scoring = threading.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        def handler() -> None:  # a scoring slower than the timeout, in a worker thread as BentoML runs it: the
            scoring.wait()  # thread cannot be cancelled, and it records its answer's follow-ups at its end
            after_answer(lambda: events.append("commit"), lambda: events.append("undo"))

        await anyio.to_thread.run_sync(handler)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def scenario(app: Any) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            scoring.set()  # the 504 is out: the scoring may end now

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}"}

        await app({"type": "http", "method": "POST", "path": "/predict", "headers": []}, receive, send)
        return sent

    app = TimeoutMiddleware(DeliveryMiddleware(slow, paths=("/predict",)), timeout=0.05)
    start, body = anyio.run(scenario, app)
    assert start["status"] == 504 and dict(start["headers"])[b"content-type"] == b"application/json"
    assert _error(body["body"]) == "the service did not answer within 0.05 s; retry later"
    assert events == ["undo"]

    # An answer that starts in time is passed on whole, however long its body takes.
    async def streams(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b'{"score": 0.5}'})

    status, _, answer = asyncio.run(_call(TimeoutMiddleware(streams, timeout=0.05), "/predict"))
    assert (status, answer) == (200, b'{"score": 0.5}')


VALIDATION = {
    "error": "2 validation errors for Input",
    "detail": [
        {"type": "float_parsing", "loc": ["request", "amount"], "msg": "Input should be a valid number", "url": "u"},
        {"type": "missing", "loc": ["requests", 3, "key"], "msg": "Field required", "url": "u"},
    ],
}


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (  # BentoML's validation error: the problems in the sentence, the list without `url`
            400,
            json.dumps(VALIDATION).encode(),
            [(b"content-type", b"application/json")],
            {
                "error": "request.amount: Input should be a valid number; requests.3.key: Field required",
                "detail": [{k: v for k, v in d.items() if k != "url"} for d in VALIDATION["detail"]],
            },
        ),
        (  # BentoML's 4xx from an exception comes as a one-element array
            409,
            b'[{"error": "request_id already answered"}]',
            [(b"content-type", b"application/json")],
            {"error": "request_id already answered", "detail": None},
        ),
        (  # a body that is not JSON at all: its own words
            400,
            b'{"detail": [{"loc": [], "msg": "Invalid JSON", "type": "json_invalid"}], "error": "1 validation error"}',
            [(b"content-type", b"application/json")],
            {"error": "body: Invalid JSON", "detail": [{"loc": [], "msg": "Invalid JSON", "type": "json_invalid"}]},
        ),
        (  # a server error never tells its cause
            500,
            b'{"error": "KeyError: /secret/path"}',
            [(b"content-type", b"application/json")],
            {"error": SERVER_ERROR, "detail": None},
        ),
        (  # Starlette's plain-text 405
            405,
            b"Method Not Allowed",
            [(b"content-type", b"text/plain; charset=utf-8"), (b"allow", b"POST")],
            {"error": "method not allowed here: use POST", "detail": None},
        ),
        (
            503,
            b'[{"error": "ServiceUnavailable: queue full"}]',
            [(b"content-type", b"application/json"), (b"retry-after", b"1")],
            {"error": "the service cannot take more work now; retry after 1 s", "detail": None},
        ),
        (  # ours are already in shape
            413,
            b'{"error": "request body larger than 10 bytes", "detail": null}',
            [(b"content-type", b"application/json")],
            {"error": "request body larger than 10 bytes", "detail": None},
        ),
    ],
)
def test_every_error_of_the_api_leaves_in_one_shape(
    status: int, body: bytes, headers: Headers, expected: dict[str, Any]
) -> None:
    sent_headers = [*headers, (b"content-length", str(len(body)).encode()), (b"x-bentoml-request-id", b"7")]
    app = ErrorBodyMiddleware(Answers(status, body, sent_headers, chunks=2))
    answered, answered_headers, answered_body = asyncio.run(_call(app, "/predict"))
    assert answered == status and json.loads(answered_body) == expected
    assert answered_headers[b"content-type"] == b"application/json"
    assert answered_headers[b"content-length"] == str(len(answered_body)).encode()  # recomputed
    assert answered_headers[b"x-bentoml-request-id"] == b"7"  # the other headers are kept
    assert {k: v for k, v in headers if k in (b"allow", b"retry-after")}.items() <= answered_headers.items()


def test_a_long_list_of_problems_is_counted_in_the_sentence_and_kept_whole_in_the_detail() -> None:
    problems = [{"type": "missing", "loc": ["requests", i, "key"], "msg": "Field required"} for i in range(40)]
    app = ErrorBodyMiddleware(Answers(400, json.dumps({"error": "40", "detail": problems}).encode()))
    answered = json.loads(asyncio.run(_call(app, "/predict_batch"))[2])
    assert answered["error"].endswith(f"; and {40 - MAX_PROBLEMS_IN_SENTENCE} more (see detail)")
    assert answered["detail"] == problems


def test_successes_other_paths_and_failures_before_an_answer() -> None:
    answer = b'{"score": 0.5}'
    assert asyncio.run(_call(ErrorBodyMiddleware(Answers(200, answer, chunks=3)), "/predict"))[2] == answer
    plain = Answers(500, b"Internal Server Error", [(b"content-type", b"text/plain")])
    assert asyncio.run(_call(ErrorBodyMiddleware(plain), "/metrics"))[2] == b"Internal Server Error"  # not ours
    status, _, body = asyncio.run(_call(ErrorBodyMiddleware(Answers(200, b"", error=True)), "/models"))
    assert status == 500 and json.loads(body) == {"error": SERVER_ERROR, "detail": None}


class Inner(BaseModel):
    x: int = Field(gt=0)


class Thing(BaseModel):
    """A generic answer: its field names are nobody's."""

    label: str
    score: float | None = Field(description="null when unknown")
    nested: Inner | None
    kind: Literal["thing"]


def bentoml_document() -> dict[str, Any]:
    """What BentoML publishes, in small: inline inputs, 2020-12 schemas from pydantic, its own error components."""
    request = {
        "type": "object",
        "title": "ThingRequest",
        "required": ["key"],
        "properties": {
            "key": {"type": "string", "pattern": "^k\\d+$"},
            "size": {"anyOf": [{"type": "number", "minimum": 0}, {"type": "null"}], "default": None, "title": "Size"},
            "when": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}], "default": None},
            "const": {"const": "a", "type": "string"},  # a field named like a keyword stays a field
        },
        "additionalProperties": False,
    }
    bentoml_errors = {
        str(status): {"description": name, "content": {"application/json": {"schema": {"$ref": f"#/c/{name}"}}}}
        for status, name in ((400, "InvalidArgument"), (404, "NotFound"), (500, "InternalServerError"))
    }
    error_schema = {"type": "object", "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}

    def operation(inputs: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        responses = {"200": {"description": "Successful Response", "content": {"application/json": {"schema": output}}}}
        ref_errors = json.loads(json.dumps(bentoml_errors).replace("#/c/", "#/components/schemas/"))
        return {
            "post": {
                "responses": {**responses, **ref_errors},
                "tags": ["Service APIs"],
                "x-bentoml-name": "x",
                "requestBody": {"content": {"application/json": {"schema": inputs}}},
            }
        }

    lost_null = {"type": "object", "title": "PredictionIODescriptor", "properties": {"score": {"type": "number"}}}
    return {
        "openapi": "3.0.2",
        "info": {"title": "svc", "version": "1"},
        "paths": {
            "/livez": {"get": {"responses": {"200": {"description": "Successful Response"}}, "tags": ["Infra"]}},
            "/predict": operation(
                {"type": "object", "required": ["request"], "properties": {"request": {"$ref": REQUEST_REF}}},
                lost_null,
            ),
            "/predict_batch": operation(
                {
                    "type": "object",
                    "required": ["requests"],
                    "properties": {"requests": {"items": {"$ref": REQUEST_REF}}},
                },
                {"type": "array", "items": {"$ref": "#/components/schemas/Thing"}},
            ),
            "/models": operation(
                {"type": "object", "title": "Input", "properties": {}},
                {"type": "object", "additionalProperties": {"type": "string"}},
            ),
        },
        "components": {
            "schemas": {
                "ThingRequest": request,
                "PredictionIODescriptor": lost_null,
                "InvalidArgument": error_schema,
                "NotFound": error_schema,
                "InternalServerError": error_schema,
            }
        },
    }


REQUEST_REF = "#/components/schemas/ThingRequest"
ANSWERS = {"/predict": Thing, "/predict_batch": list[Thing], "/models": dict[str, str]}


def _document(key_required: bool, answers: dict[str, Any] = ANSWERS, method: str = "GET") -> tuple[dict, bytes]:
    """(headers, body) of GET /docs.json through OpenApiMiddleware over an app that serves `bentoml_document()`."""
    raw = json.dumps(bentoml_document()).encode()
    inner = Answers(200, raw, [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())])
    app = OpenApiMiddleware(inner, answers, API_ERRORS, key_required=key_required)
    status, headers, body = asyncio.run(_call(app, "/docs.json", method=method))
    assert status == 200
    return headers, body


def _nodes(node: Any) -> list[dict[str, Any]]:
    """Every object in a JSON document."""
    found = [node] if isinstance(node, dict) else []
    for child in node.values() if isinstance(node, dict) else node if isinstance(node, list) else []:
        found.extend(_nodes(child))
    return found


def test_the_openapi_document_says_what_the_api_answers() -> None:
    headers, body = _document(key_required=True)
    assert headers[b"content-length"] == str(len(body)).encode()
    document = json.loads(body)
    errors = list(jsonschema_rs.Draft4Validator(OPENAPI_30).iter_errors(document))
    assert not errors, [e.message for e in errors]  # valid OpenAPI 3.0: no null type, no const, no $defs
    schemas = document["components"]["schemas"]
    # The 200s are our models', converted: nullable fields, a nullable reference through allOf.
    predict, batch, models = (document["paths"][p]["post"] for p in ("/predict", "/predict_batch", "/models"))
    assert predict["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Thing"
    }
    assert batch["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Thing"},
    }
    thing = schemas["Thing"]["properties"]
    assert thing["score"] == {"type": "number", "nullable": True, "description": "null when unknown", "title": "Score"}
    assert thing["nested"] == {"allOf": [{"$ref": "#/components/schemas/Inner"}], "nullable": True}
    assert thing["kind"]["enum"] == ["thing"] and "const" not in thing["kind"]
    assert schemas["Inner"]["properties"]["x"] == {
        "type": "integer",
        "minimum": 0,
        "exclusiveMinimum": True,
        "title": "X",
    }
    assert set(schemas["Thing"]["required"]) == {"label", "score", "nested", "kind"}
    # The requests' schemas too (BentoML's, from the service's request model).
    request = schemas["ThingRequest"]["properties"]
    assert request["size"] == {"type": "number", "minimum": 0, "nullable": True, "default": None, "title": "Size"}
    assert request["when"] == {"type": "string", "format": "date-time", "nullable": True, "default": None}
    assert request["const"] == {"enum": ["a"], "type": "string"}
    assert not [n for n in _nodes(document) if any(o == {"type": "null"} for o in n.get("anyOf", []))]
    # An empty body is refused where a property is required, accepted by /models (BentoML reads it as {}).
    assert predict["requestBody"]["required"] and batch["requestBody"]["required"]
    assert models["requestBody"]["required"] is False
    # Every error status of each path, one ErrorBody, with the headers that say what to do.
    for path, statuses in API_ERRORS.items():
        responses = document["paths"][path]["post"]["responses"]
        assert sorted(responses) == sorted(["200", "401", *map(str, statuses)])
        for status in [401, *statuses]:
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}
        assert document["paths"][path]["post"]["security"] == [{"ApiKey": []}, {"Bearer": []}]
        assert responses["401"]["headers"]["WWW-Authenticate"]["required"]
    assert document["paths"]["/predict"]["post"]["responses"]["429"]["headers"]["Retry-After"]["schema"] == {
        "type": "integer",
        "minimum": 0,
    }
    assert schemas["ErrorBody"]["required"] == ["error", "detail"]
    assert schemas["ErrorBody"]["properties"]["detail"]["nullable"]
    assert document["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    # BentoML's infrastructure stays as it was; its error schemas and lost-null descriptor are gone.
    assert document["paths"]["/livez"] == bentoml_document()["paths"]["/livez"]
    assert sorted(schemas) == ["ErrorBody", "ErrorDetail", "Inner", "Thing", "ThingRequest"]


def test_without_a_key_there_is_no_401_and_no_security_and_head_has_the_length() -> None:
    document = json.loads(_document(key_required=False)[1])
    assert "securitySchemes" not in document["components"]
    for path in API_ERRORS:
        assert "401" not in document["paths"][path]["post"]["responses"]
        assert "security" not in document["paths"][path]["post"]
    get_headers, _ = _document(key_required=False)
    head_headers, head_body = _document(key_required=False, method="HEAD")
    assert head_body == b"" and head_headers[b"content-length"] == get_headers[b"content-length"]


@pytest.mark.parametrize("task", sorted(PREDICTIONS))
def test_each_kind_of_answer_is_documented_from_its_own_model(task: str) -> None:
    model = PREDICTIONS[task]
    document = json.loads(_document(True, {"/predict": model, "/predict_batch": list[model]})[1])
    assert not list(jsonschema_rs.Draft4Validator(OPENAPI_30).iter_errors(document))
    documented = document["components"]["schemas"][model.__name__]
    assert documented["properties"]["reason"]["nullable"]  # BentoML's own schema lost it
    assert set(documented["required"]) == set(model.model_fields)


def test_a_path_the_document_does_not_have_fails_loudly() -> None:
    with pytest.raises(ValueError, match=r"\['/score'\] not in BentoML's OpenAPI document"):
        _document(True, {"/score": Thing})


def test_json_schema_2020_becomes_openapi_3_0() -> None:
    assert openapi_30({"type": ["string", "null"], "examples": ["a", "b"]}) == {
        "type": "string",
        "nullable": True,
        "example": "a",
    }
    assert openapi_30({"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]}) == {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "nullable": True,
    }
    assert openapi_30({"type": "number", "exclusiveMaximum": 1}) == {
        "type": "number",
        "maximum": 1,
        "exclusiveMaximum": True,
    }
    nested = {"type": "object", "additionalProperties": {"anyOf": [{"type": "number"}, {"type": "null"}]}}
    assert openapi_30(nested)["additionalProperties"] == {"type": "number", "nullable": True}
    assert openapi_30({"items": {"const": 1}, "type": "array"}) == {"items": {"enum": [1]}, "type": "array"}
