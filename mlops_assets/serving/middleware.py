"""ASGI middleware of the prediction service, on its API paths (/predict, /predict_batch, /models): one error body
for every refusal, the API key, the body's media type, size and completeness, and load shedding; plus the OpenAPI
document made true, and a 504 of our shape for a request not answered in time. Health, metrics and docs stay open
and are never shed.

Add them outermost first, as service.py does: TimeoutMiddleware, OpenApiMiddleware, ErrorBodyMiddleware,
LoadSheddingMiddleware, ApiKeyMiddleware, RequestBodyMiddleware (excess load is shed before any other work, the key is
checked before the body is read, and every refusal, ours or BentoML's, leaves through ErrorBodyMiddleware or, late,
as TimeoutMiddleware's 504).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Collection, Mapping
from typing import Any

from mlops_assets.serving.contract import error_body, openapi_document, reshaped

log = logging.getLogger(__name__)

PREDICTION_PATHS = ("/predict", "/predict_batch")
# The paths of the API: they need the key, take JSON bodies and answer errors as `ErrorBody`.
API_PATHS = (*PREDICTION_PATHS, "/models")
DOCS_PATH = "/docs.json"
# The largest body each endpoint reads: one request is a few hundred bytes, a batch call carries many, /models none.
MAX_BODY_BYTES = {"/predict": 1_000_000, "/predict_batch": 10_000_000, "/models": 10_000}
# A refused body up to this many times the limit is read (and dropped) before the 413, so that a client still sending
# it reads the answer instead of a broken connection; a larger one gets the 413 and the connection closes.
DRAIN_FACTOR = 10
# Seconds to wait for the next part of a body. A body shorter than its Content-Length would otherwise hold the
# request until its timeout answers 504 (REQUEST_TIMEOUT); a client that sends nothing for this long is not sending the
# rest (on a slow link, bytes still arrive within it).
BODY_RECEIVE_TIMEOUT = 2.0
AUTHENTICATE = (b"www-authenticate", b'Bearer realm="mlops"')
# Seconds a request may take before its answer starts: then 504. BentoML's own timeout (`traffic.timeout`) answers
# outside our error body, so the service sets it TIMEOUT_BACKSTOP seconds later: ours answers first.
REQUEST_TIMEOUT = 10.0
TIMEOUT_BACKSTOP = 5.0


async def _reject(send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _answer(send, status, error_body(message), headers or [])


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def _on(scope: dict[str, Any], paths: Collection[str]) -> bool:
    return scope["type"] == "http" and scope["path"] in paths


class TimeoutMiddleware:
    """Answers 504 with the one error body when a request's answer has not started within `timeout` seconds. Its
    work is not cancelled (a scoring runs in a worker thread, which cancelling would abandon with what it records):
    it finishes, its answer goes nowhere, and DeliveryMiddleware undoes what it would have logged and frees its
    request id. BentoML's own timeout, later, is the backstop for work that never ends. An answer that started runs
    on."""

    def __init__(self, app: Any, timeout: float = REQUEST_TIMEOUT) -> None:
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, timed_out = asyncio.Event(), False

        async def send_in_time(message: dict[str, Any]) -> None:
            if timed_out:  # the 504 went out: this answer is not delivered (DeliveryMiddleware undoes its work)
                raise ConnectionError("the answer came after its 504")
            started.set()
            await send(message)

        work = asyncio.ensure_future(self.app(scope, receive, send_in_time))
        waiting = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait((work, waiting), timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
            if work.done() or started.is_set():
                await work
                return
            timed_out = True
            log.warning("%s %s answered 504: no answer within %g s", scope.get("method"), scope["path"], self.timeout)
            await _reject(send, 504, f"the service did not answer within {self.timeout:g} s; retry later")
            await asyncio.wait((work,))  # it ends, failing to send: its undo runs (DeliveryMiddleware)
            if not work.cancelled():
                work.exception()  # retrieved and dropped: it belongs to an answer nobody gets
        finally:
            waiting.cancel()
            work.cancel()  # when this request itself is cancelled; nothing once the work is done


class ErrorBodyMiddleware:
    """Gives every answer of the API paths that is not a 2xx the one error body, `{"error": sentence, "detail":
    [{loc, msg, type}] | null}` (contract.ErrorBody): BentoML's validation errors, its 4xx sent as a JSON array, its
    plain-text 405; a 5xx says nothing of its cause. Error answers are buffered (they are small), others pass
    untouched."""

    def __init__(self, app: Any, paths: Collection[str] = API_PATHS) -> None:
        self.app, self.paths = app, tuple(paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not _on(scope, self.paths):
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] | None = None  # the start of an error answer, until its body is complete
        chunks: list[bytes] = []
        started = False

        async def send_reshaped(message: dict[str, Any]) -> None:
            nonlocal held, started
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message
            elif held is None:
                started = started or message["type"] == "http.response.start"
                await send(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    started = True
                    await self._send(send, held, b"".join(chunks))

        try:
            await self.app(scope, receive, send_reshaped)
        except Exception:
            if started:
                raise
            log.exception("%s %s failed before answering", scope.get("method"), scope["path"])
            await _reject(send, 500, reshaped(500, None).error)

    @staticmethod
    async def _send(send: Any, start: dict[str, Any], body: bytes) -> None:
        headers = {k.lower(): v for k, v in start.get("headers", [])}
        try:
            parsed: Any = json.loads(body)
        except ValueError:  # a plain-text answer (Starlette's 405)
            parsed = body.decode("utf-8", "replace")
        answer = reshaped(start["status"], parsed, headers)
        kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-type", b"content-length")]
        await _answer(send, start["status"], answer.model_dump_json().encode(), kept)


class LoadSheddingMiddleware:
    """Answers 429 with Retry-After once `max_in_flight` prediction requests are in progress in this worker, instead
    of queueing without bound; adds Retry-After to a 503 of the service (BentoML's when it cannot take more work).
    Accepted requests keep their latency; rejected ones cost almost nothing."""

    def __init__(self, app: Any, max_in_flight: int, retry_after: int) -> None:
        self.app, self.max_in_flight, self.in_flight = app, max_in_flight, 0
        self.retry_after = (b"retry-after", str(retry_after).encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not _on(scope, PREDICTION_PATHS):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            message = f"overloaded: {self.in_flight} requests in progress; retry after {self.retry_after[1].decode()} s"
            await _reject(send, 429, message, [self.retry_after])
            return

        async def send_with_retry_after(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                message = {**message, "headers": [*message.get("headers", []), self.retry_after]}
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, receive, send_with_retry_after)
        finally:
            self.in_flight -= 1


class ApiKeyMiddleware:
    """Requires the API key on the API paths, as `X-API-Key: KEY` or `Authorization: Bearer KEY` (the scheme in any
    case, RFC 7235), compared in constant time; a 401 carries `WWW-Authenticate: Bearer realm="mlops"`. Without a
    key in the environment, nothing is required."""

    def __init__(self, app: Any, key: str | None, paths: Collection[str] = API_PATHS) -> None:
        self.app, self.key, self.paths = app, key.encode() if key else None, tuple(paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.key and _on(scope, self.paths):
            problem = self._problem(dict(scope["headers"]), self.key)
            if problem:
                await _reject(send, 401, problem, [AUTHENTICATE])
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _problem(headers: dict[bytes, bytes], key: bytes) -> str | None:
        """Why the request's credentials are refused; None when they are the key."""
        given = headers.get(b"x-api-key")
        if given is None:
            authorization = headers.get(b"authorization")
            if authorization is None:
                return "no API key: send it as X-API-Key: KEY or Authorization: Bearer KEY"
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() != b"bearer":
                return "the Authorization header must be 'Bearer KEY' (or send X-API-Key: KEY)"
            given = token.lstrip(b" ")
        return None if hmac.compare_digest(given, key) else "wrong API key"


class RequestBodyMiddleware:
    """Reads the body of an API request before the service parses it, and refuses it when it cannot be JSON of a
    sane size: 415 when its Content-Type is not application/json (before reading it), 413 when it is larger than
    its endpoint's limit (`limits`, bytes: by its Content-Length, or, sent in chunks without one, once the chunks
    read so far pass it), 400 when it stops arriving for `receive_timeout` seconds (shorter than its
    Content-Length). A body within bounds is passed on whole."""

    def __init__(
        self, app: Any, limits: Mapping[str, int] | None = None, receive_timeout: float = BODY_RECEIVE_TIMEOUT
    ) -> None:
        self.app, self.limits = app, dict(MAX_BODY_BYTES if limits is None else limits)
        self.receive_timeout = receive_timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        limit = self.limits.get(scope["path"]) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        # No Content-Type is read as JSON, as BentoML does (it parses the body as JSON then).
        media_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if media_type != b"application/json":
            shown = media_type.decode("latin-1")[:100]
            await _reject(send, 415, f"Content-Type {shown!r} is not supported: send the body as application/json")
            return
        length = headers.get(b"content-length")
        expected = int(length) if length is not None and length.isdigit() else None
        if expected is not None and expected > limit:
            await _drain(receive, expected <= DRAIN_FACTOR * limit, 0, DRAIN_FACTOR * limit)
            await self._too_large(send, scope["path"], limit)
            return
        chunks: list[bytes] = []
        more, first, size = True, None, 0
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.receive_timeout)
            except TimeoutError:
                # The rest of the body may still come and would be read as the next request: close the connection.
                await _reject(send, 400, self._stalled(size, expected), [(b"connection", b"close")])
                return
            if message["type"] != "http.request":  # the client went away: the app sees it
                first = message
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                await _drain(receive, more, size, DRAIN_FACTOR * limit)
                await self._too_large(send, scope["path"], limit)
                return
        pending = [first or {"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> dict[str, Any]:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    def _stalled(self, size: int, expected: int | None) -> str:
        if expected is not None:
            return f"request body ended before its Content-Length ({size:,} of {expected:,} bytes)"
        return f"request body stopped arriving after {size:,} bytes (nothing more for {self.receive_timeout:g} s)"

    @staticmethod
    async def _too_large(send: Any, path: str, limit: int) -> None:
        hint = "; send fewer requests per call" if path == "/predict_batch" else ""
        await _reject(send, 413, f"request body larger than {limit:,} bytes, the limit of {path}{hint}")


async def _drain(receive: Any, more: bool, read: int, cap: int) -> None:
    """Read and drop the rest of a refused body while it is within `cap` bytes (see DRAIN_FACTOR)."""
    while more and read <= cap:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        more = message.get("more_body", False)


class OpenApiMiddleware:
    """Serves BentoML's OpenAPI document (GET /docs.json) rewritten from our models by contract.openapi_document:
    `answers` maps each API path to the type its 200 carries, `errors` to the error statuses it can answer;
    `key_required` adds 401 and the security schemes."""

    def __init__(
        self,
        app: Any,
        answers: Mapping[str, Any],
        errors: Mapping[str, Collection[int]],
        key_required: bool,
        path: str = DOCS_PATH,
    ) -> None:
        self.app, self.answers, self.errors, self.key_required, self.path = app, answers, errors, key_required, path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not (_on(scope, (self.path,)) and scope["method"] in ("GET", "HEAD")):
            await self.app(scope, receive, send)
            return
        messages: list[dict[str, Any]] = []

        async def capture(message: dict[str, Any]) -> None:
            messages.append(message)

        await self.app({**scope, "method": "GET"}, receive, capture)
        start = messages[0]
        body = b"".join(m.get("body", b"") for m in messages[1:] if m["type"] == "http.response.body")
        if start["status"] == 200:
            document = openapi_document(json.loads(body), self.answers, self.errors, self.key_required)
            body = json.dumps(document).encode()
        kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-type", b"content-length")]
        start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": start["status"], "headers": [*start_headers, *kept]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
