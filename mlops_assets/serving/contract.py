"""The HTTP contract of the prediction API: the one error body every refusal carries, and the OpenAPI document
rewritten from our pydantic models so that it says what the service answers.

BentoML publishes OpenAPI 3.0.2 but fills it with JSON Schema 2020-12 from pydantic (`anyOf [X, {type: null}]`,
`const`, `$defs`), loses the null of an optional field in some of its own response schemas, documents its error
bodies wrongly and knows nothing of what our middleware answers (401, 413, 415, 429, 503). `openapi_document` takes
BentoML's document and replaces, on the API paths, what is wrong; everything else (infrastructure paths, info) stays.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterator, Mapping
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

# A refused request's problems listed one by one in `error`; the rest are counted (`detail` has them all).
MAX_PROBLEMS_IN_SENTENCE = 5
SERVER_ERROR = "the service failed to answer this request; its log has the details"
UNAVAILABLE = "the service cannot take more work now"
COMPONENTS = "#/components/schemas/"

# The error statuses each API path can answer, besides 401 when a key is set: 400 a refused body, 409 a request_id
# answered already, 413 and 415 a body too large or not JSON, 429 load shedding, 503 BentoML unable to take more
# work (with Retry-After, as a 429), 500 a failure, 504 no answer in time (middleware.REQUEST_TIMEOUT).
API_ERRORS: dict[str, tuple[int, ...]] = {
    "/predict": (400, 409, 413, 415, 429, 500, 503, 504),
    "/predict_batch": (400, 409, 413, 415, 429, 500, 503, 504),
    "/models": (400, 413, 415, 500, 504),
}
# What each error status means on the API paths: the response descriptions of the document.
ERROR_MEANINGS: dict[int, str] = {
    400: "The request is malformed: not JSON, a field missing, of the wrong type or out of its range (listed in "
    "`detail`), or a body that ended before its Content-Length.",
    401: "No API key, or a wrong one: send it as `X-API-Key: KEY` or `Authorization: Bearer KEY`.",
    409: "A request with this `request_id` was already answered.",
    413: "The body is larger than the endpoint's limit, or a batch holds more requests than the service takes.",
    415: "The body is not `application/json`.",
    429: "Too many requests in progress in this worker: retry after `Retry-After` seconds.",
    500: "The service failed; its log has the details (never sent to the client).",
    503: "The service cannot take more work now: retry after `Retry-After` seconds.",
    504: "The service did not start answering in time; nothing was logged or kept of the request.",
}
RETRY_AFTER = {
    "description": "seconds to wait before retrying",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}
# The headers each error status carries, as documented.
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'the scheme to authenticate with: `Bearer realm="mlops"`',
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {"Retry-After": RETRY_AFTER},
    503: {"Retry-After": RETRY_AFTER},
}
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
}


class ErrorDetail(BaseModel):
    """One problem of a refused request's body."""

    loc: list[str | int] = Field(description="where: the path of the field in the body (empty: the body itself)")
    msg: str = Field(description="what is wrong with it")
    type: str = Field(description="the kind of problem (pydantic's error type, e.g. missing, float_parsing)")


class ErrorBody(BaseModel):
    """The body of every answer that is not a 2xx on the API paths."""

    error: str = Field(description="what went wrong, in one sentence")
    detail: list[ErrorDetail] | None = Field(description="the problems of a refused body one by one; null otherwise")


def error_body(error: str, detail: list[ErrorDetail] | None = None) -> bytes:
    return ErrorBody(error=error, detail=detail).model_dump_json().encode()


def problems_sentence(problems: list[ErrorDetail]) -> str:
    """`request.amount: Input should be a valid number; ...`, the first few problems of a refused body."""
    shown = [f"{'.'.join(map(str, p.loc)) or 'body'}: {p.msg}" for p in problems[:MAX_PROBLEMS_IN_SENTENCE]]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more:,} more (see detail)" if more else "")


