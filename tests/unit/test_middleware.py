"""The service's ASGI middleware, driven directly: load shedding with Retry-After, and the API key."""

import asyncio
from typing import Any

from mlops_assets.serving.middleware import ApiKeyMiddleware, LoadSheddingMiddleware


class SlowApp:
    """An ASGI app that holds each request until released, then answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.release, self.status = asyncio.Event(), status

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.release.wait()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def _call(
    app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await app({"type": "http", "path": path, "headers": headers or []}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"])


def test_requests_beyond_the_limit_are_shed_with_retry_after_and_service_recovers() -> None:
    async def scenario() -> None:
        inner = SlowApp()
        app = LoadSheddingMiddleware(inner, max_in_flight=3, retry_after=2)
        held = [asyncio.create_task(_call(app, "/predict")) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert app.in_flight == 3
        status, headers = await _call(app, "/predict_batch")  # answered at once, not queued
        assert status == 429 and headers[b"retry-after"] == b"2"
        health = asyncio.create_task(_call(app, "/readyz"))  # never shed
        await asyncio.sleep(0.01)
        inner.release.set()
        assert [s for s, _ in await asyncio.gather(*held)] == [200, 200, 200]
        assert (await health)[0] == 200
        assert app.in_flight == 0 and (await _call(app, "/predict"))[0] == 200

    asyncio.run(scenario())


def test_a_503_from_adaptive_batching_gets_retry_after() -> None:
    async def scenario() -> None:
        inner = SlowApp(status=503)
        inner.release.set()
        status, headers = await _call(LoadSheddingMiddleware(inner, max_in_flight=3, retry_after=1), "/predict")
        assert status == 503 and headers[b"retry-after"] == b"1"

    asyncio.run(scenario())


def test_the_api_key_guards_prediction_paths_only() -> None:
    async def scenario() -> None:
        inner = SlowApp()
        inner.release.set()
        app = ApiKeyMiddleware(inner, key="k-123")
        assert (await _call(app, "/predict"))[0] == 401
        assert (await _call(app, "/predict", [(b"x-api-key", b"k-124")]))[0] == 401
        assert (await _call(app, "/predict", [(b"x-api-key", b"k-123")]))[0] == 200
        assert (await _call(app, "/predict_batch", [(b"authorization", b"Bearer k-123")]))[0] == 200
        assert (await _call(app, "/docs.json"))[0] == 200

    asyncio.run(scenario())
