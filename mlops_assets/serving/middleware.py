"""ASGI middleware of the prediction service: load shedding and the API key, on the prediction endpoints only
(health, metrics and docs stay open and are never shed)."""

from __future__ import annotations

import hmac
import json
from typing import Any

PREDICTION_PATHS = ("/predict", "/predict_batch")


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