def reshaped(status: int, body: Any, headers: Mapping[bytes, bytes] | None = None) -> ErrorBody:
    """Any error answer (`body` parsed from JSON, or the text of a non-JSON one; `headers` lower-cased) as our
    `ErrorBody`: BentoML's validation errors (`{error, detail: [pydantic errors]}`) with their problems in the
    sentence, its 4xx sent as a one-element array, a plain-text answer. A server error says nothing of its cause
    (it is in the log); a 503 says when to retry when Retry-After does."""
    headers = headers or {}
    if status >= 500:
        error = {500: SERVER_ERROR, 503: UNAVAILABLE}.get(status) or _phrase(status).lower()
        if b"retry-after" in headers:
            error += f"; retry after {headers[b'retry-after'].decode('latin-1')} s"
        return ErrorBody(error=error, detail=None)
    if status == 405 and b"allow" in headers:
        return ErrorBody(error=f"method not allowed here: use {headers[b'allow'].decode('latin-1')}", detail=None)
    if isinstance(body, list) and len(body) == 1:  # BentoML answers `[{"error": ...}]` for its own 4xx exceptions
        body = body[0]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        detail = body.get("detail")
        if isinstance(detail, list) and detail and all(isinstance(d, dict) for d in detail):
            problems = [
                ErrorDetail(loc=d.get("loc") or [], msg=str(d.get("msg", "")), type=str(d.get("type", "")))
                for d in detail
            ]
            return ErrorBody(error=problems_sentence(problems), detail=problems)
        return ErrorBody(error=body["error"], detail=None)
    text = " ".join(body.split()) if isinstance(body, str) else ""
    return ErrorBody(error=text or _phrase(status), detail=None)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def openapi_document(
    document: Mapping[str, Any],
    answers: Mapping[str, Any],
    errors: Mapping[str, Collection[int]],
    authenticated: bool,
) -> dict[str, Any]:
    """BentoML's OpenAPI document made true on the API paths.

    `answers`: path -> the type its 200 carries (a pydantic model, `list[Model]`, `dict[str, str]`, ...);
    `errors`: path -> the error statuses it can answer (401 is added when `authenticated`, i.e. a key is set).
    Each path's 200 and error responses are ours (`ErrorBody`, with Retry-After and WWW-Authenticate), its request
    body is required when its schema requires a property (an empty body is refused then, accepted otherwise), and
    the whole document is OpenAPI 3.0 (`nullable`, no `anyOf` with null), with unreferenced schemas dropped.
    """
    out = copy.deepcopy(dict(document))
    components = out.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    adapters: list[tuple[str, Literal["serialization"], TypeAdapter[Any]]] = [
        (path, "serialization", TypeAdapter(kind)) for path, kind in answers.items()
    ]
    adapters.append(("ErrorBody", "serialization", TypeAdapter(ErrorBody)))
    generated, defs = TypeAdapter.json_schemas(adapters, ref_template=COMPONENTS + "{model}")
    schemas.update(defs.get("$defs", {}))
    missing = sorted((set(answers) | set(errors)) - set(out.get("paths", {})))
    if missing:
        raise ValueError(f"{missing} not in BentoML's OpenAPI document (its paths: {sorted(out.get('paths', {}))})")
    for path in sorted(set(answers) | set(errors)):
        for operation in out["paths"][path].values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = {}
            if path in answers:
                ok = operation["responses"].get("200", {"description": "Successful Response"})
                schema = generated[(path, "serialization")]
                responses["200"] = {**ok, "content": {"application/json": {"schema": schema}}}
            else:
                responses["200"] = operation["responses"]["200"]
            for status in sorted({*errors.get(path, ()), *([401] if authenticated else [])}):
                responses[str(status)] = _error_response(status)
            operation["responses"] = responses
            if "requestBody" in operation:
                operation["requestBody"]["required"] = _requires_properties(operation["requestBody"], schemas)
            if authenticated:
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
    if authenticated:
        components["securitySchemes"] = {**components.get("securitySchemes", {}), **SECURITY_SCHEMES}
    for schema_holder, key in _schema_slots(out):
        schema_holder[key] = openapi_30(schema_holder[key])
    reachable = _referenced(out.get("paths", {}), schemas)
    components["schemas"] = {name: s for name, s in schemas.items() if name in reachable}
    return out


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERROR_MEANINGS.get(status, _phrase(status)),
        "content": {"application/json": {"schema": {"$ref": COMPONENTS + "ErrorBody"}}},
    }
    if status in ERROR_HEADERS:
        response["headers"] = copy.deepcopy(ERROR_HEADERS[status])
    return response


