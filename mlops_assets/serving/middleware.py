"""ASGI middleware of the prediction service: load shedding, the API key and a limit on the size of a request's
body, on the prediction endpoints only (health, metrics and docs stay open and are never shed)."""

from __future__ import annotations

import hmac
import json
from typing import Any

PREDICTION_PATHS = ("/predict", "/predict_batch")
# The largest body each prediction endpoint reads: one request is a few hundred bytes, a batch call carries many.
MAX_BODY_BYTES = {"/predict": 1_000_000, "/predict_batch": 10_000_000}
# A refused body up to this many times the limit is read (and dropped) before the 413, so that a client still sending
# it reads the answer instead of a broken connection; a larger one gets the 413 and the connection closes.
DRAIN_FACTOR = 10


async def _reject(send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    start = [(b"content-type", b"application/json"), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": json.dumps({"error": message}).encode()})


def _guarded(scope: dict[str, Any]) -> bool:
    return scope["type"] == "http" and scope["path"] in PREDICTION_PATHS


class LoadSheddingMiddleware:
    """Answers 429 with Retry-After once `max_in_flight` prediction requests are in progress in this worker, instead
    of queueing without bound; adds Retry-After to the 503 that adaptive batching returns when it cannot meet its
    latency bound. Accepted requests keep their latency; rejected ones cost almost nothing."""

    def __init__(self, app: Any, max_in_flight: int, retry_after: int) -> None:
        self.app, self.max_in_flight, self.in_flight = app, max_in_flight, 0
        self.retry_after = (b"retry-after", str(retry_after).encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not _guarded(scope):
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
    """Requires the API key on the prediction endpoints (X-API-Key or Authorization: Bearer), compared in constant
    time. Without a key in the environment, nothing is required."""

    def __init__(self, app: Any, key: str | None) -> None:
        self.app, self.key = app, key.encode() if key else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.key and _guarded(scope):
            sent = dict(scope["headers"])
            given = sent.get(b"x-api-key") or sent.get(b"authorization", b"").removeprefix(b"Bearer ")
            if not hmac.compare_digest(given, self.key):
                await _reject(send, 401, "missing or wrong API key: send it as X-API-Key or a Bearer token")
                return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Answers 413 to a prediction request whose body is larger than its endpoint's limit (`limits`, bytes), before
    the service parses it: by its Content-Length, or, sent in chunks without one, once the chunks read so far pass
    the limit (a body within it is passed on whole)."""

    def __init__(self, app: Any, limits: dict[str, int] | None = None) -> None:
        self.app, self.limits = app, dict(MAX_BODY_BYTES if limits is None else limits)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        limit = self.limits.get(scope["path"]) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit():
            if int(length) > limit:
                await _drain(receive, int(length) <= DRAIN_FACTOR * limit, 0, DRAIN_FACTOR * limit)
                await self._too_large(send, scope["path"], limit)
                return
            await self.app(scope, receive, send)  # the server reads exactly Content-Length bytes
            return
        chunks: list[bytes] = []
        more, first, size = True, None, 0
        while more:
            message = await receive()
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