def _requires_properties(request_body: Mapping[str, Any], schemas: Mapping[str, Any]) -> bool:
    """Whether an empty body is refused: BentoML reads it as `{}`, so only when its schema requires a property."""
    for media in request_body.get("content", {}).values():
        schema = media.get("schema", {})
        while "$ref" in schema:
            schema = schemas[schema["$ref"].removeprefix(COMPONENTS)]
        if schema.get("required"):
            return True
    return False


def _schema_slots(document: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """(holder, key) of every schema in an OpenAPI document: components and those of parameters, request bodies,
    responses and their headers."""
    schemas = document.get("components", {}).get("schemas", {})
    yield from ((schemas, name) for name in list(schemas))
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if "schema" in parameter:
                    yield parameter, "schema"
            holders = [operation.get("requestBody", {})]
            for response in operation.get("responses", {}).values():
                holders.append(response)
                holders.extend(response.get("headers", {}).values())
            for holder in holders:
                if "schema" in holder:
                    yield holder, "schema"
                for media in holder.get("content", {}).values():
                    if "schema" in media:
                        yield media, "schema"


# JSON Schema keywords whose value is a schema, a list of schemas or a map of names to schemas.
_SCHEMA_KEYWORDS = ("items", "additionalProperties", "not", "contains", "propertyNames")
_SCHEMA_LIST_KEYWORDS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "definitions")


def openapi_30(schema: Any) -> Any:
    """A JSON Schema (2020-12, as pydantic writes it) as an OpenAPI 3.0 schema: `anyOf [X, {type: null}]` becomes X
    with `nullable: true` (wrapped in `allOf` when X is a `$ref`, whose siblings 3.0 ignores), a type list with
    null likewise, `const` an `enum` of one, numeric `exclusiveMinimum`/`exclusiveMaximum` the 3.0 booleans,
    `examples` one `example`."""
    if not isinstance(schema, dict):
        return schema  # true/false (additionalProperties: false)
    node = dict(schema)
    for keyword in ("anyOf", "oneOf"):
        options = node.get(keyword)
        if isinstance(options, list) and any(_is_null(o) for o in options):
            rest = [o for o in options if not _is_null(o)]
            del node[keyword]
            node["nullable"] = True
            if len(rest) == 1 and "$ref" in rest[0]:
                node["allOf"] = [*node.get("allOf", []), rest[0]]
            elif len(rest) == 1:
                node = {**rest[0], **node}  # the field's title, description and default win over the option's
            elif rest:
                node[keyword] = rest
    if isinstance(node.get("type"), list):
        types = [t for t in node["type"] if t != "null"]
        if len(types) < len(node["type"]):
            node["nullable"] = True
        if len(types) == 1:
            node["type"] = types[0]
        else:
            del node["type"]
            if types:
                node["anyOf"] = [{"type": t} for t in types]
    if node.get("type") == "null":  # only null: 3.0 has no null type
        del node["type"]
        node.update(nullable=True, enum=[None])
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            node[bound], node[exclusive] = value, True
    if isinstance(node.get("examples"), list):
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]
    for keyword, value in list(node.items()):
        if keyword in _SCHEMA_KEYWORDS:
            node[keyword] = openapi_30(value)
        elif keyword in _SCHEMA_LIST_KEYWORDS and isinstance(value, list):
            node[keyword] = [openapi_30(v) for v in value]
        elif keyword in _SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
            node[keyword] = {name: openapi_30(v) for name, v in value.items()}
    return node


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null" and len(schema) == 1


def _referenced(root: Any, schemas: Mapping[str, Any]) -> set[str]:
    """The component schemas `root` refers to, directly or through other components."""
    found: set[str] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(COMPONENTS):
                name = ref.removeprefix(COMPONENTS)
                if name not in found and name in schemas:
                    found.add(name)
                    pending.append(schemas[name])
            pending.extend(v for k, v in node.items() if k != "$ref")
        elif isinstance(node, list):
            pending.extend(node)
    return found
